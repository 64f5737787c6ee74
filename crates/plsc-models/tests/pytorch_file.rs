//! PyTorch's own files (tests/fixtures/arcface_torch/backbone.pth, written by `torch.save`
//! in scripts/fixtures/make_arcface_torch_fixture.py) read as their safetensors twin does;
//! names, aliases and the architecture a file points to.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use plsc_models::pytorch::{read_pytorch, read_state_file};
use plsc_models::state::read_safetensors;
use plsc_models::{
    Backbone, BackboneConfig, ModelError, StateFormat, Suggestion, resolve_name,
    suggest_architecture,
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/arcface_torch")
        .join(name)
}

fn nano() -> Backbone<Flex> {
    BackboneConfig::new("iresnet_nano".into())
        .with_embedding_size(16)
        .with_input_size(56)
        .init(&Default::default())
        .unwrap()
}

#[test]
fn pth_reads_as_its_safetensors_twin_without_the_counters() {
    let pth = read_pytorch(&fixture("backbone.pth")).unwrap();
    let bytes = std::fs::read(fixture("backbone.safetensors")).unwrap();
    let st = read_safetensors(&bytes, "twin").unwrap();
    assert_eq!(pth, st, "same names, shapes and values bit for bit");
    assert!(pth.iter().all(|t| !t.name.contains("num_batches")));
    // The twin does hold the I64 counters (so ignoring them is exercised).
    let raw = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let counters = raw
        .tensors()
        .into_iter()
        .filter(|(n, v)| n.ends_with("num_batches_tracked") && v.dtype() == safetensors::Dtype::I64)
        .count();
    assert!(counters > 0);
    // Every tensor the model has, and nothing else.
    let layout = nano().state_layout();
    assert_eq!(pth.len(), layout.len());
    assert_eq!(
        read_state_file(&fixture("backbone.pth")).unwrap().0,
        StateFormat::PyTorch
    );
    assert_eq!(
        read_state_file(&fixture("backbone.safetensors")).unwrap().0,
        StateFormat::Safetensors
    );
}

#[test]
fn load_arcface_torch_takes_the_pth_and_the_twin_alike() {
    let a = nano()
        .load_arcface_torch(&fixture("backbone.pth"))
        .unwrap()
        .state_tensors();
    let b = nano()
        .load_arcface_torch(&fixture("backbone.safetensors"))
        .unwrap()
        .state_tensors();
    assert_eq!(a, b);
    // Non-default BatchNorm statistics made it in.
    let mean = a
        .iter()
        .find(|t| t.name == "layer1.0.bn1.running_mean")
        .unwrap();
    assert!(mean.values.iter().all(|v| *v != 0.0), "{:?}", mean.values);
}

#[test]
fn a_pth_where_safetensors_is_expected_says_so() {
    let err = nano()
        .load_safetensors(&fixture("backbone.pth"))
        .unwrap_err();
    assert!(matches!(err, ModelError::NotSafetensors { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("backbone.pth")
            && text.contains("PyTorch")
            && text.contains("import arcface-torch"),
        "{text}"
    );
}

#[test]
fn a_file_that_is_not_a_state_file_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("junk.pth");
    std::fs::write(&path, b"PK\x03\x04 not really a zip").unwrap();
    let err = read_pytorch(&path).unwrap_err();
    assert!(matches!(err, ModelError::PyTorch { .. }), "{err}");
    assert!(err.to_string().contains("junk.pth"), "{err}");
}

#[test]
fn aliases_and_the_architecture_a_file_points_to() {
    assert_eq!(resolve_name("r50").unwrap(), "iresnet50");
    assert_eq!(resolve_name("r100").unwrap(), "iresnet100");
    assert_eq!(resolve_name("mbf").unwrap(), "mbf");
    assert_eq!(resolve_name("iresnet_nano").unwrap(), "iresnet_nano");
    let err = resolve_name("r9").unwrap_err().to_string();
    assert!(
        err.contains("r9") && err.contains("r50") && err.contains("iresnet50"),
        "{err}"
    );

    let layout = |m: &Backbone<Flex>| -> Vec<(String, Vec<usize>)> {
        m.state_layout()
            .into_iter()
            .map(|e| (e.name, e.shape))
            .collect()
    };
    let file: Vec<(String, Vec<usize>)> = read_pytorch(&fixture("backbone.pth"))
        .unwrap()
        .into_iter()
        .map(|t| (t.name, t.shape))
        .collect();
    assert_eq!(
        suggest_architecture(&file),
        Some(Suggestion {
            name: "iresnet_nano",
            embedding_size: 16
        })
    );
    for (name, d) in [("iresnet18", 64), ("iresnet_tiny", 8), ("mbf", 32)] {
        let m: Backbone<Flex> = BackboneConfig::new(name.into())
            .with_embedding_size(d)
            .init(&Default::default())
            .unwrap();
        assert_eq!(
            suggest_architecture(&layout(&m)),
            Some(Suggestion {
                name: resolve_name(name).unwrap(),
                embedding_size: d
            }),
            "{name}"
        );
    }
    assert_eq!(suggest_architecture(&[("x".into(), vec![1])]), None);
}

#[test]
fn an_integer_tensor_other_than_the_counters_is_a_named_error() {
    let counts = [1i32, 2, 3];
    let bytes: Vec<u8> = counts.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3], &bytes).unwrap();
    let file = safetensors::serialize([("bn1.bias", view)], None).unwrap();
    let err = read_safetensors(&file, "ints.safetensors").unwrap_err();
    assert!(
        matches!(&err, ModelError::UnsupportedDtype { key, .. } if key == "bn1.bias"),
        "{err}"
    );
    assert!(err.to_string().contains("ints.safetensors"), "{err}");
}
