//! Verification metrics against hand-computed values and against InsightFace's NumPy code.

use plsc_eval::metrics::{first_argmax, kfold_ranges, trapezoid_auc};
use plsc_eval::{EvalError, VerifyConfig, verify_embeddings};

/// Two rows whose normalised squared distance is `d`: (1, 0) and (cos t, sin t) with
/// 2 - 2 cos t = d, scaled to norms 2 and 4 (so normalisation matters and XNorm is 3).
fn pair_at(d: f64) -> [f32; 4] {
    let c = 1.0 - d / 2.0;
    let s = (1.0 - c * c).sqrt();
    [2.0, 0.0, (4.0 * c) as f32, (4.0 * s) as f32]
}

/// 20 pairs, fold f = pairs 2f (same) and 2f + 1 (different). Same pairs sit at distance 0.5055,
/// different ones at 2.5055, except a hard different pair in fold 4 (1.0055) and a hard same pair
/// in fold 9 (1.5055). All distances lie between grid points of both threshold grids.
fn hand_made() -> (Vec<f32>, Vec<bool>) {
    let mut rows = Vec::new();
    let mut issame = Vec::new();
    for f in 0..10 {
        let same = if f == 9 { 1.5055 } else { 0.5055 };
        let diff = if f == 4 { 1.0055 } else { 2.5055 };
        rows.extend_from_slice(&pair_at(same));
        issame.push(true);
        rows.extend_from_slice(&pair_at(diff));
        issame.push(false);
    }
    (rows, issame)
}

#[test]
fn hand_made_pairs_give_the_hand_computed_figures() {
    let (rows, issame) = hand_made();
    let v = verify_embeddings(&rows, 2, &issame, &VerifyConfig::default(), "hand-made").unwrap();
    let m = &v.metrics;

    // Accuracy, worked by hand. A fold's training set has 9 same and 9 different pairs.
    // * Folds other than 4 and 9: same = 8 x 0.5055 + 1.5055, different = 8 x 2.5055 + 1.0055.
    //   Training accuracy is 17/18 for 0.5055 < t <= 1.0055 and again for 1.5055 < t <= 2.5055
    //   (16/18 between, 9/18 outside). The FIRST maximum is t = 0.51; the test fold (0.5055 same,
    //   2.5055 different) is then classified right: accuracy 1.
    // * Fold 4: training different pairs are all 2.5055, so 18/18 first at t = 1.51; its test
    //   different pair (1.0055) is accepted: accuracy 1/2.
    // * Fold 9: training same pairs are all 0.5055, 18/18 first at t = 0.51; its test same pair
    //   (1.5055) is rejected: accuracy 1/2.
    let expected_acc = [1.0, 1.0, 1.0, 1.0, 0.5, 1.0, 1.0, 1.0, 1.0, 0.5];
    assert_eq!(m.fold_accuracies, expected_acc);
    for (f, &t) in m.best_thresholds.iter().enumerate() {
        let want = if f == 4 { 1.51 } else { 0.51 };
        assert!(
            (t - want).abs() < 1e-12,
            "fold {f}: threshold {t}, want {want}"
        );
    }
    // mean 0.9; std = sqrt((8 x 0.1^2 + 2 x 0.4^2) / 10) = sqrt(0.04) = 0.2.
    assert!((m.accuracy_mean - 0.9).abs() < 1e-12);
    assert!((m.accuracy_std - 0.2).abs() < 1e-12);

    // TAR at FAR = 1e-3, by hand. Training FAR is a multiple of 1/9.
    // * Folds other than 4: FAR is 0 up to t = 1.005 (grid 0.001) and 1/9 from t = 1.006, so
    //   interp1d gives 1.005 + (1e-3 / (1/9)) x 0.001 = 1.005009. Test same pairs at 0.5055 are
    //   accepted (TAR 1), except fold 9's 1.5055 (TAR 0); test different pairs at 2.5055 are not
    //   (FAR 0).
    // * Fold 4: FAR is 0 up to 2.505 and 1 from 2.506: threshold 2.505 + 1e-3 x 0.001 = 2.505001.
    //   Its test different pair (1.0055) is accepted: FAR 1; TAR 1.
    for (f, &t) in m.tar_thresholds.iter().enumerate() {
        let want = if f == 4 { 2.505001 } else { 1.005009 };
        assert!(
            (t - want).abs() < 1e-9,
            "fold {f}: threshold {t}, want {want}"
        );
    }
    // TAR mean 0.9, std sqrt((9 x 0.01 + 0.81) / 10) = 0.3; FAR mean 1/10.
    assert!((m.tar_mean - 0.9).abs() < 1e-12);
    assert!((m.tar_std - 0.3).abs() < 1e-12);
    assert!((m.far_mean - 0.1).abs() < 1e-12);
    assert_eq!(m.far_target, 1e-3);

    // ROC at t = 1.01 (index 101): every test fold is (same, different). TPR: 9 folds accept
    // their same pair, fold 9 does not -> 0.9. FPR: only fold 4's different pair -> 0.1.
    assert!((m.roc.thresholds[101] - 1.01).abs() < 1e-12);
    assert!((m.roc.tpr[101] - 0.9).abs() < 1e-12);
    assert!((m.roc.fpr[101] - 0.1).abs() < 1e-12);
    assert_eq!(m.roc.thresholds.len(), 400);
    // The averaged curve, by hand: (0, 0) up to t = 0.50; (0, 0.9) for 0.51..=1.00; (0.1, 0.9)
    // for 1.01..=1.50; (0.1, 1) for 1.51..=2.50; (1, 1) from 2.51. Area: 0.1 x 0.9 + 0.9 x 1
    // = 0.99, which is also the share of (same, different) pairs ordered right: 99 of 100.
    assert!((m.roc.auc - 0.99).abs() < 1e-12, "auc {}", m.roc.auc);

    // XNorm: rows alternate norms 2 and 4.
    assert!((v.xnorm - 3.0).abs() < 1e-6, "xnorm {}", v.xnorm);
}

/// With one fold, the ROC is the curve over all pairs: each point worked out by hand.
#[test]
fn one_fold_roc_is_the_curve_over_all_pairs() {
    // Same pairs at 0.3055 and 1.2055, different pairs at 0.8055, 2.1055 and 3.5055.
    let dists = [
        (0.3055, true),
        (0.8055, false),
        (1.2055, true),
        (2.1055, false),
        (3.5055, false),
    ];
    let rows: Vec<f32> = dists.iter().flat_map(|&(d, _)| pair_at(d)).collect();
    let issame: Vec<bool> = dists.iter().map(|&(_, s)| s).collect();
    let config = VerifyConfig {
        folds: 1,
        ..VerifyConfig::default()
    };
    let roc = verify_embeddings(&rows, 2, &issame, &config, "tiny")
        .unwrap()
        .metrics
        .roc;
    assert_eq!(roc.thresholds.len(), 400);
    assert_eq!((roc.tpr.len(), roc.fpr.len()), (400, 400));
    // "Same" means distance < t. Index i is t = i / 100.
    // (first index, last index, TPR, FPR)
    let pieces = [
        (0, 30, 0.0, 0.0),          // t <= 0.30: nothing accepted
        (31, 80, 0.5, 0.0),         // 0.31..=0.80: the 0.3055 same pair
        (81, 120, 0.5, 1.0 / 3.0),  // 0.81..=1.20: + the 0.8055 different pair
        (121, 210, 1.0, 1.0 / 3.0), // 1.21..=2.10: + the 1.2055 same pair
        (211, 350, 1.0, 2.0 / 3.0), // 2.11..=3.50: + the 2.1055 different pair
        (351, 399, 1.0, 1.0),       // 3.51..=3.99: everything
    ];
    for (first, last, tpr, fpr) in pieces {
        for i in first..=last {
            assert!(
                (roc.tpr[i] - tpr).abs() < 1e-12 && (roc.fpr[i] - fpr).abs() < 1e-12,
                "t = {}: (tpr, fpr) = ({}, {}), want ({tpr}, {fpr})",
                roc.thresholds[i],
                roc.tpr[i],
                roc.fpr[i]
            );
        }
    }
    // Area: 1/3 x 0.5 (FPR 0 -> 1/3 at TPR 0.5) + 2/3 x 1 (FPR 1/3 -> 1 at TPR 1) = 5/6, the
    // share of (same, different) pairs in the right order: 0.3055 beats all 3, 1.2055 beats 2.
    assert!((roc.auc - 5.0 / 6.0).abs() < 1e-12, "auc {}", roc.auc);
}

#[test]
fn auc_of_perfect_reversed_and_chance_curves() {
    // Perfect: straight up to TPR 1 at FPR 0.
    assert_eq!(trapezoid_auc(&[0.0, 0.0, 1.0], &[0.0, 1.0, 1.0]), 1.0);
    // Reversed: every different pair first, then the same ones.
    assert_eq!(trapezoid_auc(&[0.0, 1.0, 1.0], &[0.0, 0.0, 1.0]), 0.0);
    // Chance: the diagonal, given out of order (sorted by FPR first).
    assert_eq!(trapezoid_auc(&[0.5, 0.25, 0.75], &[0.5, 0.25, 0.75]), 0.5);
    // One point (0.5, 1) closed by (0, 0) and (1, 1): 0.5 x 0.5 + 0.5 x 1 = 0.75.
    assert_eq!(trapezoid_auc(&[0.5], &[1.0]), 0.75);
    // No points: the diagonal from the closing ends.
    assert_eq!(trapezoid_auc(&[], &[]), 0.5);
}

#[test]
fn fold_sizes_follow_sklearn_kfold() {
    let f = kfold_ranges(6000, 10).unwrap();
    assert!(f.iter().all(|r| r.len() == 600));
    assert_eq!(f[9], 5400..6000);

    let f = kfold_ranges(7001, 10).unwrap();
    let sizes: Vec<usize> = f.iter().map(|r| r.len()).collect();
    assert_eq!(sizes, [701, 700, 700, 700, 700, 700, 700, 700, 700, 700]);
    assert_eq!(f[1], 701..1401);
    assert_eq!(f[9].end, 7001);

    let sizes: Vec<usize> = kfold_ranges(7007, 10)
        .unwrap()
        .iter()
        .map(|r| r.len())
        .collect();
    assert_eq!(sizes, [701, 701, 701, 701, 701, 701, 701, 700, 700, 700]);

    assert!(matches!(
        kfold_ranges(9, 10),
        Err(EvalError::TooFewPairs {
            pairs: 9,
            folds: 10
        })
    ));
}

#[test]
fn argmax_takes_the_first_maximum() {
    assert_eq!(first_argmax(&[0.5, 0.9, 0.7, 0.9, 0.9]), 1);
    assert_eq!(first_argmax(&[1.0, 1.0]), 0);
    assert_eq!(first_argmax(&[0.1, 0.2, 0.3]), 2);
}

/// splitmix64, the generator of the Python reference below.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn int_in(seed: u64, lo: i64, hi: i64) -> i64 {
    lo + (splitmix(seed) % (hi - lo + 1) as u64) as i64
}

/// 605 pairs of 16-d embeddings built from integers (k / 64, exact in f32 and f64).
fn generated() -> (Vec<f32>, Vec<bool>) {
    let (p_count, d) = (605u64, 16u64);
    let mut rows = vec![0.0f32; (2 * p_count * d) as usize];
    let mut issame = Vec::new();
    for p in 0..p_count {
        let same = splitmix(p * 7 + 3).is_multiple_of(2);
        issame.push(same);
        for j in 0..d {
            let b = int_in(p * 1000 + j, -64, 64);
            let o = if same {
                b + int_in(p * 1000 + j + 500_000, -90, 90)
            } else {
                int_in(p * 1000 + j + 900_000, -64, 64)
            };
            rows[(2 * p * d + j) as usize] = b as f32 / 64.0;
            rows[((2 * p + 1) * d + j) as usize] = o as f32 / 64.0;
        }
    }
    (rows, issame)
}

/// Cross-check against InsightFace's own steps. The expected figures were printed by Python
/// (numpy 2.4.6, scikit-learn 1.9.1, scipy 1.17.1), never by this crate: a script that builds the
/// same embeddings with the same splitmix64 integers, L2-normalises them with
/// `sklearn.preprocessing.normalize`, computes XNorm with `np.linalg.norm`, and runs
/// verbatim copies of `calculate_roc`, `calculate_accuracy`, `calculate_val` and
/// `calculate_val_far` from insightface/recognition/arcface_torch/eval/verification.py with
/// scikit-learn's KFold. SciPy >= 1.9 rejects repeated x in `interp1d(kind='slinear')` (always the
/// case for a FAR curve), so the script replaced `interpolate.interp1d` by what SciPy <= 1.8 built
/// for it: a stable sort, then `BSpline.construct_fast(np.r_[x[0], x, x[-1]], y, k=1)`.
#[test]
fn matches_insightface_numpy_reference() {
    let (rows, issame) = generated();
    assert_eq!(issame.iter().filter(|&&s| s).count(), 317); // Python: issame_true 317
    let v = verify_embeddings(&rows, 16, &issame, &VerifyConfig::default(), "generated").unwrap();
    let m = &v.metrics;
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-12, "{what}: {a} vs {b}");

    let fold_acc = [
        0.9344262295081968,
        0.9508196721311475,
        0.9508196721311475,
        0.9344262295081968,
        0.9180327868852459,
        0.9333333333333333,
        0.95,
        0.9,
        0.9166666666666666,
        0.9833333333333333,
    ];
    for (f, (&a, &b)) in m.fold_accuracies.iter().zip(&fold_acc).enumerate() {
        close(a, b, &format!("fold {f} accuracy"));
    }
    let best = [1.26, 1.41, 1.37, 1.37, 1.26, 1.37, 1.37, 1.37, 1.41, 1.26];
    for (f, (&a, &b)) in m.best_thresholds.iter().zip(&best).enumerate() {
        close(a, b, &format!("fold {f} threshold"));
    }
    close(m.accuracy_mean, 0.9371857923497267, "accuracy mean");
    close(m.accuracy_std, 0.022059673426297072, "accuracy std");

    let tar_thresholds = [
        0.835262,
        0.8352519999999999,
        0.835264,
        0.8352569999999999,
        0.835264,
        0.835259,
        0.835256,
        0.83526,
        0.959258,
        0.83526,
    ];
    for (f, (&a, &b)) in m.tar_thresholds.iter().zip(&tar_thresholds).enumerate() {
        close(a, b, &format!("fold {f} TAR threshold"));
    }
    close(m.tar_mean, 0.6018067214680117, "TAR mean");
    close(m.tar_std, 0.09428891229928918, "TAR std");
    close(m.far_mean, 0.006666666666666666, "FAR mean");
    close(v.xnorm, 2.762414859815224, "XNorm");

    close(m.roc.tpr[100], 0.7497835035496326, "tpr[100]");
    close(m.roc.fpr[100], 0.010238095238095237, "fpr[100]");
    close(m.roc.tpr[126], 0.929695328392909, "tpr[126]");
    close(m.roc.fpr[126], 0.03308121237000547, "fpr[126]");
    close(m.roc.tpr[150], 0.9877734877734877, "tpr[150]");
    close(m.roc.fpr[150], 0.1218296606526584, "fpr[150]");
    let (tpr_sum, fpr_sum): (f64, f64) = (m.roc.tpr.iter().sum(), m.roc.fpr.iter().sum());
    assert!(
        (tpr_sum - 317.29103506040605).abs() < 1e-9,
        "tpr sum {tpr_sum}"
    );
    assert!(
        (fpr_sum - 196.93546470708876).abs() < 1e-9,
        "fpr sum {fpr_sum}"
    );
}

#[test]
fn bad_inputs_are_named_errors() {
    let (rows, issame) = hand_made();
    // 40 rows but 19 labels.
    let err =
        verify_embeddings(&rows, 2, &issame[..19], &VerifyConfig::default(), "e.st").unwrap_err();
    assert!(matches!(
        err,
        EvalError::PairCountMismatch {
            images: 40,
            labels: 19,
            ..
        }
    ));
    assert!(err.to_string().contains("e.st"), "{err}");

    // Values that do not make rows.
    let err =
        verify_embeddings(&rows[..79], 2, &issame, &VerifyConfig::default(), "x").unwrap_err();
    assert!(matches!(err, EvalError::EmbeddingShape { len: 79, dim: 2 }));

    // A NaN in row 5.
    let mut bad = rows.clone();
    bad[11] = f32::NAN;
    let err = verify_embeddings(&bad, 2, &issame, &VerifyConfig::default(), "x").unwrap_err();
    assert!(matches!(err, EvalError::NonFinite { row: 5 }));

    // Only same pairs: FAR is undefined (InsightFace divides by zero).
    let all_same = vec![true; 20];
    let err = verify_embeddings(&rows, 2, &all_same, &VerifyConfig::default(), "x").unwrap_err();
    assert!(matches!(
        err,
        EvalError::DegenerateFold {
            fold: 0,
            part: "training",
            kind: "different"
        }
    ));

    // Fewer pairs than folds.
    let err =
        verify_embeddings(&rows[..16], 2, &issame[..4], &VerifyConfig::default(), "x").unwrap_err();
    assert!(matches!(
        err,
        EvalError::TooFewPairs {
            pairs: 4,
            folds: 10
        }
    ));
}

/// The JSON form (`xtask eval --json`) uses the run records' names (`accuracy`, `tar`, `far`,
/// `auc` at the top, `roc` holding the curve), reads back equal, and still reads the older names
/// (`accuracy_mean`, `tar_mean`, `far_target`, `roc.auc`).
#[test]
fn json_uses_the_record_names_and_reads_the_older_ones() {
    let (rows, issame) = hand_made();
    let v = verify_embeddings(&rows, 2, &issame, &VerifyConfig::default(), "hand-made").unwrap();
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["accuracy"], v.metrics.accuracy_mean);
    assert_eq!(json["tar"], v.metrics.tar_mean);
    assert_eq!(json["far"], 1e-3);
    assert_eq!(json["far_mean"], v.metrics.far_mean);
    assert_eq!(json["auc"], v.metrics.roc.auc);
    assert_eq!(json["xnorm"], v.xnorm);
    assert_eq!(json["roc"]["fpr"].as_array().unwrap().len(), 400);
    for old in ["accuracy_mean", "tar_mean", "far_target"] {
        assert!(json.get(old).is_none(), "{old}");
    }
    assert!(json["roc"].get("auc").is_none());
    let back: plsc_eval::Verification = serde_json::from_value(json.clone()).unwrap();
    assert_eq!(back, v);

    let mut old = json;
    let o = old.as_object_mut().unwrap();
    for (new, was) in [
        ("accuracy", "accuracy_mean"),
        ("tar", "tar_mean"),
        ("far", "far_target"),
    ] {
        let value = o.remove(new).unwrap();
        o.insert(was.into(), value);
    }
    let auc = o.remove("auc").unwrap();
    o["roc"]["auc"] = auc;
    let back: plsc_eval::Verification = serde_json::from_value(old).unwrap();
    assert_eq!(back, v);
}
