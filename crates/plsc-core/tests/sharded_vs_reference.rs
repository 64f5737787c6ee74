//! The sharded head over N rank threads against the single-rank float64 reference.

mod common;

use common::*;
use plsc_core::{HeadConfig, LossConfig, LossKind, MarginParams};

fn losses() -> Vec<(&'static str, LossConfig)> {
    let mut filtered = MarginParams::arcface();
    filtered.interclass_filter = Some(0.05);
    let mut easy = MarginParams::new(1.0, 0.3, 0.0, 16.0);
    easy.easy_margin = true;
    let sharded = |kind| LossConfig {
        kind,
        sharded: true,
    };
    vec![
        ("dist_softmax", sharded(LossKind::Softmax)),
        (
            "dist_arcface",
            sharded(LossKind::Margin(MarginParams::arcface())),
        ),
        (
            "dist_cosface",
            sharded(LossKind::Margin(MarginParams::cosface())),
        ),
        (
            "dist_sphereface",
            sharded(LossKind::Margin(MarginParams::sphereface())),
        ),
        (
            "combined",
            sharded(LossKind::Margin(MarginParams::new(1.1, 0.2, 0.1, 30.0))),
        ),
        ("filtered", sharded(LossKind::Margin(filtered))),
        ("easy_margin", sharded(LossKind::Margin(easy))),
    ]
}

fn check(
    p: &Problem,
    loss: LossConfig,
    n: usize,
    chunk: Option<usize>,
    f32_path: bool,
    name: &str,
) {
    let config = HeadConfig::new(p.classes, p.dim)
        .with_loss(loss)
        .with_seed(3)
        .with_chunk_size(chunk);
    let reference = full_reference(p, &loss.kind);
    let ranks = if f32_path {
        run_sharded::<f32>(p, &config, n, &p.weight)
    } else {
        run_sharded::<f64>(p, &config, n, &p.weight)
    }
    .unwrap();
    let tol = if f32_path { 1e-5 } else { 1e-10 };
    for r in &ranks {
        let e = ((r.loss - reference.loss) / reference.loss).abs();
        assert!(
            e < tol,
            "{name} n={n} chunk={chunk:?}: loss {} vs {} ({e})",
            r.loss,
            reference.loss
        );
    }
    let gx = concat(ranks.iter().map(|r| r.grad_features.clone()));
    let gw = concat(ranks.iter().map(|r| r.grad_weight.clone()));
    let ex = rel_err(&gx, &reference.grad_features);
    let ew = rel_err(&gw, &reference.grad_weight);
    assert!(
        ex < tol,
        "{name} n={n} chunk={chunk:?}: grad_features rel err {ex}"
    );
    assert!(
        ew < tol,
        "{name} n={n} chunk={chunk:?}: grad_weight rel err {ew}"
    );
    if let Some(gb_ref) = &reference.grad_bias {
        let gb = concat(ranks.iter().map(|r| r.grad_bias.clone().unwrap()));
        assert!(rel_err(&gb, gb_ref) < tol, "{name}: grad_bias");
    }
}

#[test]
fn every_loss_on_1_to_4_ranks_matches_the_f64_reference() {
    // C = 23 is not divisible by 2, 3 or 4: uneven shards.
    let p = problem(12, 23, 16, 1);
    for (name, loss) in losses() {
        for n in 1..=4 {
            check(&p, loss, n, None, false, name);
            check(&p, loss, n, None, true, name);
        }
    }
}

#[test]
fn chunk_sizes_1_7_and_whole_shard_agree() {
    let p = problem(10, 29, 12, 2);
    for (name, loss) in losses() {
        for n in [1, 3] {
            for chunk in [Some(1), Some(7), Some(29), None] {
                check(&p, loss, n, chunk, false, name);
            }
        }
    }
}

#[test]
fn uneven_rows_per_rank_are_gathered_in_rank_order() {
    // 11 rows over 3 ranks: 3, 4, 4.
    let p = problem(11, 17, 8, 4);
    check(
        &p,
        LossConfig::dist_arcface(),
        3,
        Some(5),
        false,
        "uneven rows",
    );
}

#[test]
fn many_tiles_per_worker_on_both_paths() {
    // 1500 classes: several 256-wide tiles per worker, kept (materialised) or recomputed.
    let p = problem(9, 1500, 8, 5);
    for (name, loss) in losses() {
        for n in [1, 2] {
            for chunk in [None, Some(100)] {
                check(&p, loss, n, chunk, false, name);
            }
        }
    }
}
