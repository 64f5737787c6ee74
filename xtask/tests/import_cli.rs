//! `xtask import arcface-torch` as a user runs it: PyTorch's `backbone.pth` (the committed
//! fixture, crates/plsc-models/tests/fixtures/arcface_torch) becomes a model directory that
//! `xtask serve` serves as is, with PyTorch's embeddings of the committed images (within
//! 1e-4 of their norm); a wrong `--arch` fails naming the file and the likely `--arch`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/plsc-models/tests/fixtures/arcface_torch")
        .join(name)
}

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn imported_pth_serves_pytorchs_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let out = xtask()
        .args(["import", "arcface-torch", "--pth"])
        .arg(fixture("backbone.pth"))
        .args(["--arch", "iresnet_nano", "--input-size", "56", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("iresnet_nano") && stdout.contains("(x - 127.5) / 127.5"),
        "{stdout}"
    );

    let server = common::ServeProcess::start(&model);
    let reference: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("embeddings.json")).unwrap()).unwrap();
    let images: Vec<PathBuf> = reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| fixture(n.as_str().unwrap()))
        .collect();
    let encoded = xtask()
        .args(["encode", "--server", &server.addr])
        .args(&images)
        .output()
        .unwrap();
    drop(server);
    assert!(
        encoded.status.success(),
        "{}",
        String::from_utf8_lossy(&encoded.stderr)
    );
    let want: Vec<Vec<f64>> = serde_json::from_value(reference["embeddings"].clone()).unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(encoded.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), want.len());
    for (line, want) in lines.iter().zip(&want) {
        let got: Vec<f64> = serde_json::from_value(line["embedding"].clone()).unwrap();
        let diff: f64 = got.iter().zip(want).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f64 = want.iter().map(|b| b * b).sum();
        let rel = (diff / norm).sqrt();
        assert!(rel < 1e-4, "{}: relative error {rel:e}", line["image"]);
    }
}

#[test]
fn a_wrong_arch_names_the_file_and_the_likely_arch() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    let out = xtask()
        .args(["import", "arcface-torch", "--pth"])
        .arg(fixture("backbone.pth"))
        .args(["--arch", "r50", "--out"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("backbone.pth") && err.contains("--arch iresnet_nano --embedding-size 16"),
        "{err}"
    );
    assert!(!model.exists());
}
