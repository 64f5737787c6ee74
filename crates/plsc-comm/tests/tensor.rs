//! The burn tensor adapter on the `Flex` CPU backend, against serial references.

mod common;

use burn::backend::Flex;
use burn::tensor::{DType as BurnDType, Int, Tensor, TensorData};
use common::guarded;
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommError, Communicator, ReduceOp, run_ranks};

type B = Flex;

/// A `[rows, cols]` tensor whose entry (i, j) is `rank * 100 + i * cols + j + 0.5`.
fn rows_of(rank: usize, rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols)
        .map(|k| rank as f32 * 100.0 + k as f32 + 0.5)
        .collect()
}

fn tensor2(values: Vec<f32>, rows: usize, cols: usize) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values, [rows, cols]), &Default::default())
}

fn values<const D: usize>(t: Tensor<B, D>) -> (Vec<usize>, Vec<f32>) {
    let data = t.into_data();
    (
        data.shape.as_slice().to_vec(),
        data.into_vec::<f32>().unwrap(),
    )
}

#[test]
fn all_gather_rows_concatenates_in_rank_order() {
    let results = guarded(|| {
        run_ranks(3, |comm| {
            let x = tensor2(rows_of(comm.rank(), 2, 4), 2, 4);
            Ok::<_, CommError>(values(TensorComm::<B>::all_gather_rows(&comm, x)?))
        })
    });
    let want: Vec<f32> = (0..3).flat_map(|r| rows_of(r, 2, 4)).collect();
    for res in results {
        assert_eq!(res.unwrap(), (vec![6, 4], want.clone()));
    }
}

#[test]
fn all_gather_rows_varcount_takes_uneven_row_counts() {
    let results = guarded(|| {
        run_ranks(4, |comm| {
            let rows = [2, 0, 3, 1][comm.rank()];
            let x = tensor2(rows_of(comm.rank(), rows, 3), rows, 3);
            let (t, counts) = TensorComm::<B>::all_gather_rows_varcount(&comm, x)?;
            Ok::<_, CommError>((values(t), counts))
        })
    });
    let want: Vec<f32> = [2, 0, 3, 1]
        .iter()
        .enumerate()
        .flat_map(|(r, &n)| rows_of(r, n, 3))
        .collect();
    for res in results {
        let ((shape, v), counts) = res.unwrap();
        assert_eq!(shape, vec![6, 3]);
        assert_eq!(v, want);
        assert_eq!(counts, vec![2, 0, 3, 1]);
    }
}

#[test]
fn all_gather_rows_with_different_shapes_is_bad_length_on_every_rank() {
    let results = guarded(|| {
        run_ranks(2, |comm| {
            let cols = if comm.rank() == 0 { 4 } else { 2 };
            // Same number of elements, different shape: must still be refused.
            let rows = 8 / cols;
            let x = tensor2(rows_of(comm.rank(), rows, cols), rows, cols);
            Ok::<_, CommError>(TensorComm::<B>::all_gather_rows(&comm, x).map(|_| ()))
        })
    });
    for res in results {
        assert!(matches!(
            res.unwrap(),
            Err(CommError::BadLength {
                op: "all_gather_rows",
                ..
            })
        ));
    }
}

#[test]
fn all_reduce_fused_broadcast_and_reduce_scatter_match_references() {
    let n = 3;
    let results = guarded(move || {
        run_ranks(n, |comm| {
            let r = comm.rank();
            let device = Default::default();
            let x =
                Tensor::<B, 3>::from_data(TensorData::new(rows_of(r, 2, 6), [2, 3, 2]), &device);
            let sum = values(TensorComm::<B>::all_reduce_tensor(
                &comm,
                x.clone(),
                ReduceOp::Sum,
            )?);
            let max = values(TensorComm::<B>::all_reduce_tensor(&comm, x, ReduceOp::Max)?);

            let a = Tensor::<B, 1>::from_data(TensorData::new(vec![r as f32, 1.0], [2]), &device);
            let b =
                Tensor::<B, 1>::from_data(TensorData::new(vec![2.0 * r as f32; 3], [3]), &device);
            let fused: Vec<_> = TensorComm::<B>::all_reduce_sum_fused_tensors(&comm, vec![a, b])?
                .into_iter()
                .map(values)
                .collect();

            let y = tensor2(rows_of(r, 2, 2), 2, 2);
            let bcast = values(TensorComm::<B>::broadcast_tensor(&comm, y, 1)?);

            // 6 rows split 1, 2, 3 over the ranks.
            let z = tensor2(rows_of(r, 6, 2), 6, 2);
            let scattered = values(TensorComm::<B>::reduce_scatter_rows(&comm, z, &[1, 2, 3])?);
            Ok::<_, CommError>((sum, max, fused, bcast, scattered))
        })
    });
    let sum_ref = |len: usize| -> Vec<f32> {
        (0..len)
            .map(|k| {
                (0..n)
                    .map(|r| rows_of(r, 1, len)[k])
                    .fold(0.0, |a, b| a + b)
            })
            .collect()
    };
    for (r, res) in results.into_iter().enumerate() {
        let (sum, max, fused, bcast, scattered) = res.unwrap();
        assert_eq!(sum, (vec![2, 3, 2], sum_ref(12)));
        assert_eq!(max, (vec![2, 3, 2], rows_of(n - 1, 2, 6)));
        assert_eq!(
            fused,
            vec![(vec![2], vec![3.0, 3.0]), (vec![3], vec![6.0; 3])]
        );
        assert_eq!(bcast, (vec![2, 2], rows_of(1, 2, 2)));
        let (lo, rows) = [(0, 1), (1, 2), (3, 3)][r];
        assert_eq!(
            scattered,
            (vec![rows, 2], sum_ref(12)[lo * 2..(lo + rows) * 2].to_vec())
        );
    }
}

#[test]
fn int_labels_and_element_types_survive() {
    let results = guarded(|| {
        run_ranks(2, |comm| {
            let device = Default::default();
            let labels: Vec<i64> = (0..comm.rank() as i64 + 2)
                .map(|i| i * 10 + comm.rank() as i64)
                .collect();
            let n = labels.len();
            let x = Tensor::<B, 1, Int>::from_data(TensorData::new(labels, [n]), &device);
            let dtype_in = x.dtype();
            let (all, counts) = TensorComm::<B>::all_gather_int(&comm, x)?;
            assert_eq!(all.dtype(), dtype_in);
            let all = all.into_data().convert::<i64>().into_vec::<i64>().unwrap();

            let y = Tensor::<B, 1>::from_data(
                TensorData::new(vec![0.25f64, comm.rank() as f64], [2]),
                (&device, BurnDType::F64),
            );
            let y = TensorComm::<B>::all_reduce_tensor(&comm, y, ReduceOp::Sum)?;
            assert_eq!(y.dtype(), BurnDType::F64);
            Ok::<_, CommError>((all, counts, y.into_data().into_vec::<f64>().unwrap()))
        })
    });
    for res in results {
        let (all, counts, y) = res.unwrap();
        assert_eq!(all, vec![0, 10, 1, 11, 21]);
        assert_eq!(counts, vec![2, 3]);
        assert_eq!(y, vec![0.5, 1.0]);
    }
}

#[test]
fn dyn_communicator_uses_the_host_path() {
    let results = guarded(|| {
        run_ranks(2, |comm| {
            let dynamic: &dyn Communicator = &comm;
            let x = tensor2(rows_of(dynamic.rank(), 1, 2), 1, 2);
            Ok::<_, CommError>(values(TensorComm::<B>::all_gather_rows(dynamic, x)?))
        })
    });
    for res in results {
        assert_eq!(
            res.unwrap(),
            (vec![2, 2], [rows_of(0, 1, 2), rows_of(1, 1, 2)].concat())
        );
    }
}
