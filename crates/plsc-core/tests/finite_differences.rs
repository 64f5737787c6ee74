//! Each loss's gradient (as the sharded head computes it, in f64) against central finite
//! differences of the loss itself.

mod common;

use common::*;
use plsc_core::{HeadConfig, LossConfig, LossKind, MarginParams};

fn loss_at(p: &Problem, config: &HeadConfig, features: &[f64], weight: &[f64]) -> f64 {
    let q = Problem {
        features: features.to_vec(),
        labels: p.labels.clone(),
        weight: weight.to_vec(),
        dim: p.dim,
        classes: p.classes,
    };
    run_sharded::<f64>(&q, config, 2, weight).unwrap()[0].loss
}

#[test]
fn gradients_match_central_differences() {
    let kinds = [
        LossKind::Softmax,
        LossKind::Margin(MarginParams::arcface()),
        LossKind::Margin(MarginParams::cosface()),
        LossKind::Margin(MarginParams::sphereface()),
        LossKind::Margin(MarginParams::new(1.2, 0.3, 0.15, 20.0)),
    ];
    let p = problem(6, 9, 5, 11);
    for kind in kinds {
        let config = HeadConfig::new(p.classes, p.dim).with_loss(LossConfig {
            kind,
            sharded: true,
        });
        let ranks = run_sharded::<f64>(&p, &config, 2, &p.weight).unwrap();
        let gx = concat(ranks.iter().map(|r| r.grad_features.clone()));
        let gw = concat(ranks.iter().map(|r| r.grad_weight.clone()));
        let h = 1e-6;
        for idx in (0..p.features.len()).step_by(3) {
            let (mut plus, mut minus) = (p.features.clone(), p.features.clone());
            plus[idx] += h;
            minus[idx] -= h;
            let fd = (loss_at(&p, &config, &plus, &p.weight)
                - loss_at(&p, &config, &minus, &p.weight))
                / (2.0 * h);
            assert!(
                (fd - gx[idx]).abs() < 1e-6 * (1.0 + fd.abs()),
                "{kind:?} d/dx[{idx}]: fd {fd} vs {}",
                gx[idx]
            );
        }
        for idx in (0..p.weight.len()).step_by(4) {
            let (mut plus, mut minus) = (p.weight.clone(), p.weight.clone());
            plus[idx] += h * 0.01;
            minus[idx] -= h * 0.01;
            let fd = (loss_at(&p, &config, &p.features, &plus)
                - loss_at(&p, &config, &p.features, &minus))
                / (2.0 * h * 0.01);
            assert!(
                (fd - gw[idx]).abs() < 1e-5 * (1.0 + fd.abs()),
                "{kind:?} d/dw[{idx}]: fd {fd} vs {}",
                gw[idx]
            );
        }
    }
}
