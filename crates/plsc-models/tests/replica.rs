//! Replica independence: burn 0.21's `clone()` shares BatchNorm running statistics;
//! `fresh_replica()` does not.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use plsc_models::{Backbone, BackboneConfig};

type AB = Autodiff<Flex>;

fn running_mean(m: &Backbone<AB>) -> Vec<f32> {
    m.state_tensors()
        .into_iter()
        .find(|t| t.name == "bn1.running_mean")
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
            .find(|t| t.name == "conv1.weight")
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

#[test]
fn buffers_broadcast_from_one_replica_to_another() {
    use burn::module::AutodiffModule;
    let base = model();
    let a = base.fresh_replica();
    let b = base.fresh_replica();
    let _ = a.forward(batch(-2.0));
    let _ = b.forward(batch(5.0));
    assert_ne!(running_mean(&a), running_mean(&b));

    let buffers = a.buffer_tensors();
    assert!(
        buffers
            .iter()
            .all(|t| t.kind == plsc_models::TensorKind::Buffer)
    );
    assert_eq!(
        buffers.len(),
        a.state_layout()
            .iter()
            .filter(|e| e.kind == plsc_models::TensorKind::Buffer)
            .count()
    );
    let b = b.load_buffers(&buffers, "rank 0").unwrap();
    assert_eq!(b.buffer_tensors(), buffers);
    // Same weights and now the same statistics: the same eval embeddings.
    let x = batch(1.0).inner();
    assert_eq!(
        a.valid().forward(x.clone()).into_data(),
        b.valid().forward(x).into_data()
    );

    // Parameters are untouched: a model with other weights keeps them.
    let other = model();
    let weights = |m: &Backbone<AB>| {
        m.state_tensors()
            .into_iter()
            .filter(|t| t.kind != plsc_models::TensorKind::Buffer)
            .collect::<Vec<_>>()
    };
    let before = weights(&other);
    let other = other.load_buffers(&buffers, "rank 0").unwrap();
    assert_eq!(weights(&other), before);
    assert_eq!(other.buffer_tensors(), buffers);

    // A missing buffer is a named error.
    let err = model().load_buffers(&buffers[1..], "rank 0").unwrap_err();
    assert!(
        matches!(&err, plsc_models::ModelError::MissingKey { key, .. } if *key == buffers[0].name),
        "{err}"
    );
}

#[test]
fn clones_and_replicas_hold_the_same_weights() {
    // burn initialises lazily and a clone of an unread parameter draws its own values; init
    // materialises, so clones and replicas taken right away agree.
    let base = model();
    let weights = |m: &Backbone<AB>| {
        m.state_tensors()
            .into_iter()
            .filter(|t| t.kind != plsc_models::TensorKind::Buffer)
            .collect::<Vec<_>>()
    };
    let clone = base.clone();
    let replica = base.fresh_replica();
    let w = weights(&replica);
    assert_eq!(weights(&clone), w);
    assert_eq!(weights(&base), w);
}
