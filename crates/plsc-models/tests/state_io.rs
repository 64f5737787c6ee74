//! safetensors files in arcface_torch's layout: load, reproduce, round trip, named errors.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::tensor::{Distribution, Tensor};
use plsc_models::state::to_safetensors_bytes;
use plsc_models::{Backbone, BackboneConfig, ModelError, NamedTensor, TensorKind};
use safetensors::{Dtype, tensor::TensorView};

type B = Flex;

fn tmp(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plsc-models-state");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn model(name: &str) -> Backbone<B> {
    BackboneConfig::new(name.into())
        .init::<B>(&Default::default())
        .unwrap()
}

/// Tensors with the model's names and shapes and values that no initialisation produces
/// (a distinct affine ramp per tensor; running variances positive), plus the
/// `num_batches_tracked` counters PyTorch writes.
fn synthetic_state(m: &Backbone<B>) -> Vec<NamedTensor> {
    m.state_layout()
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let n: usize = entry.shape.iter().product();
            let values = (0..n)
                .map(|j| {
                    let v = ((i * 7919 + j * 104_729) % 1000) as f32 / 1000.0 - 0.5;
                    if entry.name.ends_with("running_var") {
                        v + 1.0
                    } else {
                        v
                    }
                })
                .collect();
            NamedTensor::new(entry.name, entry.shape, entry.kind, values)
        })
        .collect()
}

fn write_with_counters(tensors: &[NamedTensor], path: &PathBuf) {
    // Serialise the float tensors plus an int64 num_batches_tracked per BatchNorm, as
    // `save_file(torch.load('backbone.pth'))` writes them.
    let floats: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let counter = 1234i64.to_le_bytes().to_vec();
    let mut views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&floats)
        .map(|(t, b)| {
            (
                t.name.clone(),
                TensorView::new(Dtype::F32, t.shape.clone(), b).unwrap(),
            )
        })
        .collect();
    for t in tensors {
        if let Some(p) = t.name.strip_suffix(".running_mean") {
            views.push((
                format!("{p}.num_batches_tracked"),
                TensorView::new(Dtype::I64, vec![], &counter).unwrap(),
            ));
        }
    }
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn arcface_layout_file_loads_and_reproduces_its_tensors() {
    for name in ["iresnet_tiny", "iresnet18", "mbf"] {
        let m = model(name);
        let expected = synthetic_state(&m);
        let path = tmp(&format!("{name}.arcface.safetensors"));
        write_with_counters(&expected, &path);
        let loaded = model(name).load_arcface_torch(&path).unwrap();
        let got = loaded.state_tensors();
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert_eq!(g.entry(), e.entry());
            assert!(g.values == e.values, "{name}: {} differs", e.name);
        }
    }
}

#[test]
fn save_load_round_trip_is_byte_identical() {
    let m = model("iresnet_tiny");
    // Move the running statistics away from their initial values with a training forward.
    let ad = BackboneConfig::new("iresnet_tiny".into())
        .init::<burn::backend::Autodiff<B>>(&Default::default())
        .unwrap();
    let x = Tensor::random(
        [4, 3, 112, 112],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    let _ = ad.forward(x);
    let path_a = tmp("roundtrip_a.safetensors");
    let path_b = tmp("roundtrip_b.safetensors");
    ad.save_safetensors(&path_a).unwrap();
    let loaded = m.load_safetensors(&path_a).unwrap();
    loaded.save_safetensors(&path_b).unwrap();
    let a = std::fs::read(&path_a).unwrap();
    let b = std::fs::read(&path_b).unwrap();
    assert!(a == b, "re-saved file differs");
    // And the loaded model holds the trained running statistics, not fresh ones.
    let rm = loaded
        .state_tensors()
        .into_iter()
        .find(|t| t.name == "bn1.running_mean")
        .unwrap();
    assert!(rm.values.iter().any(|v| *v != 0.0));
    // No temporary files left behind.
    let leftovers: Vec<_> = std::fs::read_dir(path_a.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp."))
        .collect();
    assert!(leftovers.is_empty());
}

#[test]
fn loaded_weights_drive_the_forward() {
    // Two models with different random weights give different embeddings until one loads
    // the other's state; then they agree exactly (eval mode).
    let a = model("iresnet_tiny");
    let b = model("iresnet_tiny");
    let x = Tensor::<B, 4>::random(
        [2, 3, 112, 112],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    let ya = a.forward(x.clone()).into_data();
    assert_ne!(ya, b.forward(x.clone()).into_data());
    let bytes = a.to_safetensors_bytes().unwrap();
    let b = b.load_safetensors_bytes(&bytes, "a").unwrap();
    assert_eq!(ya, b.forward(x).into_data());
}

fn bytes_without(tensors: &[NamedTensor], skip: &str) -> Vec<u8> {
    let kept: Vec<NamedTensor> = tensors.iter().filter(|t| t.name != skip).cloned().collect();
    to_safetensors_bytes(&kept, "test").unwrap()
}

#[test]
fn missing_wrong_shape_and_unexpected_keys_are_named_errors() {
    let m = model("iresnet_tiny");
    let state = synthetic_state(&m);

    let err = model("iresnet_tiny")
        .load_safetensors_bytes(
            &bytes_without(&state, "layer2.0.conv1.weight"),
            "f.safetensors",
        )
        .unwrap_err();
    match &err {
        ModelError::MissingKey {
            file,
            key,
            expected,
        } => {
            assert_eq!(file, "f.safetensors");
            assert_eq!(key, "layer2.0.conv1.weight");
            assert_eq!(expected, &vec![32, 16, 3, 3]);
        }
        other => panic!("expected MissingKey, got {other}"),
    }

    let mut wrong = state.clone();
    let fc = wrong.iter_mut().find(|t| t.name == "fc.weight").unwrap();
    // The burn layout [in, out] instead of PyTorch's [out, in].
    fc.shape.reverse();
    let err = model("iresnet_tiny")
        .load_safetensors_bytes(&to_safetensors_bytes(&wrong, "t").unwrap(), "g")
        .unwrap_err();
    match &err {
        ModelError::ShapeMismatch {
            key,
            expected,
            found,
            ..
        } => {
            assert_eq!(key, "fc.weight");
            assert_eq!(expected, &vec![512, 128 * 7 * 7]);
            assert_eq!(found, &vec![128 * 7 * 7, 512]);
        }
        other => panic!("expected ShapeMismatch, got {other}"),
    }

    let mut extra = state.clone();
    extra.push(NamedTensor::new(
        "head.weight",
        vec![2],
        TensorKind::Param,
        vec![1.0, 2.0],
    ));
    let err = model("iresnet_tiny")
        .load_safetensors_bytes(&to_safetensors_bytes(&extra, "t").unwrap(), "h")
        .unwrap_err();
    match &err {
        ModelError::UnexpectedKeys { keys, .. } => {
            assert_eq!(keys, &vec!["head.weight".to_string()])
        }
        other => panic!("expected UnexpectedKeys, got {other}"),
    }

    // A model of another architecture: the first differing tensor is named.
    let err = model("iresnet18")
        .load_safetensors_bytes(&to_safetensors_bytes(&state, "t").unwrap(), "i")
        .unwrap_err();
    assert!(matches!(err, ModelError::ShapeMismatch { .. }), "{err}");

    // Not a safetensors file; a missing file.
    let err = model("iresnet_tiny")
        .load_safetensors_bytes(b"not a safetensors file", "junk")
        .unwrap_err();
    assert!(matches!(err, ModelError::Safetensors { .. }), "{err}");
    let err = model("iresnet_tiny")
        .load_arcface_torch(&tmp("does-not-exist.safetensors"))
        .unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
}

#[test]
fn half_precision_files_load() {
    let m = model("iresnet_tiny");
    let state = synthetic_state(&m);
    let halves: Vec<Vec<u8>> = state
        .iter()
        .map(|t| {
            t.values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = state
        .iter()
        .zip(&halves)
        .map(|(t, b)| {
            (
                t.name.clone(),
                TensorView::new(Dtype::F16, t.shape.clone(), b).unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let loaded = model("iresnet_tiny")
        .load_safetensors_bytes(&bytes, "f16")
        .unwrap();
    for (g, e) in loaded.state_tensors().iter().zip(&state) {
        for (a, b) in g.values.iter().zip(&e.values) {
            assert_eq!(*a, half::f16::from_f32(*b).to_f32(), "{}", e.name);
        }
    }
}
