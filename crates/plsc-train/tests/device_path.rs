//! The generic device path of the head (`head_placement = "device"`: `plsc_core::DeviceHead`,
//! burn tensors and device collectives, what a GPU runs) on `Flex` against the CPU kernel
//! (`ShardedHead`, host rows), through the whole loop: 10,000 classes, identical explicit global
//! batches of 120 (fed directly, so that the rank count cannot change the order), the linear
//! test backbone without batch statistics, 1-4 rank threads, r = 1 and r = 0.1.
//!
//! - 20 steps give the same losses within 1e-4 (relative), and the heads sample the same
//!   classes at every step;
//! - a checkpoint written by one path resumes in the other;
//! - a communicator that puts one element off in one collective the head uses (features,
//!   labels, max, fused sums, reduce-scatter) on rank 0 makes the comparison fail.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use common::{B, DIM, GlobalBatch, LinearNet, PIXELS, rank_slices, small_entry, synthetic};
use plsc_comm::tensor::TensorComm;
use plsc_comm::{
    CommError, Communicator, HostSlice, HostSliceMut, HostVec, ReduceOp, ThreadComm, run_ranks,
};
use plsc_core::{DeviceHead, DeviceUpdate, HeadConfig, ShardedHead, WeightUpdate};
use plsc_train::device::PlacementChoice;
use plsc_train::trainer::{Outputs, RunPlan, Start, train_rank};
use plsc_train::{Entry, TrainOutcome};

const CLASSES: usize = 10_000;
const BATCH: usize = 120;
const STEPS: u64 = 20;
const TOLERANCE: f64 = 1e-4;

fn entry(ranks: usize, ratio: f64, placement: PlacementChoice) -> Entry {
    small_entry(ranks, BATCH, CLASSES, STEPS)
        .with_sample_ratio(ratio)
        .with_head_placement(placement)
        .with_log_period(100)
        .with_checkpoint_period(10)
        .with_keep_last(0)
}

fn batches() -> Vec<GlobalBatch> {
    // 300 prototype classes among the 10,000: every batch repeats some labels, and with
    // r = 0.1 sampling draws classes beyond the batch's positives.
    synthetic(STEPS as usize, BATCH, PIXELS, 300, 0.5, 21)
        .into_iter()
        .map(|mut g| {
            g.labels
                .iter_mut()
                .for_each(|l| *l = *l * 33 % CLASSES as i64);
            g
        })
        .collect()
}

fn spec() -> plsc_ckpt::ModelSpec {
    serde_json::from_value(serde_json::json!({
        "architecture": "linear",
        "embedding_size": DIM,
        "input_size": common::SIDE,
        "in_channels": 1,
        "mean": [0.5],
        "std": [0.5],
    }))
    .unwrap()
}

/// Which collective [`Perturb`] puts one element off (on rank 0, every call of that kind).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Target {
    None,
    GatherFeatures,
    GatherLabels,
    Max,
    FusedSum,
    ReduceScatter,
}

/// The thread group's communicator with one collective made wrong on rank 0.
struct Perturb {
    inner: ThreadComm,
    target: Target,
}

impl Perturb {
    fn off(&self, t: Target) -> bool {
        self.target == t && self.inner.rank() == 0
    }
}

fn nudge(buf: HostSliceMut<'_>) {
    match buf {
        HostSliceMut::F32(v) if !v.is_empty() => v[0] += 0.5,
        HostSliceMut::F64(v) if !v.is_empty() => v[0] += 0.5,
        HostSliceMut::I64(v) if !v.is_empty() => v[0] = (v[0] + 1) % CLASSES as i64,
        _ => {}
    }
}

impl Communicator for Perturb {
    fn rank(&self) -> usize {
        self.inner.rank()
    }
    fn world_size(&self) -> usize {
        self.inner.world_size()
    }
    fn all_reduce_raw(&self, mut buf: HostSliceMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        let buf2 = reborrow(&mut buf);
        self.inner.all_reduce_raw(buf2, op)?;
        if op == ReduceOp::Max && self.off(Target::Max) {
            nudge(buf);
        }
        Ok(())
    }
    fn all_reduce_sum_fused_raw(&self, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
        self.inner.all_reduce_sum_fused_raw(bufs)?;
        if self.off(Target::FusedSum)
            && let Some(b) = bufs.first_mut()
        {
            nudge(reborrow(b));
        }
        Ok(())
    }
    fn all_gather_raw(&self, send: HostSlice<'_>, recv: HostSliceMut<'_>) -> Result<(), CommError> {
        self.inner.all_gather_raw(send, recv)
    }
    fn all_gather_varcount_raw(
        &self,
        send: HostSlice<'_>,
        recv: &mut HostVec,
    ) -> Result<Vec<usize>, CommError> {
        let counts = self.inner.all_gather_varcount_raw(send, recv)?;
        match recv {
            HostVec::F32(v) if self.off(Target::GatherFeatures) && v.len() == BATCH * DIM => {
                nudge(HostSliceMut::F32(v))
            }
            HostVec::I64(v) if self.off(Target::GatherLabels) && v.len() == BATCH => {
                nudge(HostSliceMut::I64(v))
            }
            _ => {}
        }
        Ok(counts)
    }
    fn reduce_scatter_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError> {
        self.inner
            .reduce_scatter_raw(send, reborrow(&mut recv), counts)?;
        if self.off(Target::ReduceScatter) {
            nudge(recv);
        }
        Ok(())
    }
    fn broadcast_raw(&self, buf: HostSliceMut<'_>, root: usize) -> Result<(), CommError> {
        self.inner.broadcast_raw(buf, root)
    }
    fn barrier(&self) -> Result<(), CommError> {
        self.inner.barrier()
    }
}

impl<BB: burn::tensor::backend::Backend> TensorComm<BB> for Perturb {
    fn communicator(&self) -> &dyn Communicator {
        self
    }
}

fn reborrow<'a>(b: &'a mut HostSliceMut<'_>) -> HostSliceMut<'a> {
    match b {
        HostSliceMut::F32(v) => HostSliceMut::F32(v),
        HostSliceMut::F64(v) => HostSliceMut::F64(v),
        HostSliceMut::I64(v) => HostSliceMut::I64(v),
        HostSliceMut::U8(v) => HostSliceMut::U8(v),
    }
}

/// Steps `from..to` of `e` on rank threads over `comm`s that perturb `target`, from `start`,
/// saving checkpoints under `root`. Rank 0's outcome.
fn run(
    e: &Entry,
    target: Target,
    from: u64,
    start: Start,
    root: &Path,
) -> TrainOutcome<LinearNet<B>> {
    let b = batches();
    let device = Default::default();
    let plan = RunPlan {
        steps_per_epoch: STEPS,
        total_steps: STEPS,
        start_step: from,
        data_steps_per_epoch: STEPS,
    };
    let slices = Mutex::new(
        (0..e.ranks)
            .map(|r| Some(rank_slices(&b[from as usize..], r, e.ranks)))
            .collect::<Vec<_>>(),
    );
    let mut results = run_ranks(e.ranks, |comm| {
        let rank = comm.rank();
        let comm = Perturb {
            inner: comm,
            target,
        };
        let model = LinearNet::<B>::new(PIXELS, DIM, 7, &device);
        let batches = slices.lock().unwrap()[rank].take().unwrap();
        train_rank::<B, _, _>(
            e,
            &comm,
            model,
            &device,
            plan,
            batches,
            Outputs {
                checkpoint: Some((root.to_path_buf(), spec())),
                start: start.clone(),
                ..Outputs::default()
            },
        )
    });
    results.remove(0).unwrap()
}

/// The largest relative difference of two loss curves.
fn max_rel_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            if x.is_finite() && y.is_finite() {
                (x - y).abs() / y.abs().max(1e-12)
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

#[test]
fn device_path_on_flex_matches_the_cpu_kernel() {
    for ratio in [1.0, 0.1] {
        for ranks in 1..=4 {
            let dir = tempfile::tempdir().unwrap();
            let host = run(
                &entry(ranks, ratio, PlacementChoice::Host),
                Target::None,
                0,
                Start::Fresh,
                &dir.path().join("host"),
            );
            let dev = run(
                &entry(ranks, ratio, PlacementChoice::Device),
                Target::None,
                0,
                Start::Fresh,
                &dir.path().join("device"),
            );
            let diff = max_rel_diff(&dev.losses, &host.losses);
            eprintln!("ranks {ranks}, r = {ratio}: largest relative loss difference {diff:.2e}");
            assert!(
                diff < TOLERANCE,
                "ranks {ranks}, r = {ratio}: losses differ by {diff:e} (relative)\n host {:?}\n device {:?}",
                host.losses,
                dev.losses
            );
            // The training moved the loss (the comparison is not of two constant curves).
            assert!(host.losses[STEPS as usize - 1] < 0.9 * host.losses[0]);
        }
    }
}

/// A checkpoint written by one path resumes in the other: on the same 2 ranks with r = 0.1
/// (the same sampled classes), and resharded to 3 ranks with r = 1 (where the rank count does
/// not change the math), the resumed losses follow the uninterrupted run.
#[test]
fn a_checkpoint_of_one_path_resumes_in_the_other() {
    let dir = tempfile::tempdir().unwrap();
    for (ratio, resume_ranks) in [(0.1, 2), (1.0, 3)] {
        for (first, second) in [
            (PlacementChoice::Host, PlacementChoice::Device),
            (PlacementChoice::Device, PlacementChoice::Host),
        ] {
            let case = format!("r{ratio}-{first:?}-then-{second:?}");
            let root = dir.path().join(&case);
            let whole = run(
                &entry(2, ratio, first),
                Target::None,
                0,
                Start::Fresh,
                &root,
            );
            let mid =
                plsc_ckpt::Checkpoint::open(&root.join(plsc_ckpt::step_dir_name(10))).unwrap();
            let resumed = run(
                &entry(resume_ranks, ratio, second),
                Target::None,
                10,
                Start::Resume(Arc::new(mid)),
                &dir.path().join(format!("{case}-resumed")),
            );
            let diff = max_rel_diff(&resumed.losses, &whole.losses[10..]);
            assert!(
                diff < TOLERANCE,
                "{case} on {resume_ranks} ranks: resumed losses differ by {diff:e}"
            );
        }
    }
}

#[test]
fn one_element_off_in_any_head_collective_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let host = run(
        &entry(2, 0.1, PlacementChoice::Host),
        Target::None,
        0,
        Start::Fresh,
        &dir.path().join("host"),
    );
    for target in [
        Target::GatherFeatures,
        Target::GatherLabels,
        Target::Max,
        Target::FusedSum,
        Target::ReduceScatter,
    ] {
        let dev = run(
            &entry(2, 0.1, PlacementChoice::Device),
            target,
            0,
            Start::Fresh,
            &dir.path().join(format!("{target:?}")),
        );
        let diff = max_rel_diff(&dev.losses, &host.losses);
        assert!(
            diff >= TOLERANCE,
            "{target:?} put off by one element went unnoticed (difference {diff:e})"
        );
    }
}

/// The two heads draw the same classes at every step (Partial FC's `(seed, step, rank)` rule),
/// on 3 ranks with r = 0.1, and their losses agree step by step.
#[test]
fn both_heads_sample_the_same_classes() {
    let b = batches();
    let ranks = 3;
    let config = HeadConfig::new(CLASSES, DIM)
        .with_sample_ratio(0.1)
        .with_seed(5);
    let out = run_ranks(ranks, |comm| {
        let rank = comm.rank();
        let device = Default::default();
        let mut host = ShardedHead::<f32>::new(config.clone(), rank, ranks).unwrap();
        let mut dev = DeviceHead::<Flex>::new(config.clone(), rank, ranks, &device).unwrap();
        let rows = BATCH / ranks;
        for (step, g) in b.iter().enumerate() {
            let labels = &g.labels[rank * rows..(rank + 1) * rows];
            // Features: the first DIM pixels of each image.
            let x: Vec<f32> = (rank * rows..(rank + 1) * rows)
                .flat_map(|i| g.images[i * PIXELS..i * PIXELS + DIM].to_vec())
                .collect();
            let h = host
                .step(
                    &comm,
                    &x,
                    labels,
                    step as u64,
                    WeightUpdate::Sgd { lr: 0.1 },
                )
                .unwrap();
            let t = Tensor::<Flex, 2>::from_data(TensorData::new(x, [rows, DIM]), &device);
            let d = dev
                .step(&comm, t, labels, step as u64, DeviceUpdate::Sgd { lr: 0.1 })
                .unwrap();
            assert_eq!(
                host.last_sampled(),
                Some(&d.sampled),
                "step {step}, rank {rank}"
            );
            assert!(
                ((h.loss - d.loss) / h.loss).abs() < TOLERANCE,
                "step {step}"
            );
        }
        // And the updated rows agree.
        let (hw, dw) = (host.weight().to_vec(), dev.weight_host().to_vec());
        Ok::<f32, plsc_core::HeadError>(
            hw.iter()
                .zip(&dw)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max),
        )
    });
    for r in out {
        let r = r.unwrap();
        assert!(r < 1e-4, "weights differ by {r}");
    }
}

/// Mixed precision (the head's products in f16, the gradient held until the step is known to
/// be finite, dynamic loss scaling starting high enough to overflow and skip steps): the
/// device path follows the CPU kernel, skipped steps included.
#[test]
fn mixed_precision_device_path_follows_the_cpu_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = |p| {
        entry(2, 0.1, p)
            .with_mixed_precision(true)
            .with_loss_scale(plsc_train::LossScaleConfig {
                init_loss_scaling: 1e38,
                incr_every_n_steps: 4,
                ..plsc_train::LossScaleConfig::default()
            })
    };
    let host = run(
        &mixed(PlacementChoice::Host),
        Target::None,
        0,
        Start::Fresh,
        &dir.path().join("host"),
    );
    let dev = run(
        &mixed(PlacementChoice::Device),
        Target::None,
        0,
        Start::Fresh,
        &dir.path().join("device"),
    );
    assert!(host.skipped_steps > 0, "the scale never overflowed");
    assert_eq!(dev.skipped_steps, host.skipped_steps);
    assert_eq!(dev.loss_scale, host.loss_scale);
    let diff = max_rel_diff(&dev.losses, &host.losses);
    assert!(
        diff < TOLERANCE,
        "mixed precision: losses differ by {diff:e}"
    );
}
