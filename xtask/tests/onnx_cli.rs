//! `xtask export --onnx`, checked by ONNX Runtime: for iresnet_tiny (from a checkpoint),
//! iresnet50 and MobileFaceNet (from model directories), seeded random weights with
//! non-default BatchNorm statistics, ONNX Runtime's embeddings equal plsc-rs's within 1e-4 of
//! their norm at batch sizes 1 and 5 (scripts/onnx_check.py compares).
//!
//! Runs when `PLSC_TEST_ONNX=1`, with the Python of `PLSC_PYTHON` (default `python3`), which
//! needs onnxruntime and numpy (`.ci/run` makes such a venv). Without the variable it says it
//! was skipped.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use plsc_ckpt::{BackboneRef, CheckpointMeta, ModelSpec, SaveOptions, TrainingState};
use plsc_core::{HeadConfig, ShardedHead};
use plsc_models::{Backbone, BackboneConfig, NamedTensor, TensorKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const BATCH: usize = 5;

/// A seeded backbone whose every tensor is non-default: convolution and linear weights
/// N(0, 1 / fan_in), BatchNorm scale, shift and running statistics away from 1/0/0/1, PReLU
/// slopes in [0.05, 0.5].
fn model(name: &str, embedding_size: usize, input_size: usize, seed: u64) -> Backbone<Flex> {
    let m: Backbone<Flex> = BackboneConfig::new(name.into())
        .with_embedding_size(embedding_size)
        .with_input_size(input_size)
        .init_seeded(seed, &Default::default())
        .unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut state = m.state_tensors();
    for t in &mut state {
        let name = t.name.as_str();
        let shape = t.shape.clone();
        let fan_in: usize = shape[1..].iter().product::<usize>().max(1);
        for v in &mut t.values {
            *v = if shape.len() >= 2 {
                let u: f32 = rng.random_range(-1.0..1.0);
                u * (3.0 / fan_in as f32).sqrt()
            } else if name.ends_with("running_mean") || name.ends_with(".bias") {
                rng.random_range(-0.2..0.2)
            } else if name.ends_with("running_var") {
                rng.random_range(0.5..2.0)
            } else if t.kind == TensorKind::FrozenParam {
                *v
            } else if name.contains("prelu") || name.ends_with("layers.2.weight") {
                rng.random_range(0.05..0.5)
            } else {
                rng.random_range(0.6..1.4)
            };
        }
    }
    m.load_tensors(&state, "perturbed").unwrap()
}

fn embed(m: &Backbone<Flex>, x: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let t = Tensor::<Flex, 4>::from_data(TensorData::new(x.to_vec(), shape), &Default::default());
    m.forward(t).into_data().into_vec::<f32>().unwrap()
}

fn ckpt_tensors(m: &Backbone<Flex>) -> Vec<NamedTensor> {
    m.state_tensors()
}

/// A one-rank checkpoint of `m` with a small head, under `root`.
fn write_checkpoint(root: &Path, m: &Backbone<Flex>, spec: ModelSpec) {
    let head = HeadConfig::new(10, m.embedding_size).with_seed(1);
    let shard = ShardedHead::<f32>::new(head.clone(), 0, 1).unwrap();
    let tensors = ckpt_tensors(m);
    plsc_ckpt::save(
        root,
        &CheckpointMeta {
            head,
            world_size: 1,
            model: Some(spec),
            training: TrainingState {
                step: 7,
                ..TrainingState::default()
            },
        },
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &[],
        }),
        &[plsc_ckpt::HeadShardRef::from_head(&shard)],
        SaveOptions::default(),
    )
    .unwrap();
}

fn write_f32(path: &Path, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap();
}

fn export(args: &[&str], src: &Path, onnx: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("export")
        .args(args)
        .arg(src)
        .arg("--onnx")
        .arg(onnx)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn onnx_runtime_gives_plsc_rs_embeddings() {
    if std::env::var("PLSC_TEST_ONNX").as_deref() != Ok("1") {
        eprintln!(
            "onnx_runtime_gives_plsc_rs_embeddings: SKIPPED (set PLSC_TEST_ONNX=1 and \
             PLSC_PYTHON to a Python with onnxruntime and numpy; .ci/run does)"
        );
        return;
    }
    let python = std::env::var("PLSC_PYTHON").unwrap_or_else(|_| "python3".into());
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let setups: [(&str, usize, usize, u64, bool); 3] = [
        ("iresnet_tiny", 32, 28, 11, true),
        ("iresnet50", 512, 112, 12, false),
        ("mbf", 512, 112, 13, false),
    ];
    for (name, d, side, seed, from_ckpt) in setups {
        let m = model(name, d, side, seed);
        let mut spec = ModelSpec::face(name, d);
        spec.input_size = side;
        let onnx: PathBuf = tmp.path().join(format!("{name}.onnx"));
        if from_ckpt {
            let root = tmp.path().join(format!("{name}-run"));
            write_checkpoint(&root, &m, spec.clone());
            export(&["--ckpt"], &root, &onnx);
        } else {
            let dir = tmp.path().join(format!("{name}-model"));
            plsc_ckpt::export_tensors(spec.clone(), &ckpt_tensors(&m), 0, &dir).unwrap();
            export(&["--model"], &dir, &onnx);
        }
        let shape = [BATCH, 3, side, side];
        let mut rng = StdRng::seed_from_u64(seed + 100);
        let x: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let y = embed(&m, &x, shape);
        let input = tmp.path().join(format!("{name}.input.f32"));
        let expected = tmp.path().join(format!("{name}.expected.f32"));
        write_f32(&input, &x);
        write_f32(&expected, &y);
        cases.push(serde_json::json!({
            "name": name,
            "onnx": onnx,
            "input": input,
            "expected": expected,
            "input_shape": shape,
            "embedding_size": d,
            "metadata": {
                "plsc.architecture": name,
                "plsc.mean": "127.5,127.5,127.5",
                "plsc.std": "128,128,128",
                "plsc.channel_order": "rgb",
                "plsc.input_size": side.to_string(),
            },
        }));
    }
    let cases_path = tmp.path().join("cases.json");
    let doc = serde_json::json!({"tolerance": 1e-4, "batches": [1, BATCH], "cases": cases});
    std::fs::write(&cases_path, doc.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/onnx_check.py");
    let out = Command::new(&python)
        .arg(script)
        .arg(&cases_path)
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{report}");
    assert!(out.status.success(), "ONNX Runtime check failed:\n{report}");
    assert_eq!(
        report.lines().filter(|l| l.starts_with("ok  ")).count(),
        3 * 2,
        "three models at two batch sizes"
    );
}
