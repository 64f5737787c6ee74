//! Verification metrics, step for step as InsightFace's `eval/verification.py` computes them.
//!
//! * Pairs are consecutive rows: pair `i` is rows `2i` and `2i + 1`.
//! * Distance: squared L2 distance of the L2-normalised embeddings (float64).
//! * Folds: scikit-learn's `KFold(n_splits, shuffle=False)`: contiguous test folds, the first
//!   `P mod n_splits` one pair larger; the training set of a fold is every other pair.
//! * Accuracy (`calculate_roc`): on the training pairs of each fold, the accuracy of
//!   "same if distance < t" for every threshold `t` in `np.arange(0, 4, 0.01)`; the best threshold
//!   is the *first* maximum (`np.argmax`); the fold's accuracy is measured with it on the test
//!   pairs. TPR and FPR of every threshold on the test pairs, averaged over folds, make the ROC;
//!   its area ([`trapezoid_auc`]) is reported with it.
//! * TAR at FAR (`calculate_val`): on the training pairs, the FAR of every threshold in
//!   `np.arange(0, 4, 0.001)`; if the largest FAR reaches the target, the threshold is
//!   `interp1d(far_train, thresholds, kind='slinear')(far_target)` (see
//!   [`crate::numeric::slinear_interp`]), otherwise 0; TAR and FAR are then measured on the test
//!   pairs. Mean and population standard deviation over folds.
//!
//! Where InsightFace would divide by zero (a fold without same or without different pairs in
//! `calculate_val`) we return [`EvalError::DegenerateFold`]; where it would silently use fewer
//! pairs than labels we return an error instead.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::numeric::{arange, np_mean, np_mean_axis0, np_std, np_sum, slinear_interp};

/// The FAR at which InsightFace reports TAR ("VAL").
pub const DEFAULT_FAR_TARGET: f64 = 1e-3;
/// InsightFace's and the papers' fold count.
pub const DEFAULT_FOLDS: usize = 10;

/// Settings of a verification run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VerifyConfig {
    /// Number of folds (InsightFace: 10). 1 means train = test = all pairs, as InsightFace's
    /// `LFold` does.
    pub folds: usize,
    /// FAR at which TAR is reported (InsightFace: 1e-3).
    pub far_target: f64,
}

impl Default for VerifyConfig {
    fn default() -> Self {
        Self {
            folds: DEFAULT_FOLDS,
            far_target: DEFAULT_FAR_TARGET,
        }
    }
}

/// ROC data: TPR and FPR of each threshold on the test folds, averaged over folds (InsightFace's
/// `calculate_roc`), and the area under that curve. With one fold, the test pairs are all pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Roc {
    /// The thresholds, `np.arange(0, 4, 0.01)`.
    pub thresholds: Vec<f64>,
    /// True positive rate per threshold.
    pub tpr: Vec<f64>,
    /// False positive rate per threshold.
    pub fpr: Vec<f64>,
    /// Area under the curve ([`trapezoid_auc`] of `fpr`, `tpr`).
    pub auc: f64,
}

/// Area under an ROC curve by the trapezoidal rule (scikit-learn's `auc`) over the points
/// `(fpr[i], tpr[i])` sorted by FPR (then TPR), closed by `(0, 0)` ("accept nothing") at the
/// start and `(1, 1)` ("accept everything") at the end, so that a curve sampled on a threshold
/// grid that stops short of the largest distance still spans the whole FPR axis.
/// Pairs beyond the shorter slice are ignored; with no points the area is 0.5 (the diagonal).
pub fn trapezoid_auc(fpr: &[f64], tpr: &[f64]) -> f64 {
    let mut points: Vec<(f64, f64)> = fpr.iter().copied().zip(tpr.iter().copied()).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut area = 0.0;
    let mut prev = (0.0, 0.0);
    for &p in points.iter().chain(std::iter::once(&(1.0, 1.0))) {
        area += (p.0 - prev.0) * (p.1 + prev.1) / 2.0;
        prev = p;
    }
    area
}

/// The metrics of one pair set.
///
/// Serialised (`xtask eval --json`) under the names of the run records
/// (`plsc_train::records::EvalRecord`): `accuracy`, `accuracy_std`, `tar`, `tar_std`, `far` (the
/// target), `far_mean` (measured), `auc`, and `roc` with `thresholds`, `tpr` and `fpr`; the
/// older names (`accuracy_mean`, `tar_mean`, `far_target`, `roc.auc`) still read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "json::MetricsJson", from = "json::MetricsJson")]
pub struct Metrics {
    /// Number of pairs.
    pub pairs: usize,
    /// Genuine (same-identity) pairs among them.
    #[serde(default)]
    pub genuine: usize,
    /// Impostor (different-identity) pairs among them.
    #[serde(default)]
    pub impostor: usize,
    /// Number of folds.
    pub folds: usize,
    /// Mean of the per-fold test accuracies.
    pub accuracy_mean: f64,
    /// Population standard deviation of the per-fold test accuracies.
    pub accuracy_std: f64,
    /// Test accuracy of each fold.
    pub fold_accuracies: Vec<f64>,
    /// The distance threshold chosen on each fold's training pairs.
    pub best_thresholds: Vec<f64>,
    /// Mean TAR ("VAL") at the FAR target over folds.
    pub tar_mean: f64,
    /// Population standard deviation of the TAR over folds.
    pub tar_std: f64,
    /// The FAR target.
    pub far_target: f64,
    /// Mean FAR measured on the test folds at the interpolated thresholds.
    pub far_mean: f64,
    /// The interpolated threshold of each fold for the FAR target.
    pub tar_thresholds: Vec<f64>,
    /// ROC data.
    pub roc: Roc,
}

/// The JSON form of [`Metrics`]: the run records' names.
mod json {
    use super::{Metrics, Roc};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    pub(super) struct MetricsJson {
        pairs: usize,
        #[serde(default)]
        genuine: usize,
        #[serde(default)]
        impostor: usize,
        folds: usize,
        #[serde(alias = "accuracy_mean")]
        accuracy: f64,
        accuracy_std: f64,
        fold_accuracies: Vec<f64>,
        best_thresholds: Vec<f64>,
        #[serde(alias = "tar_mean")]
        tar: f64,
        tar_std: f64,
        #[serde(alias = "far_target")]
        far: f64,
        far_mean: f64,
        tar_thresholds: Vec<f64>,
        /// Absent in the older form, where it is `roc.auc`.
        #[serde(default)]
        auc: Option<f64>,
        roc: RocJson,
    }

    #[derive(Serialize, Deserialize)]
    struct RocJson {
        thresholds: Vec<f64>,
        tpr: Vec<f64>,
        fpr: Vec<f64>,
        /// Only read (the older form).
        #[serde(default, skip_serializing)]
        auc: Option<f64>,
    }

    impl From<Metrics> for MetricsJson {
        fn from(m: Metrics) -> Self {
            Self {
                pairs: m.pairs,
                genuine: m.genuine,
                impostor: m.impostor,
                folds: m.folds,
                accuracy: m.accuracy_mean,
                accuracy_std: m.accuracy_std,
                fold_accuracies: m.fold_accuracies,
                best_thresholds: m.best_thresholds,
                tar: m.tar_mean,
                tar_std: m.tar_std,
                far: m.far_target,
                far_mean: m.far_mean,
                tar_thresholds: m.tar_thresholds,
                auc: Some(m.roc.auc),
                roc: RocJson {
                    thresholds: m.roc.thresholds,
                    tpr: m.roc.tpr,
                    fpr: m.roc.fpr,
                    auc: None,
                },
            }
        }
    }

    impl From<MetricsJson> for Metrics {
        fn from(j: MetricsJson) -> Self {
            Self {
                pairs: j.pairs,
                genuine: j.genuine,
                impostor: j.impostor,
                folds: j.folds,
                accuracy_mean: j.accuracy,
                accuracy_std: j.accuracy_std,
                fold_accuracies: j.fold_accuracies,
                best_thresholds: j.best_thresholds,
                tar_mean: j.tar,
                tar_std: j.tar_std,
                far_target: j.far,
                far_mean: j.far_mean,
                tar_thresholds: j.tar_thresholds,
                roc: Roc {
                    auc: j.auc.or(j.roc.auc).unwrap_or(f64::NAN),
                    thresholds: j.roc.thresholds,
                    tpr: j.roc.tpr,
                    fpr: j.roc.fpr,
                },
            }
        }
    }
}

/// Metrics plus XNorm, the mean L2 norm of the un-normalised embeddings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Mean L2 norm of the raw embeddings (InsightFace's XNorm).
    pub xnorm: f64,
    /// The accuracy, TAR and ROC figures.
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The test ranges of scikit-learn's `KFold(folds, shuffle=False)` over `pairs` samples: contiguous,
/// `pairs / folds` each, the first `pairs % folds` one larger. `folds == 1` gives one range
/// over everything (InsightFace's `LFold(1)`, where training and test sets are the same).
pub fn kfold_ranges(pairs: usize, folds: usize) -> Result<Vec<Range<usize>>> {
    if folds == 0 {
        return Err(EvalError::Config(
            "the fold count must be at least 1".into(),
        ));
    }
    if pairs < folds || pairs == 0 {
        return Err(EvalError::TooFewPairs { pairs, folds });
    }
    let base = pairs / folds;
    let extra = pairs % folds;
    let mut start = 0;
    Ok((0..folds)
        .map(|f| {
            let len = base + usize::from(f < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect())
}

/// Squared L2 distance of each pair of consecutive rows (`np.sum(np.square(e1 - e2), 1)`).
pub fn pair_distances(rows: &[f64], dim: usize) -> Vec<f64> {
    let mut diff = vec![0.0; dim];
    rows.chunks_exact(2 * dim)
        .map(|pair| {
            let (a, b) = pair.split_at(dim);
            for ((d, &x), &y) in diff.iter_mut().zip(a).zip(b) {
                let v = x - y;
                *d = v * v;
            }
            np_sum(&diff)
        })
        .collect()
}

/// Rows divided by their L2 norm in float64 (`sklearn.preprocessing.normalize`: a zero row stays
/// zero).
pub fn l2_normalize_rows(rows: &[f64], dim: usize) -> Vec<f64> {
    let mut out = rows.to_vec();
    let mut sq = vec![0.0; dim];
    for row in out.chunks_exact_mut(dim) {
        for (s, &x) in sq.iter_mut().zip(row.iter()) {
            *s = x * x;
        }
        let mut norm = np_sum(&sq).sqrt();
        if norm == 0.0 {
            norm = 1.0;
        }
        row.iter_mut().for_each(|x| *x /= norm);
    }
    out
}

/// XNorm: the mean L2 norm of the rows, summed in row order as InsightFace does.
pub fn xnorm(rows: &[f32], dim: usize) -> f64 {
    let mut total = 0.0;
    let mut count = 0usize;
    let mut sq = vec![0.0; dim];
    for row in rows.chunks_exact(dim) {
        for (s, &x) in sq.iter_mut().zip(row) {
            let x = f64::from(x);
            *s = x * x;
        }
        total += np_sum(&sq).sqrt();
        count += 1;
    }
    if count == 0 {
        0.0
    } else {
        total / count as f64
    }
}

/// Checks that `len` values make `2 * labels` rows of width `dim`, all finite.
fn check_rows(rows: &[f32], dim: usize, labels: usize, source_name: &str) -> Result<()> {
    if dim == 0 || !rows.len().is_multiple_of(dim) {
        return Err(EvalError::EmbeddingShape {
            len: rows.len(),
            dim,
        });
    }
    let n = rows.len() / dim;
    if n != 2 * labels {
        return Err(EvalError::PairCountMismatch {
            source_name: source_name.to_string(),
            images: n,
            labels,
        });
    }
    if let Some(row) = rows
        .chunks_exact(dim)
        .position(|r| r.iter().any(|x| !x.is_finite()))
    {
        return Err(EvalError::NonFinite { row });
    }
    Ok(())
}

/// Verification figures from raw embeddings (`[2P, dim]` row-major, pairs on consecutive rows):
/// XNorm of the raw rows, then the metrics of the L2-normalised rows. `source_name` names the
/// embeddings in errors.
pub fn verify_embeddings(
    rows: &[f32],
    dim: usize,
    issame: &[bool],
    config: &VerifyConfig,
    source_name: &str,
) -> Result<Verification> {
    check_rows(rows, dim, issame.len(), source_name)?;
    let xnorm = xnorm(rows, dim);
    let wide: Vec<f64> = rows.iter().map(|&x| f64::from(x)).collect();
    let normalized = l2_normalize_rows(&wide, dim);
    let metrics = evaluate(&normalized, dim, issame, config)?;
    Ok(Verification { xnorm, metrics })
}

/// InsightFace's `evaluate`: accuracy and ROC (`calculate_roc`) and TAR at FAR (`calculate_val`)
/// from embeddings that are already normalised (`[2P, dim]`, pairs on consecutive rows).
pub fn evaluate(
    normalized: &[f64],
    dim: usize,
    issame: &[bool],
    config: &VerifyConfig,
) -> Result<Metrics> {
    if dim == 0 || normalized.len() != 2 * issame.len() * dim {
        return Err(EvalError::PairCountMismatch {
            source_name: "normalised embeddings".into(),
            images: normalized.len().checked_div(dim).unwrap_or(0),
            labels: issame.len(),
        });
    }
    if !(config.far_target >= 0.0 && config.far_target <= 1.0) {
        return Err(EvalError::Config(format!(
            "FAR target {} is not within [0, 1]",
            config.far_target
        )));
    }
    let dist = pair_distances(normalized, dim);
    let folds = kfold_ranges(issame.len(), config.folds)?;
    let roc_thresholds = arange(0.0, 4.0, 0.01);
    let roc = calculate_roc(&roc_thresholds, &dist, issame, &folds);
    let val_thresholds = arange(0.0, 4.0, 0.001);
    let val = calculate_val(&val_thresholds, &dist, issame, config.far_target, &folds)?;
    let genuine = issame.iter().filter(|&&same| same).count();
    Ok(Metrics {
        pairs: issame.len(),
        genuine,
        impostor: issame.len() - genuine,
        folds: folds.len(),
        accuracy_mean: np_mean(&roc.accuracy),
        accuracy_std: np_std(&roc.accuracy),
        fold_accuracies: roc.accuracy,
        best_thresholds: roc.best_thresholds,
        tar_mean: np_mean(&val.val),
        tar_std: np_std(&val.val),
        far_target: config.far_target,
        far_mean: np_mean(&val.far),
        tar_thresholds: val.thresholds,
        roc: Roc {
            auc: trapezoid_auc(&roc.fpr, &roc.tpr),
            thresholds: roc_thresholds,
            tpr: roc.tpr,
            fpr: roc.fpr,
        },
    })
}

/// The distances of a set of pairs, split by label and sorted, so that "how many are below t"
/// is a binary search (the same counts as `np.less(dist, t)` summed).
struct Split {
    same: Vec<f64>,
    diff: Vec<f64>,
}

impl Split {
    fn new(dist: &[f64], issame: &[bool], indices: impl Iterator<Item = usize>) -> Self {
        let (mut same, mut diff) = (Vec::new(), Vec::new());
        for i in indices {
            if issame[i] {
                same.push(dist[i]);
            } else {
                diff.push(dist[i]);
            }
        }
        same.sort_by(f64::total_cmp);
        diff.sort_by(f64::total_cmp);
        Self { same, diff }
    }

    /// Training split of a fold: every pair outside `test`, or all pairs with one fold.
    fn train(dist: &[f64], issame: &[bool], test: &Range<usize>, folds: usize) -> Self {
        if folds == 1 {
            Self::new(dist, issame, 0..dist.len())
        } else {
            Self::new(dist, issame, (0..test.start).chain(test.end..dist.len()))
        }
    }

    /// (same pairs accepted, different pairs accepted) at threshold `t` (`dist < t`).
    fn accepted(&self, t: f64) -> (usize, usize) {
        (
            self.same.partition_point(|&d| d < t),
            self.diff.partition_point(|&d| d < t),
        )
    }

    /// InsightFace's `calculate_accuracy`: (tpr, fpr, accuracy).
    fn accuracy(&self, t: f64) -> (f64, f64, f64) {
        let (tp, fp) = self.accepted(t);
        let fn_ = self.same.len() - tp;
        let tn = self.diff.len() - fp;
        let tpr = if tp + fn_ == 0 {
            0.0
        } else {
            tp as f64 / (tp + fn_) as f64
        };
        let fpr = if fp + tn == 0 {
            0.0
        } else {
            fp as f64 / (fp + tn) as f64
        };
        let acc = (tp + tn) as f64 / (self.same.len() + self.diff.len()) as f64;
        (tpr, fpr, acc)
    }

    /// InsightFace's `calculate_val_far`: (val, far); errors where Python divides by zero.
    fn val_far(&self, t: f64, fold: usize, part: &'static str) -> Result<(f64, f64)> {
        if self.same.is_empty() {
            return Err(EvalError::DegenerateFold {
                fold,
                part,
                kind: "same",
            });
        }
        if self.diff.is_empty() {
            return Err(EvalError::DegenerateFold {
                fold,
                part,
                kind: "different",
            });
        }
        let (ta, fa) = self.accepted(t);
        Ok((
            ta as f64 / self.same.len() as f64,
            fa as f64 / self.diff.len() as f64,
        ))
    }
}

/// Output of [`calculate_roc`].
struct RocFolds {
    tpr: Vec<f64>,
    fpr: Vec<f64>,
    accuracy: Vec<f64>,
    best_thresholds: Vec<f64>,
}

/// Index of the first maximum, as `np.argmax` (a later equal value never wins).
pub fn first_argmax(values: &[f64]) -> usize {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best
}

fn calculate_roc(
    thresholds: &[f64],
    dist: &[f64],
    issame: &[bool],
    folds: &[Range<usize>],
) -> RocFolds {
    let mut tprs = Vec::with_capacity(folds.len());
    let mut fprs = Vec::with_capacity(folds.len());
    let mut accuracy = Vec::with_capacity(folds.len());
    let mut best_thresholds = Vec::with_capacity(folds.len());
    for test in folds {
        let train = Split::train(dist, issame, test, folds.len());
        let test_split = Split::new(dist, issame, test.clone());
        let acc_train: Vec<f64> = thresholds.iter().map(|&t| train.accuracy(t).2).collect();
        let best = thresholds[first_argmax(&acc_train)];
        let (tpr, fpr): (Vec<f64>, Vec<f64>) = thresholds
            .iter()
            .map(|&t| {
                let (tpr, fpr, _) = test_split.accuracy(t);
                (tpr, fpr)
            })
            .unzip();
        tprs.push(tpr);
        fprs.push(fpr);
        accuracy.push(test_split.accuracy(best).2);
        best_thresholds.push(best);
    }
    RocFolds {
        tpr: np_mean_axis0(&tprs),
        fpr: np_mean_axis0(&fprs),
        accuracy,
        best_thresholds,
    }
}

/// Output of [`calculate_val`].
struct ValFolds {
    val: Vec<f64>,
    far: Vec<f64>,
    thresholds: Vec<f64>,
}

fn calculate_val(
    thresholds: &[f64],
    dist: &[f64],
    issame: &[bool],
    far_target: f64,
    folds: &[Range<usize>],
) -> Result<ValFolds> {
    let mut out = ValFolds {
        val: Vec::with_capacity(folds.len()),
        far: Vec::with_capacity(folds.len()),
        thresholds: Vec::with_capacity(folds.len()),
    };
    for (fold, test) in folds.iter().enumerate() {
        let train = Split::train(dist, issame, test, folds.len());
        let mut far_train = Vec::with_capacity(thresholds.len());
        for &t in thresholds {
            far_train.push(train.val_far(t, fold, "training")?.1);
        }
        let max_far = far_train.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let threshold = if max_far >= far_target {
            // interp1d sorts x with a stable sort first; FAR never falls as the threshold
            // grows, so this keeps the order, but it costs little to do as SciPy does.
            let mut order: Vec<usize> = (0..far_train.len()).collect();
            order.sort_by(|&a, &b| far_train[a].total_cmp(&far_train[b]));
            let x: Vec<f64> = order.iter().map(|&i| far_train[i]).collect();
            let y: Vec<f64> = order.iter().map(|&i| thresholds[i]).collect();
            slinear_interp(&x, &y, far_target)
        } else {
            0.0
        };
        let test_split = Split::new(dist, issame, test.clone());
        let (val, far) = test_split.val_far(threshold, fold, "test")?;
        out.val.push(val);
        out.far.push(far);
        out.thresholds.push(threshold);
    }
    Ok(out)
}
