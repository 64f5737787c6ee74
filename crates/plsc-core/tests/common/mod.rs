//! Shared helpers for the head tests: data, a sharded run over rank threads, error norms.
#![allow(dead_code)]

use plsc_comm::{CommError, run_ranks};
use plsc_core::{HeadConfig, HeadError, HeadFloat, ShardedHead, WeightUpdate, init};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct Problem {
    pub features: Vec<f64>,
    pub labels: Vec<i64>,
    pub weight: Vec<f64>,
    pub dim: usize,
    pub classes: usize,
}

/// `rows` random features (scaled so norms vary), labels covering repeats, the head's own init.
pub fn problem(rows: usize, classes: usize, dim: usize, seed: u64) -> Problem {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let features: Vec<f64> = (0..rows * dim)
        .map(|_| rng.random_range(-1.0..1.0) * 3.0)
        .collect();
    let labels: Vec<i64> = (0..rows)
        .map(|i| {
            if i % 4 == 3 {
                (i as i64 - 1) % classes as i64
            } else {
                rng.random_range(0..classes as i64)
            }
        })
        .collect();
    let mut weight = vec![0.0f64; classes * dim];
    init::init_rows(seed, 0, dim, &mut weight);
    Problem {
        features,
        labels,
        weight,
        dim,
        classes,
    }
}

/// What one rank returns from a step in gradient mode.
#[derive(Debug, Clone)]
pub struct RankResult {
    pub loss: f64,
    pub grad_features: Vec<f64>,
    pub grad_weight: Vec<f64>,
    pub grad_bias: Option<Vec<f64>>,
    pub top1: Option<f64>,
}

/// Runs one gradient-mode step over `n` rank threads (rows split as evenly as possible, the
/// first ranks taking the extra) and concatenates the results in rank order.
pub fn run_sharded<T: HeadFloat>(
    p: &Problem,
    config: &HeadConfig,
    n: usize,
    weight: &[f64],
) -> Result<Vec<RankResult>, HeadError> {
    let rows = p.labels.len();
    let d = p.dim;
    let results = run_ranks(n, |comm| {
        use plsc_comm::Communicator;
        let r = comm.rank();
        let lo = rows * r / n;
        let hi = rows * (r + 1) / n;
        let mut head = ShardedHead::<T>::new(config.clone(), r, n)?;
        let shard = head.shard();
        let w: Vec<T> = weight[shard.start * d..shard.end() * d]
            .iter()
            .map(|v| T::from_f64(*v))
            .collect();
        let bias = head.bias().map(|b| b.to_vec());
        head.set_weight(plsc_core::RowStore::Full(w), bias)?;
        let x: Vec<T> = p.features[lo * d..hi * d]
            .iter()
            .map(|v| T::from_f64(*v))
            .collect();
        let mut gw = vec![T::zero(); shard.len * d];
        let mut gb = head.bias().map(|b| vec![T::zero(); b.len()]);
        let out = head.step(
            &comm,
            &x,
            &p.labels[lo..hi],
            0,
            WeightUpdate::Gradient {
                weight: &mut gw,
                bias: gb.as_deref_mut(),
            },
        )?;
        Ok::<_, HeadError>(RankResult {
            loss: out.loss,
            grad_features: out.grad_features.iter().map(|v| v.as_f64()).collect(),
            grad_weight: gw.iter().map(|v| v.as_f64()).collect(),
            grad_bias: gb.map(|b| b.iter().map(|v| v.as_f64()).collect()),
            top1: out.accuracy.map(|a| a.top1),
        })
    });
    results.into_iter().collect()
}

/// The float64 reference over all classes of `p`, with the head's zero bias for plain softmax.
pub fn full_reference(
    p: &Problem,
    kind: &plsc_core::LossKind,
) -> plsc_core::reference::ReferenceOutput {
    let bias = (*kind == plsc_core::LossKind::Softmax).then(|| vec![0.0; p.classes]);
    plsc_core::reference::head_reference(
        kind,
        &p.features,
        &p.labels,
        &p.weight,
        bias.as_deref(),
        p.dim,
        None,
    )
}

pub fn concat(parts: impl Iterator<Item = Vec<f64>>) -> Vec<f64> {
    parts.flatten().collect()
}

/// `|a - b| / max(|b|, tiny)`, norm-wise.
pub fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}

pub fn _unused(_: CommError) {}
