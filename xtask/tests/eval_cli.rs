//! `xtask eval --embeddings E.safetensors --issame I.json [--json]` on hand-made embeddings.

use std::process::Command;

/// 20 pairs (see plsc-eval's tests/metrics.rs, where the figures are worked by hand): same pairs
/// at squared distance 0.5055, different ones at 2.5055, a hard different pair in fold 4 (1.0055)
/// and a hard same pair in fold 9 (1.5055); rows alternate norms 2 and 4. Accuracy 0.9 +- 0.2,
/// TAR@FAR=1e-3 0.9 +- 0.3, FAR 0.1, XNorm 3.
fn write_inputs(dir: &std::path::Path, labels: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let pair_at = |d: f64| {
        let c = 1.0 - d / 2.0;
        let s = (1.0 - c * c).sqrt();
        [2.0, 0.0, (4.0 * c) as f32, (4.0 * s) as f32]
    };
    let mut rows = Vec::new();
    let mut issame = Vec::new();
    for f in 0..10 {
        rows.extend(pair_at(if f == 9 { 1.5055 } else { 0.5055 }));
        issame.push(true);
        rows.extend(pair_at(if f == 4 { 1.0055 } else { 2.5055 }));
        issame.push(false);
    }
    let e = dir.join("emb.safetensors");
    let i = dir.join("issame.json");
    plsc_eval::write_embeddings(&e, &rows, 2).unwrap();
    plsc_eval::write_issame(&i, &issame[..labels]).unwrap();
    (e, i)
}

fn xtask(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("eval")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn eval_prints_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (e, i) = write_inputs(dir.path(), 20);
    let base = [
        "--embeddings".as_ref(),
        e.as_os_str(),
        "--issame".as_ref(),
        i.as_os_str(),
    ];

    let out = xtask(&base);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("20 pairs, 10 folds"), "{text}");
    assert!(text.contains("Accuracy: 0.90000+-0.20000"), "{text}");
    assert!(text.contains("TAR@FAR=1e-3: 0.90000+-0.30000"), "{text}");
    assert!(text.contains("XNorm: 3.0000"), "{text}");

    let mut args = base.to_vec();
    args.push("--json".as_ref());
    let out = xtask(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let num = |k: &str| {
        doc[k]
            .as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {doc}"))
    };
    assert!((num("accuracy_mean") - 0.9).abs() < 1e-12);
    assert!((num("accuracy_std") - 0.2).abs() < 1e-12);
    assert!((num("tar_mean") - 0.9).abs() < 1e-12);
    assert!((num("tar_std") - 0.3).abs() < 1e-12);
    assert!((num("far_mean") - 0.1).abs() < 1e-12);
    assert!((num("xnorm") - 3.0).abs() < 1e-6);
    assert_eq!(doc["pairs"], 20);
    assert_eq!(doc["roc"]["tpr"].as_array().unwrap().len(), 400);
}

#[test]
fn eval_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let (e, i) = write_inputs(dir.path(), 19);
    let out = xtask(&[
        "--embeddings".as_ref(),
        e.as_os_str(),
        "--issame".as_ref(),
        i.as_os_str(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("emb.safetensors"), "{err}");
    assert!(err.contains("19 labels"), "{err}");
}
