//! `xtask head-check` end to end: a file written here, the binary on 3 rank threads, the
//! outputs against the float64 reference; and its errors on bad input.

use plsc_core::reference::head_reference;
use plsc_core::{LossConfig, init};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, dt, shape, data)| {
            (
                n.to_string(),
                TensorView::new(*dt, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
}

fn f64s(st: &SafeTensors<'_>, name: &str) -> Vec<f64> {
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn head_check_matches_the_reference_over_three_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let (b, c, d) = (7, 11, 6);
    let features: Vec<f64> = (0..b * d)
        .map(|i| ((i * 7 % 13) as f64 - 6.0) * 0.3)
        .collect();
    let labels: Vec<i64> = (0..b as i64).map(|i| (i * 5) % c as i64).collect();
    let mut weight = vec![0.0f64; c * d];
    init::init_rows(3, 0, d, &mut weight);
    let input = dir.path().join("in.safetensors");
    write(
        &input,
        &[
            (
                "features",
                Dtype::F64,
                vec![b, d],
                features.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                "labels",
                Dtype::I64,
                vec![b],
                labels.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                "weight",
                Dtype::F64,
                vec![c, d],
                weight.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ],
    );
    for loss in ["dist_arcface", "cosface", "dist_combined"] {
        let output = dir.path().join(format!("{loss}.safetensors"));
        let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args([
                "head-check",
                "--ranks",
                "3",
                "--loss",
                loss,
                "--m3",
                "0.1",
                "--chunk",
                "2",
            ])
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&output)
            .status()
            .unwrap();
        assert!(status.success(), "{loss}");
        let bytes = std::fs::read(&output).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut cfg: LossConfig = loss.parse().unwrap();
        if let plsc_core::LossKind::Margin(m) = &mut cfg.kind {
            m.m3 = 0.1;
        }
        let r = head_reference(&cfg.kind, &features, &labels, &weight, None, d, None);
        assert!(
            (f64s(&st, "loss")[0] - r.loss).abs() < 1e-10 * r.loss,
            "{loss}"
        );
        for (name, expect) in [
            ("grad_features", &r.grad_features),
            ("grad_weight", &r.grad_weight),
        ] {
            let got = f64s(&st, name);
            let err = got
                .iter()
                .zip(expect.iter())
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(err < 1e-10, "{loss} {name}: {err}");
        }
    }
}

#[test]
fn head_check_names_a_missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write(&input, &[("features", Dtype::F32, vec![1, 2], vec![0; 8])]);
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["head-check", "--output", "x.safetensors", "--input"])
        .arg(&input)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in.safetensors") && stderr.contains("tensor `labels` is missing"),
        "{stderr}"
    );
}
