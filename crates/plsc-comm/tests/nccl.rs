//! The NCCL backend (feature `nccl`).
//!
//! Without CUDA or NCCL (the CI machine) the entry points must fail with named errors, never
//! panic. With a GPU (`scripts/gpu-check.sh` sets `PLSC_NCCL_REQUIRE_GPU=1`, which turns an
//! absent library or device into a failure) the collective suite runs at world size 1 (NCCL
//! will not put two ranks of one communicator on one GPU) in both reduction modes, on host
//! slices, cudarc device buffers and burn-cuda tensors.

#![cfg(feature = "nccl")]

use burn::backend::Cuda;
use burn::tensor::{DType as BurnDType, Int, Tensor, TensorData};
use plsc_comm::env::RankEnv;
use plsc_comm::nccl::{NcclComm, NcclOptions, Reduction, UNIQUE_ID_BYTES, library};
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommError, CommExt, Communicator, ReduceOp};

fn gpu_required() -> bool {
    std::env::var_os("PLSC_NCCL_REQUIRE_GPU").is_some_and(|v| v != "0")
}

/// A world-1 communicator on GPU 0; `None` (after checking the error is the named one) where
/// this machine has no CUDA, NCCL or GPU and none is required.
fn world1(options: NcclOptions) -> Option<NcclComm> {
    let id = match NcclComm::unique_id() {
        Ok(id) => id,
        Err(CommError::LibraryMissing { .. }) if !gpu_required() => return None,
        Err(e) => panic!("NCCL unique id: {e}"),
    };
    assert_eq!(id.len(), UNIQUE_ID_BYTES);
    match NcclComm::with_options(0, 1, &id, 0, options) {
        Ok(c) => Some(c),
        Err(CommError::BadDevice { count: 0, .. }) if !gpu_required() => None,
        Err(e) => panic!("NCCL communicator: {e}"),
    }
}

#[test]
fn arguments_are_checked_before_any_library_is_touched() {
    assert_eq!(
        NcclComm::new(0, 1, &[0u8; 12], 0).unwrap_err(),
        CommError::BadUniqueId {
            rank: 0,
            len: 12,
            expected: UNIQUE_ID_BYTES
        }
    );
    assert!(matches!(
        NcclComm::new(2, 2, &[0u8; UNIQUE_ID_BYTES], 0),
        Err(CommError::BadRank {
            bad: 2,
            world: 2,
            ..
        })
    ));
}

#[test]
fn without_cuda_or_nccl_the_error_is_named_not_a_panic() {
    let present = library::cuda_driver_present() && library::nccl_present();
    if present {
        // The positive path is the rest of this file (run by scripts/gpu-check.sh).
        return;
    }
    assert!(
        !gpu_required(),
        "PLSC_NCCL_REQUIRE_GPU is set but CUDA/NCCL is missing"
    );
    // A launched rank fails before it tries to meet the others (no master is listening).
    let vars = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "9"),
    ];
    let env = RankEnv::from_vars(|k| {
        vars.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap()
    .unwrap();
    for err in [
        NcclComm::unique_id().unwrap_err(),
        NcclComm::new(1, 2, &[7u8; UNIQUE_ID_BYTES], 0).unwrap_err(),
        NcclComm::from_env(&env, NcclOptions::default()).unwrap_err(),
    ] {
        match &err {
            CommError::LibraryMissing { searched, hint, .. } => {
                assert!(!searched.is_empty());
                assert!(!hint.is_empty());
            }
            other => panic!("expected LibraryMissing, got {other:?}"),
        }
        assert!(err.to_string().contains("could not be loaded"), "{err}");
        println!("{err}");
    }
}

#[test]
fn collective_suite_world_1_rank_order() {
    let Some(comm) = world1(NcclOptions::default()) else {
        return;
    };
    let checked = plsc_comm::testing::collective_suite(&comm).unwrap();
    assert!(checked > 0);
    println!(
        "NCCL {:?}: rank-order suite checked {checked} results",
        comm.nccl_version()
    );
}

#[test]
fn collective_suite_world_1_nccl_reduction_without_validation() {
    let Some(comm) = world1(NcclOptions {
        validate: false,
        reduction: Reduction::Nccl,
        timeout: Some(std::time::Duration::from_secs(60)),
    }) else {
        return;
    };
    let checked = plsc_comm::testing::collective_suite(&comm).unwrap();
    assert!(checked > 0);
}

#[test]
fn bad_calls_are_named_errors_and_leave_the_communicator_usable() {
    let Some(comm) = world1(NcclOptions::default()) else {
        return;
    };
    let mut recv = vec![0f32; 3];
    assert!(matches!(
        comm.all_gather_into(&[1f32, 2.0], &mut recv),
        Err(CommError::BadLength { .. })
    ));
    assert!(matches!(
        comm.broadcast(&mut [1f64, 2.0], 1),
        Err(CommError::BadRank {
            bad: 1,
            world: 1,
            ..
        })
    ));
    let mut out = vec![0i64; 2];
    assert!(matches!(
        comm.reduce_scatter(&[1i64, 2, 3], &mut out, &[2]),
        Err(CommError::BadLength { .. })
    ));
    let mut v = vec![1.5f32, -2.0];
    comm.all_reduce(&mut v, ReduceOp::Sum).unwrap();
    assert_eq!(v, [1.5, -2.0]);
    comm.barrier().unwrap();
}

#[test]
fn device_buffers_need_no_host_copy() {
    let Some(comm) = world1(NcclOptions::default()) else {
        return;
    };
    let stream = comm.stream().clone();
    let host: Vec<f32> = (0..1000).map(|i| i as f32 * 0.25 - 7.0).collect();
    let send = stream.clone_htod(&host).unwrap();
    let mut recv = stream.alloc_zeros::<f32>(host.len()).unwrap();
    comm.all_reduce_device(&send, &mut recv, ReduceOp::Max)
        .unwrap();
    assert_eq!(stream.clone_dtoh(&recv).unwrap(), host);

    let mut gathered = stream.alloc_zeros::<f32>(host.len()).unwrap();
    comm.all_gather_device(&send, &mut gathered).unwrap();
    assert_eq!(stream.clone_dtoh(&gathered).unwrap(), host);

    let mut scattered = stream.alloc_zeros::<f32>(host.len()).unwrap();
    comm.reduce_scatter_device(&send, &mut scattered, ReduceOp::Sum)
        .unwrap();
    assert_eq!(stream.clone_dtoh(&scattered).unwrap(), host);

    let ints: Vec<i64> = (0..37).map(|i| i * i - 100).collect();
    let mut d = stream.clone_htod(&ints).unwrap();
    comm.broadcast_device(&mut d, 0).unwrap();
    comm.all_reduce_device_in_place(&mut d, ReduceOp::Sum)
        .unwrap();
    assert_eq!(stream.clone_dtoh(&d).unwrap(), ints);

    let mut short = stream.alloc_zeros::<f32>(3).unwrap();
    assert!(matches!(
        comm.all_gather_device(&send, &mut short),
        Err(CommError::BadLength { .. })
    ));
}

fn floats<const D: usize>(t: Tensor<Cuda, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data().convert::<f32>();
    (
        data.shape.as_slice().to_vec(),
        data.into_vec::<f32>().unwrap(),
    )
}

#[test]
fn burn_cuda_tensors_at_world_1_come_back_unchanged() {
    for reduction in [Reduction::RankOrder, Reduction::Nccl] {
        let Some(comm) = world1(NcclOptions {
            reduction,
            ..NcclOptions::default()
        }) else {
            return;
        };
        let device = Default::default();
        let values: Vec<f32> = (0..24).map(|i| i as f32 * 1.25 - 9.0).collect();
        let x = Tensor::<Cuda, 2>::from_data(TensorData::new(values.clone(), [4, 6]), &device);
        let want = (vec![4, 6], values.clone());

        assert_eq!(floats(comm.all_gather_rows(x.clone()).unwrap()), want);
        let (t, counts) = comm.all_gather_rows_varcount(x.clone()).unwrap();
        assert_eq!((floats(t), counts), (want.clone(), vec![4]));
        for op in [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min] {
            assert_eq!(floats(comm.all_reduce_tensor(x.clone(), op).unwrap()), want);
        }
        let fused = comm
            .all_reduce_sum_fused_tensors(vec![x.clone(), x.clone() * 2.0])
            .unwrap();
        assert_eq!(floats(fused[0].clone()), want);
        assert_eq!(
            floats(fused[1].clone()).1,
            values.iter().map(|v| v * 2.0).collect::<Vec<_>>()
        );
        assert_eq!(
            floats(comm.reduce_scatter_rows(x.clone(), &[4]).unwrap()),
            want
        );
        assert_eq!(floats(comm.broadcast_tensor(x.clone(), 0).unwrap()), want);

        // A strided view (transpose) goes through a contiguous copy.
        let xt = x.clone().transpose();
        let want_t = floats(xt.clone());
        assert_eq!(
            floats(comm.all_reduce_tensor(xt, ReduceOp::Sum).unwrap()),
            want_t
        );

        // f16 travels as f32 and comes back as f16.
        let h = x.clone().cast(BurnDType::F16);
        let back = comm.all_reduce_tensor(h.clone(), ReduceOp::Sum).unwrap();
        assert_eq!(back.dtype(), BurnDType::F16);
        assert_eq!(floats(back), floats(h));

        // Labels, and an empty rank's rows.
        let labels = Tensor::<Cuda, 1, Int>::from_data(
            TensorData::new(vec![3i64, 1, 4, 1, 5], [5]),
            &device,
        );
        let (all, counts) = comm.all_gather_int(labels).unwrap();
        assert_eq!(counts, vec![5]);
        assert_eq!(
            all.into_data().convert::<i64>().into_vec::<i64>().unwrap(),
            vec![3, 1, 4, 1, 5]
        );
        let empty =
            Tensor::<Cuda, 2>::from_data(TensorData::new(Vec::<f32>::new(), [0, 6]), &device);
        let (t, counts) = comm.all_gather_rows_varcount(empty).unwrap();
        assert_eq!((t.dims(), counts), ([0, 6], vec![0]));
        let empty = Tensor::<Cuda, 1>::from_data(TensorData::new(Vec::<f32>::new(), [0]), &device);
        let summed = comm.all_reduce_tensor(empty, ReduceOp::Sum).unwrap();
        assert_eq!(summed.dims(), [0]);
    }
}
