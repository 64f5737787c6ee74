//! The training loop: rank-count invariance, learning, and the skipped non-finite step.

mod common;

use common::{
    B, DIM, GlobalBatch, LinearNet, PIXELS, rank_slices, small_entry as entry, synthetic,
};
use plsc_train::trainer::{Outputs, RunPlan, train};
use plsc_train::{Entry, LossScaleConfig, TrainOutcome};

fn run(e: &Entry, batches: &[GlobalBatch]) -> TrainOutcome<LinearNet<B>> {
    let device = Default::default();
    let base = LinearNet::<B>::new(PIXELS, DIM, 7, &device);
    let plan = RunPlan {
        steps_per_epoch: batches.len() as u64,
        total_steps: e.train_steps.unwrap(),
        start_step: 0,
        data_steps_per_epoch: batches.len() as u64,
    };
    train::<B, _, _>(
        e,
        &base,
        &device,
        plan,
        |rank| Ok(rank_slices(batches, rank, e.ranks)),
        Outputs::default(),
    )
    .unwrap()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Fed the same global batches, 1 rank and 2 rank threads follow the same loss sequence for 20
/// steps. The only difference is the order of the f32 sums (the gradient of a batch split over
/// two ranks is added in two parts), so the losses agree to 1e-5 relative (4e-7 measured).
#[test]
fn one_and_two_ranks_give_the_same_losses() {
    let batches = synthetic(20, 8, PIXELS, 10, 0.5, 1);
    let one = run(&entry(1, 8, 10, 20), &batches);
    let two = run(&entry(2, 8, 10, 20), &batches);
    assert_eq!(one.losses.len(), 20);
    assert_eq!(two.losses.len(), 20);
    let worst = one
        .losses
        .iter()
        .zip(&two.losses)
        .map(|(a, b)| (a - b).abs() / a.abs())
        .fold(0.0, f64::max);
    eprintln!("largest relative loss difference, 1 vs 2 ranks: {worst:e}");
    for (step, (a, b)) in one.losses.iter().zip(&two.losses).enumerate() {
        assert!(a.is_finite());
        let rel = (a - b).abs() / a.abs().max(1e-12);
        assert!(
            rel < 1e-5,
            "step {step}: 1 rank {a}, 2 ranks {b} (rel {rel:e})"
        );
    }
    // The losses change along the way (the comparison is not of a constant).
    assert!((one.losses[0] - one.losses[19]).abs() > 1e-3);
    // The head: 2 shards together equal the single shard.
    let joined: Vec<f32> = two
        .ranks
        .iter()
        .flat_map(|r| r.head_weight.to_vec())
        .collect();
    assert!(max_abs_diff(&one.ranks[0].head_weight.to_vec(), &joined) < 1e-4);
    assert!(max_abs_diff(&one.ranks[0].model.values(), &two.ranks[0].model.values()) < 1e-4);
    // Both backbone replicas stay identical, and the backbone did train.
    assert_eq!(two.ranks[0].model.values(), two.ranks[1].model.values());
    let initial = LinearNet::<B>::new(PIXELS, DIM, 7, &Default::default()).values();
    assert!(
        max_abs_diff(&initial, &one.ranks[0].model.values()) > 1e-3,
        "the backbone never moved"
    );
}

#[test]
fn loss_falls_on_a_learnable_set() {
    let batches = synthetic(80, 16, PIXELS, 4, 0.3, 2);
    let out = run(&entry(2, 16, 4, 80).with_lr(0.5), &batches);
    let first: f64 = out.losses[..10].iter().sum::<f64>() / 10.0;
    let last: f64 = out.losses[70..].iter().sum::<f64>() / 10.0;
    assert!(
        last < 0.5 * first,
        "mean loss {first} over the first 10 steps, {last} over the last 10"
    );
    assert_eq!(out.logs.len(), 16, "a record every 5 steps");
    assert_eq!(out.logs.last().unwrap().step, 80);
}

fn with_nan(batches: &[GlobalBatch], at: usize) -> Vec<GlobalBatch> {
    let mut bad = batches[at].clone();
    bad.images[3] = f32::NAN;
    let mut v = batches[..at].to_vec();
    v.push(bad);
    v.extend_from_slice(&batches[at..]);
    v
}

/// A step with non-finite gradients changes nothing: weights and momentum (of the backbone,
/// seen through the next step, and of the head, read directly) are those of a run that never
/// saw the bad batch; the scale drops and the counter counts it.
#[test]
fn a_non_finite_step_is_skipped_entirely() {
    let good = synthetic(3, 8, PIXELS, 6, 0.5, 3);
    let bad = with_nan(&good, 2); // g0, g1, NaN, g2
    let scale = LossScaleConfig {
        init_loss_scaling: 1024.0,
        incr_every_n_steps: 1000,
        decr_every_n_nan_or_inf: 1,
        incr_ratio: 2.0,
        decr_ratio: 0.5,
    };
    let e = |steps| {
        entry(2, 8, 6, steps)
            .with_mixed_precision(true)
            .with_loss_scale(scale.clone())
    };
    // Right after the skipped step.
    let a3 = run(&e(3), &bad);
    let b2 = run(&e(2), &good);
    assert_eq!(a3.skipped_steps, 1);
    assert_eq!(b2.skipped_steps, 0);
    assert_eq!(a3.loss_scale, 512.0);
    assert!(!a3.losses[2].is_finite());
    for r in 0..2 {
        assert_eq!(
            a3.ranks[r].model.values(),
            b2.ranks[r].model.values(),
            "rank {r} backbone"
        );
        assert_eq!(
            a3.ranks[r].head_weight, b2.ranks[r].head_weight,
            "rank {r} head weight"
        );
        assert_eq!(
            a3.ranks[r].head_velocity, b2.ranks[r].head_velocity,
            "rank {r} head momentum"
        );
    }
    // One good step later: a changed momentum would show here.
    let a4 = run(&e(4), &bad);
    let b3 = run(&e(3), &good);
    assert_eq!(a4.losses[3], b3.losses[2]);
    for r in 0..2 {
        assert_eq!(
            a4.ranks[r].model.values(),
            b3.ranks[r].model.values(),
            "rank {r} backbone"
        );
        assert_eq!(
            a4.ranks[r].head_weight, b3.ranks[r].head_weight,
            "rank {r} head weight"
        );
    }
    // And the mixed-precision path does update: the last step moved the weights.
    assert_ne!(b3.ranks[0].model.values(), b2.ranks[0].model.values());
}
