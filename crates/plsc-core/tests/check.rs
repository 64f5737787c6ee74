//! `check::check_head` (what `xtask head-check` runs): the distributed step on 1 to 4 rank
//! threads against the float64 single-rank reference, and its shape errors.

use plsc_core::check::{CheckInputs, check_head};
use plsc_core::reference::head_reference;
use plsc_core::{HeadConfig, HeadError, LossConfig, init};

fn inputs() -> CheckInputs {
    let (rows, classes, dim) = (7, 11, 6);
    let mut weight = vec![0.0f64; classes * dim];
    init::init_rows(3, 0, dim, &mut weight);
    CheckInputs {
        rows,
        dim,
        classes,
        features: (0..rows * dim)
            .map(|i| ((i * 7 % 13) as f64 - 6.0) * 0.3)
            .collect(),
        labels: (0..rows as i64).map(|i| (i * 5) % classes as i64).collect(),
        weight,
        bias: None,
    }
}

fn max_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn every_rank_count_matches_the_reference() {
    let inp = inputs();
    for loss in ["dist_arcface", "cosface", "dist_combined"] {
        let cfg: LossConfig = loss.parse().unwrap();
        let config = HeadConfig::new(inp.classes, inp.dim)
            .with_loss(cfg)
            .with_chunk_size(Some(2));
        let r = head_reference(
            &cfg.kind,
            &inp.features,
            &inp.labels,
            &inp.weight,
            None,
            inp.dim,
            None,
        );
        for ranks in 1..=4 {
            let out = check_head::<f64>(&inp, &config, ranks).unwrap();
            assert!((out.loss - r.loss).abs() < 1e-10 * r.loss, "{loss} {ranks}");
            let gf = max_diff(&out.grad_features, &r.grad_features);
            let gw = max_diff(&out.grad_weight, &r.grad_weight);
            assert!(gf < 1e-10 && gw < 1e-10, "{loss} on {ranks}: {gf} {gw}");
            assert!(out.grad_bias.is_none());
        }
    }
}

#[test]
fn inconsistent_inputs_are_named() {
    let mut inp = inputs();
    inp.weight.pop();
    let config = HeadConfig::new(inp.classes, inp.dim);
    match check_head::<f64>(&inp, &config, 2).unwrap_err() {
        HeadError::Shape {
            tensor, expected, ..
        } => assert_eq!((tensor, expected), ("weight", vec![11, 6])),
        other => panic!("expected a shape error, got {other}"),
    }
}
