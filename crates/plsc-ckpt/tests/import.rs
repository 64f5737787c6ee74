//! `plsc_ckpt::import` of the arcface_torch fixture (crates/plsc-models/tests/fixtures/
//! arcface_torch): what model.json records, the named errors, and `num_batches_tracked` (I64)
//! accepted and ignored in a model directory made by hand.

use std::path::{Path, PathBuf};

use plsc_ckpt::{
    ChannelOrder, CkptError, ImportOptions, ModelJson, PreprocessingSource, load_exported,
};
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plsc-models/tests/fixtures/arcface_torch")
        .join(name)
}

fn nano() -> ImportOptions {
    ImportOptions {
        input_size: 56,
        ..ImportOptions::arcface_torch("iresnet_nano")
    }
}

#[test]
fn model_json_records_arcface_torchs_preprocessing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let imported = plsc_ckpt::import(&fixture("backbone.pth"), &nano(), &out).unwrap();
    assert_eq!(imported.spec.embedding_size, 16, "read from fc.weight");
    let json: ModelJson =
        serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(json.spec.architecture, "iresnet_nano");
    assert_eq!(json.spec.input_size, 56);
    assert_eq!(json.spec.mean, [127.5; 3]);
    assert_eq!(json.spec.std, [127.5; 3]);
    assert_eq!(json.channel_order, ChannelOrder::Rgb);
    assert_eq!(json.preprocessing_source, PreprocessingSource::ArcfaceTorch);
    let text = std::fs::read_to_string(out.join("model.json")).unwrap();
    assert!(
        text.contains("\"preprocessing_source\": \"arcface_torch\""),
        "{text}"
    );
    // Every tensor of the model, with its role, and no counters.
    let exported = load_exported(&out).unwrap();
    assert_eq!(exported.tensors.len(), imported.tensors);
    assert!(
        exported
            .tensors
            .iter()
            .all(|t| !t.name.contains("num_batches"))
    );
    let frozen = exported
        .tensors
        .iter()
        .find(|t| t.name == "features.weight")
        .unwrap();
    assert_eq!(frozen.kind, plsc_models::TensorKind::FrozenParam);
    // The same from the safetensors twin, byte for byte.
    let twin = tmp.path().join("twin");
    plsc_ckpt::import(&fixture("backbone.safetensors"), &nano(), &twin).unwrap();
    assert_eq!(
        std::fs::read(out.join("backbone.safetensors")).unwrap(),
        std::fs::read(twin.join("backbone.safetensors")).unwrap()
    );
}

#[test]
fn a_wrong_arch_names_the_tensor_both_shapes_and_the_likely_arch() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("model");
    let options = ImportOptions {
        input_size: 56,
        ..ImportOptions::arcface_torch("r18")
    };
    let err = plsc_ckpt::import(&fixture("backbone.pth"), &options, &out).unwrap_err();
    assert!(matches!(err, CkptError::ImportMismatch { .. }), "{err}");
    let text = err.to_string();
    for part in [
        "backbone.pth",
        "conv1.weight",
        "[4, 3, 3, 3]",
        "[64, 3, 3, 3]",
        "--arch iresnet_nano --embedding-size 16",
    ] {
        assert!(text.contains(part), "`{part}` not in: {text}");
    }
    assert!(!out.exists(), "nothing written");

    // The right blocks at another input size: only fc.weight differs.
    let err = plsc_ckpt::import(
        &fixture("backbone.pth"),
        &ImportOptions::arcface_torch("iresnet_nano"),
        &out,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("fc.weight") && err.contains("--input-size"),
        "{err}"
    );

    let err = plsc_ckpt::import(&tmp.path().join("nope.pth"), &nano(), &out).unwrap_err();
    assert!(err.to_string().contains("nope.pth"), "{err}");
    let err = plsc_ckpt::import(
        &fixture("backbone.pth"),
        &ImportOptions::arcface_torch("r9"),
        &out,
    )
    .unwrap_err();
    assert!(err.to_string().contains("r50"), "{err}");
    assert!(!out.exists(), "nothing written");

    // A non-empty directory that is not a model directory is refused and left alone.
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), b"mine").unwrap();
    let err = plsc_ckpt::import(&fixture("backbone.pth"), &nano(), &out).unwrap_err();
    assert!(err.to_string().contains("not an earlier export"), "{err}");
    assert_eq!(std::fs::read(out.join("notes.txt")).unwrap(), b"mine");
}

/// The safetensors twin (with its I64 `num_batches_tracked`) as `backbone.safetensors` of a
/// model directory whose model.json was written by hand: it loads, counters ignored.
#[test]
fn counters_in_a_hand_made_model_directory_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("model");
    std::fs::create_dir_all(&dir).unwrap();
    let weights = std::fs::read(fixture("backbone.safetensors")).unwrap();
    std::fs::write(dir.join("backbone.safetensors"), &weights).unwrap();
    let sha: String = Sha256::digest(&weights)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let json = serde_json::json!({
        "format": "plsc-model", "format_version": 1, "architecture": "iresnet_nano",
        "embedding_size": 16, "input_size": 56, "in_channels": 3,
        "mean": [127.5, 127.5, 127.5], "std": [127.5, 127.5, 127.5],
        "weights": "backbone.safetensors", "weights_bytes": weights.len(),
        "weights_sha256": sha, "source_step": 0
    });
    std::fs::write(dir.join("model.json"), json.to_string()).unwrap();
    let exported = load_exported(&dir).unwrap();
    assert!(
        exported
            .tensors
            .iter()
            .all(|t| !t.name.contains("num_batches"))
    );
    assert_eq!(exported.preprocessing_source, PreprocessingSource::PlscRs);
    let with_counters = safetensors::SafeTensors::deserialize(&weights)
        .unwrap()
        .len();
    assert!(exported.tensors.len() < with_counters);
}
