//! Checkpoints from the loop: resuming continues exactly (weights, momentum, loss scale), and
//! pretrained weights load onto another rank count.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{B, DIM, GlobalBatch, LinearNet, PIXELS, SIDE, rank_slices, small_entry, synthetic};
use plsc_ckpt::Checkpoint;
use plsc_train::trainer::{Outputs, RunPlan, Start, train};
use plsc_train::{Entry, LossScaleConfig, TrainOutcome};

const CLASSES: usize = 10;

fn entry(ranks: usize, global_batch: usize, steps: u64, mixed: bool) -> Entry {
    small_entry(ranks, global_batch, CLASSES, steps)
        .with_log_period(100)
        .with_checkpoint_period(4)
        .with_keep_last(0)
        .with_mixed_precision(mixed)
        .with_loss_scale(LossScaleConfig {
            init_loss_scaling: 1024.0,
            incr_every_n_steps: 3,
            ..LossScaleConfig::default()
        })
}

fn spec() -> plsc_ckpt::ModelSpec {
    plsc_ckpt::ModelSpec {
        architecture: "linear".into(),
        embedding_size: DIM,
        input_size: SIDE,
        in_channels: 1,
        mean: vec![0.5],
        std: vec![0.5],
        resize: Default::default(),
    }
}

/// Runs steps `from..e.train_steps` on `batches[from..]`, saving under `root`.
fn run(
    e: &Entry,
    batches: &[GlobalBatch],
    from: u64,
    start: Start,
    root: &Path,
) -> TrainOutcome<LinearNet<B>> {
    let device = Default::default();
    let base = LinearNet::<B>::new(PIXELS, DIM, 7, &device);
    let plan = RunPlan {
        steps_per_epoch: batches.len() as u64,
        total_steps: e.train_steps.unwrap(),
        start_step: from,
        data_steps_per_epoch: batches.len() as u64,
    };
    let outputs = Outputs {
        checkpoint: Some((root.to_path_buf(), spec())),
        start,
        ..Outputs::default()
    };
    let rest = &batches[from as usize..];
    train::<B, _, _>(
        e,
        &base,
        &device,
        plan,
        |rank| Ok(rank_slices(rest, rank, e.ranks)),
        outputs,
    )
    .unwrap()
}

fn resume_matches_uninterrupted(mixed: bool) {
    let dir = tempfile::tempdir().unwrap();
    let batches = synthetic(8, 8, PIXELS, CLASSES, 0.5, 3);
    let e = entry(2, 8, 8, mixed);
    let whole = run(&e, &batches, 0, Start::Fresh, &dir.path().join("a"));
    let mid = Arc::new(Checkpoint::open(&dir.path().join("a").join("step-000000004")).unwrap());
    assert_eq!(mid.step(), 4);
    let resumed = run(
        &e,
        &batches,
        4,
        Start::Resume(Arc::clone(&mid)),
        &dir.path().join("b"),
    );
    assert_eq!(resumed.losses, whole.losses[4..], "losses of steps 4..8");
    assert_eq!(resumed.loss_scale, whole.loss_scale);
    for (r, (a, b)) in whole.ranks.iter().zip(&resumed.ranks).enumerate() {
        assert_eq!(a.model.values(), b.model.values(), "rank {r} backbone");
        assert_eq!(a.head_weight, b.head_weight, "rank {r} head rows");
        assert_eq!(a.head_velocity, b.head_velocity, "rank {r} head momentum");
    }
    // Without the momentum (weights only) the continuation differs: the test can fail.
    let cold = run(
        &e,
        &batches,
        4,
        Start::Pretrained {
            checkpoint: mid,
            with_head: true,
        },
        &dir.path().join("c"),
    );
    assert_ne!(cold.ranks[0].model.values(), whole.ranks[0].model.values());
}

/// A run resumed from its step-4 checkpoint ends bit for bit where the uninterrupted run does:
/// backbone weights, head rows and momentum on every rank, and the losses of steps 4..8 (the
/// same f32 operations in the same order; tolerance 0).
#[test]
fn resuming_continues_exactly() {
    resume_matches_uninterrupted(false);
}

/// The same under mixed precision: the loss scale and its growth counter come back too.
#[test]
fn resuming_continues_exactly_under_mixed_precision() {
    resume_matches_uninterrupted(true);
}

/// Weights written by 2 ranks fine-tune on 3: the first loss of the 3-rank run from the
/// step-4 checkpoint (backbone and head rows) equals the loss the 2-rank run computes at
/// step 4 on the same global batch. Only the order of the f32 sums differs: 1e-5 relative.
#[test]
fn pretrained_weights_load_onto_another_rank_count() {
    let dir = tempfile::tempdir().unwrap();
    let batches = synthetic(6, 6, PIXELS, CLASSES, 0.5, 5);
    let two = run(
        &entry(2, 6, 6, false),
        &batches,
        0,
        Start::Fresh,
        dir.path(),
    );
    let ckpt = Arc::new(Checkpoint::open(&dir.path().join("step-000000004")).unwrap());
    let three = run(
        &entry(3, 6, 5, false),
        &batches,
        4,
        Start::Pretrained {
            checkpoint: Arc::clone(&ckpt),
            with_head: true,
        },
        &dir.path().join("three"),
    );
    let (a, b) = (two.losses[4], three.losses[0]);
    assert!((a - b).abs() <= 1e-5 * a.abs(), "2 ranks {a}, 3 ranks {b}");
    // A fresh head instead of the checkpoint's rows gives another loss.
    let fresh_head = run(
        &entry(3, 6, 5, false),
        &batches,
        4,
        Start::Pretrained {
            checkpoint: ckpt,
            with_head: false,
        },
        &dir.path().join("fresh"),
    );
    assert!((fresh_head.losses[0] - a).abs() > 1e-3 * a.abs());
}
