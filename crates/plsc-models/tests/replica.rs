//! Replica independence: burn 0.21's `clone()` shares BatchNorm running statistics;
//! `fresh_replica()` does not.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use plsc_models::{Backbone, BackboneConfig};

type AB = Autodiff<Flex>;

fn running_mean(m: &Backbone<AB>) -> Vec<f32> {
    m.state_tensors()
        .into_iter()
        .find(|t| t.entry.name == "bn1.running_mean")
        .unwrap()
        .values
}

fn model() -> Backbone<AB> {
    BackboneConfig::new("iresnet_tiny".into())
        .with_input_size(28)
        .with_in_channels(1)
        .with_embedding_size(8)
        .init(&Default::default())
        .unwrap()
}

fn batch(mean: f64) -> Tensor<AB, 4> {
    Tensor::random(
        [4, 1, 28, 28],
        Distribution::Normal(mean, 1.0),
        &Default::default(),
    )
}

#[test]
fn clone_shares_running_statistics_in_burn_0_21() {
    // This documents burn's behaviour that makes fresh_replica necessary: if it ever changes,
    // this test fails and the
    // advice to use fresh_replica can be revisited.
    let a = model();
    let b = a.clone();
    let before = running_mean(&a);
    let _ = b.forward(batch(3.0));
    assert_ne!(
        running_mean(&a),
        before,
        "a forward on a clone moved the original's statistics"
    );
}

#[test]
fn fresh_replicas_keep_their_own_statistics_across_threads() {
    let base = model();
    let before = running_mean(&base);
    let replicas: Vec<Backbone<AB>> = (0..2).map(|_| base.fresh_replica()).collect();
    // Same weights.
    let weights = |m: &Backbone<AB>| {
        m.state_tensors()
            .into_iter()
            .find(|t| t.entry.name == "conv1.weight")
            .unwrap()
            .values
    };
    assert_eq!(weights(&replicas[0]), weights(&base));
    // Two rank threads, different data.
    let stats: Vec<Vec<f32>> = std::thread::scope(|s| {
        let handles: Vec<_> = replicas
            .iter()
            .zip([-2.0, 5.0])
            .map(|(r, mean)| {
                s.spawn(move || {
                    for _ in 0..3 {
                        let _ = r.forward(batch(mean));
                    }
                    running_mean(r)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_ne!(
        stats[0], stats[1],
        "replicas fed different data share statistics"
    );
    // Each replica still holds its own after the threads ended, and the original is untouched.
    assert_eq!(running_mean(&replicas[0]), stats[0]);
    assert_eq!(running_mean(&replicas[1]), stats[1]);
    assert_eq!(running_mean(&base), before);
}
