//! Shared helpers of the checkpoint tests: random heads and backbones, metadata.
#![allow(dead_code)]

use plsc_ckpt::{CheckpointMeta, DataPosition, LrScheduleState, ModelSpec, Seeds, TrainingState};
use plsc_core::{HeadConfig, LossConfig, RowStore, ShardedHead};
use plsc_models::{NamedTensor, TensorKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Random values in [-1, 1) from `seed`, with some exact zeros, a negative zero and
/// subnormals so that bit-exactness is really tested.
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| match i % 97 {
            13 => 0.0,
            29 => -0.0,
            41 => f32::from_bits(0x0000_0003),
            _ => rng.random_range(-1.0f32..1.0),
        })
        .collect()
}

/// A margin (ArcFace) head config of `classes x dim`, all classes used.
pub fn arcface(classes: usize, dim: usize) -> HeadConfig {
    HeadConfig::new(classes, dim).with_seed(5)
}

/// A plain softmax head (with bias).
pub fn softmax(classes: usize, dim: usize) -> HeadConfig {
    HeadConfig::new(classes, dim)
        .with_seed(5)
        .with_loss("dist_softmax".parse::<LossConfig>().expect("known loss"))
}

/// The heads of `world` ranks with random weight, momentum (and bias) rows.
pub fn random_heads(config: &HeadConfig, world: usize, seed: u64) -> Vec<ShardedHead<f32>> {
    (0..world)
        .map(|r| {
            let mut head = ShardedHead::<f32>::new(config.clone(), r, world).expect("valid head");
            let n = head.weight().len();
            let len = head.shard().len;
            let s = seed * 1000 + r as u64;
            let bias = head.bias().map(|_| values(len, s + 100));
            head.set_weight(RowStore::Full(values(n, s)), bias)
                .expect("shape");
            let bv = head.bias().map(|_| values(len, s + 200));
            head.set_velocity(RowStore::Full(values(n, s + 300)), bv)
                .expect("shape");
            head
        })
        .collect()
}

/// A small backbone: two parameters, a frozen one, two buffers, momentum for the trainable.
pub fn backbone(seed: u64) -> (Vec<NamedTensor>, Vec<NamedTensor>) {
    let t = |name: &str, shape: Vec<usize>, kind, s| {
        let n = shape.iter().product();
        NamedTensor::new(name, shape, kind, values(n, seed * 10 + s))
    };
    let tensors = vec![
        t("conv1.weight", vec![4, 3, 3, 3], TensorKind::Param, 1),
        t("bn1.running_mean", vec![4], TensorKind::Buffer, 2),
        t("bn1.running_var", vec![4], TensorKind::Buffer, 3),
        t("features.weight", vec![8], TensorKind::FrozenParam, 4),
        t("fc.weight", vec![8, 36], TensorKind::Param, 5),
    ];
    let momentum = vec![
        t("conv1.weight", vec![4, 3, 3, 3], TensorKind::Momentum, 6),
        t("fc.weight", vec![8, 36], TensorKind::Momentum, 7),
    ];
    (tensors, momentum)
}

/// Checkpoint metadata for `config` over `world` ranks at `step`.
pub fn meta(config: &HeadConfig, world: usize, step: u64, with_model: bool) -> CheckpointMeta {
    CheckpointMeta {
        head: config.clone(),
        world_size: world,
        model: with_model.then(|| ModelSpec::face("iresnet_tiny", config.embedding_size)),
        training: TrainingState {
            step,
            epoch: step / 10,
            lr: LrScheduleState {
                schedule: "poly".into(),
                base_lr: 0.1,
                current_lr: 0.1 * (1.0 - step as f64 / 1000.0),
                step,
                params: [("warmup_steps".to_string(), 5.0)].into(),
            },
            loss_scale: Some(plsc_ckpt::LossScaleState {
                scale: 65536.0,
                good_steps: step % 7,
                bad_steps: 1,
                skipped_total: 2,
            }),
            data: DataPosition {
                epoch: step / 10,
                step: step % 10,
            },
            seeds: Seeds {
                global: 1,
                data: 2,
                head: 5,
                extra: Default::default(),
            },
            extra: serde_json::json!({ "note": "test" }),
        },
    }
}

/// The concatenation of the ranks' rows (`weight`, `momentum`, `bias`, `bias momentum`).
pub fn concat_rows(heads: &[ShardedHead<f32>]) -> [Vec<f32>; 4] {
    let mut out: [Vec<f32>; 4] = Default::default();
    for h in heads {
        out[0].extend(h.weight().to_vec());
        out[1].extend(h.velocity().to_vec());
        out[2].extend_from_slice(h.bias().unwrap_or(&[]));
        out[3].extend_from_slice(h.bias_velocity().unwrap_or(&[]));
    }
    out
}

/// Bit patterns, so that `-0.0 != 0.0` and NaNs compare exactly.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
