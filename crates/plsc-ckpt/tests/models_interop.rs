//! A real backbone (plsc-models' `iresnet_tiny`) through a checkpoint and an export: its
//! named tensors go in as `NamedTensor`s, and the exported `backbone.safetensors` loads back
//! with `Backbone::load_safetensors` (what plsc-serve and `xtask eval` do) to the same state
//! and the same embeddings.

mod common;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use common::*;
use plsc_ckpt::{BackboneRef, Checkpoint, HeadShardRef, ModelSpec, SaveOptions};
use plsc_models::{BackboneConfig, NamedTensor, TensorKind};

#[test]
fn iresnet_tiny_round_trips_through_checkpoint_and_export() {
    let device = Default::default();
    let cfg = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(16)
        .with_input_size(28)
        .with_in_channels(1);
    let model = cfg.init_seeded::<Flex>(3, &device).unwrap();
    let layout = model.state_layout();
    let tensors: Vec<NamedTensor> = model.state_tensors();
    let momentum: Vec<NamedTensor> = tensors
        .iter()
        .filter(|t| t.kind == TensorKind::Param)
        .map(|t| {
            NamedTensor::new(
                t.name.clone(),
                t.shape.clone(),
                TensorKind::Momentum,
                values(t.numel(), 9),
            )
        })
        .collect();

    let head_cfg = arcface(10, 16);
    let heads = random_heads(&head_cfg, 2, 1);
    let shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    let mut m = meta(&head_cfg, 2, 4, false);
    m.model = Some(ModelSpec {
        architecture: "iresnet_tiny".into(),
        embedding_size: 16,
        input_size: 28,
        in_channels: 1,
        mean: vec![127.5],
        std: vec![128.0],
        resize: Default::default(),
    });
    let tmp = tempfile::tempdir().unwrap();
    let dir = plsc_ckpt::save(
        tmp.path(),
        &m,
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions::default(),
    )
    .unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    ckpt.check_backbone_layout(layout.iter().map(|e| (e.name.as_str(), e.shape.as_slice())))
        .unwrap();
    let state = ckpt.load_backbone().unwrap();
    assert_eq!(state.tensors, tensors);
    assert_eq!(state.momentum, momentum);

    // Resume path: the checkpoint's weights load into a fresh model directly.
    let resumed = cfg
        .init_seeded::<Flex>(5, &device)
        .unwrap()
        .load_safetensors_bytes(&ckpt.backbone_weights_safetensors().unwrap(), "checkpoint")
        .unwrap();
    let resumed: Vec<NamedTensor> = resumed.state_tensors();
    assert_eq!(resumed, tensors);

    // Export, then load the weights into a differently seeded model of the same architecture.
    let out = tmp.path().join("model");
    plsc_ckpt::export(&ckpt, &out).unwrap();
    let exported = plsc_ckpt::load_exported(&out).unwrap();
    assert_eq!(exported.tensors, tensors);
    let other = cfg.init_seeded::<Flex>(4, &device).unwrap();
    let x = Tensor::<Flex, 4>::random([2, 1, 28, 28], Distribution::Default, &device);
    let before = other.valid_embed(x.clone());
    let loaded = other
        .load_safetensors(&out.join("backbone.safetensors"))
        .unwrap();
    let reloaded: Vec<NamedTensor> = loaded.state_tensors();
    assert_eq!(reloaded, tensors);
    let want = model.valid_embed(x.clone());
    let got = loaded.valid_embed(x);
    // The state is bit-identical (above); the forward pass may differ in the last bits
    // (a loaded `Linear` weight is a transposed copy, so the matrix product may take another
    // kernel path).
    let close = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
    };
    assert!(
        close(&got, &want),
        "same weights, same embeddings: {got:?} vs {want:?}"
    );
    assert!(!close(&before, &want), "the other seed embeds differently");

    // The one loader of exports (the server's and `eval --model`'s): the same state, and the
    // same embeddings bit for bit as the model loaded from the file above.
    let (built, with) = plsc_ckpt::load_exported_backbone::<Flex>(&out, &device).unwrap();
    assert_eq!(with.tensors, tensors);
    assert_eq!(built.state_tensors(), tensors);
    let x = Tensor::<Flex, 4>::random([2, 1, 28, 28], Distribution::Default, &device);
    assert_eq!(built.valid_embed(x.clone()), loaded.valid_embed(x));

    // A model.json that describes another network is a named error (the tensor and both shapes).
    let json = out.join(plsc_ckpt::export::MODEL_JSON);
    let text = std::fs::read_to_string(&json).unwrap();
    let text = text.replace("\"embedding_size\": 16", "\"embedding_size\": 8");
    std::fs::write(&json, text).unwrap();
    let err = plsc_ckpt::load_exported_backbone::<Flex>(&out, &device).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, plsc_ckpt::CkptError::Model(_)) && msg.contains("fc.weight"),
        "{msg}"
    );
}

trait Embed {
    fn valid_embed(&self, x: Tensor<Flex, 4>) -> Vec<f32>;
}

impl Embed for plsc_models::Backbone<Flex> {
    fn valid_embed(&self, x: Tensor<Flex, 4>) -> Vec<f32> {
        self.forward(x)
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .unwrap()
    }
}
