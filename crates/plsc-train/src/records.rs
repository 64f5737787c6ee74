//! The run records: one schema for what a run writes and what its readers read.
//!
//! [`LogRecord`] (`"kind": "train"`) and [`EvalRecord`] (`"kind": "eval"`) are the lines of a
//! run's `metrics.jsonl`; `summary.json` holds the last evaluations as [`EvalRecord`]s. The
//! trainer writes them, `xtask plot` reads them back with the same types, and `xtask eval
//! --json` names its figures the way [`EvalRecord`] does (`accuracy`, `accuracy_std`, `tar`,
//! `far`, `xnorm`, `auc`; plsc-eval's `Metrics` serialises under these names).
//!
//! Reading is lenient where writing is lossy or older: serde_json writes a non-finite number as
//! `null`, which reads back as NaN (or `None` for the optional accuracies); records written
//! before a field existed (`data_wait_s`, `auc`, `roc_fpr`, `roc_tpr`) read with NaN or an
//! empty curve.

use plsc_eval::Verification;
use serde::{Deserialize, Deserializer, Serialize};

/// A record's `kind` (`"train"` or `"eval"`), checked when read. An alias rather than
/// `&'static str` in the fields, because serde's derive sees a written-out `&str` field as
/// borrowed from the input and would then read records only from `'static` text.
pub type Kind = &'static str;

/// One log record (every `log_period` steps and at the last step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRecord {
    /// `"train"`.
    #[serde(deserialize_with = "train_kind")]
    pub kind: Kind,
    /// Epoch (0-based) of the step.
    pub epoch: u64,
    /// Steps done.
    pub step: u64,
    /// Learning rate of the last step.
    #[serde(deserialize_with = "number")]
    pub lr: f64,
    /// Mean loss over the steps since the last record.
    #[serde(deserialize_with = "number")]
    pub loss: f64,
    /// Global images per second since the last record.
    #[serde(deserialize_with = "number")]
    pub images_per_sec: f64,
    /// Mean seconds per step this rank waited for its batch (decoding and the host-to-device
    /// copy) since the last record: near 0 when the data keeps up.
    #[serde(default = "nan", deserialize_with = "number")]
    pub data_wait_s: f64,
    /// Training top-1 accuracy of the last step (with `calc_acc`).
    pub acc1: Option<f64>,
    /// Training top-5 accuracy of the last step (with `calc_acc`).
    pub acc5: Option<f64>,
    /// Current loss scale (1 without mixed precision).
    #[serde(deserialize_with = "number")]
    pub loss_scale: f64,
    /// Steps skipped for non-finite gradients so far.
    pub skipped_steps: u64,
    /// Seconds since the start.
    #[serde(deserialize_with = "number")]
    pub elapsed_s: f64,
}

/// One verification result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// `"eval"`.
    #[serde(deserialize_with = "eval_kind")]
    pub kind: Kind,
    /// Steps done.
    pub step: u64,
    /// Pair set name.
    pub target: String,
    /// Mean 10-fold accuracy.
    #[serde(deserialize_with = "number")]
    pub accuracy: f64,
    /// Its standard deviation.
    #[serde(deserialize_with = "number")]
    pub accuracy_std: f64,
    /// TAR at the FAR target.
    #[serde(deserialize_with = "number")]
    pub tar: f64,
    /// The FAR target.
    #[serde(deserialize_with = "number")]
    pub far: f64,
    /// XNorm.
    #[serde(deserialize_with = "number")]
    pub xnorm: f64,
    /// Area under the ROC curve.
    #[serde(default = "nan", deserialize_with = "number")]
    pub auc: f64,
    /// ROC false positive rates, one per threshold of 0..4 step 0.01 (averaged over folds).
    #[serde(default, deserialize_with = "numbers")]
    pub roc_fpr: Vec<f64>,
    /// ROC true positive rates, one per threshold, as `roc_fpr`.
    #[serde(default, deserialize_with = "numbers")]
    pub roc_tpr: Vec<f64>,
}

impl EvalRecord {
    /// The record of verification `v` on the pair set `target` after `step` steps.
    pub fn new(step: u64, target: &str, v: &Verification) -> Self {
        Self {
            kind: "eval",
            step,
            target: target.to_string(),
            accuracy: v.metrics.accuracy_mean,
            accuracy_std: v.metrics.accuracy_std,
            tar: v.metrics.tar_mean,
            far: v.metrics.far_target,
            xnorm: v.xnorm,
            auc: v.metrics.roc.auc,
            roc_fpr: v.metrics.roc.fpr.clone(),
            roc_tpr: v.metrics.roc.tpr.clone(),
        }
    }
}

fn nan() -> f64 {
    f64::NAN
}

/// A number, or `null` (how serde_json writes a non-finite one) as NaN.
fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// An array of numbers, each `null` as NaN.
fn numbers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let v = Vec::<Option<f64>>::deserialize(d)?;
    Ok(v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect())
}

/// The `kind` string, which must be `expected`.
fn kind<'de, D: Deserializer<'de>>(d: D, expected: Kind) -> Result<Kind, D::Error> {
    let k = String::deserialize(d)?;
    if k == expected {
        Ok(expected)
    } else {
        Err(serde::de::Error::custom(format!(
            "record kind {k:?} where {expected:?} was expected"
        )))
    }
}

fn train_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    kind(d, "train")
}

fn eval_kind<'de, D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
    kind(d, "eval")
}

/// The records of one `metrics.jsonl`, in file order: values that were not finite read as
/// NaN; eval records from before the ROC was logged have an empty curve.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Metrics {
    /// The train records.
    pub train: Vec<LogRecord>,
    /// The eval records.
    pub eval: Vec<EvalRecord>,
}

/// Reads a run's `metrics.jsonl`; errors name the file and the 1-based line. Records of
/// another kind are skipped with a warning (newer writers may add kinds).
pub fn read_metrics(path: &std::path::Path) -> crate::error::Result<Metrics> {
    use crate::error::TrainError;
    let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut m = Metrics::default();
    for (i, line) in text.lines().enumerate() {
        let bad = |detail: String| TrainError::Records {
            path: path.to_path_buf(),
            line: i + 1,
            detail,
        };
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| bad("no \"kind\" string".into()))?
            .to_string();
        match kind.as_str() {
            "train" => m.train.push(
                serde_json::from_value(value).map_err(|e| bad(format!("bad train record: {e}")))?,
            ),
            "eval" => {
                let e: EvalRecord = serde_json::from_value(value)
                    .map_err(|e| bad(format!("bad eval record: {e}")))?;
                if e.roc_fpr.len() != e.roc_tpr.len() {
                    return Err(bad(format!(
                        "roc_fpr has {} values but roc_tpr {}",
                        e.roc_fpr.len(),
                        e.roc_tpr.len()
                    )));
                }
                m.eval.push(e);
            }
            other => tracing::warn!(
                "{} line {}: record kind {other:?} skipped",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::{EvalRecord, LogRecord};
    use plsc_eval::{Verification, VerifyConfig, verify_embeddings};

    fn log_record() -> LogRecord {
        LogRecord {
            kind: "train",
            epoch: 1,
            step: 20,
            lr: 0.05,
            loss: 3.25,
            images_per_sec: 812.5,
            data_wait_s: 0.001,
            acc1: Some(0.5),
            acc5: None,
            loss_scale: 1024.0,
            skipped_steps: 2,
            elapsed_s: 9.5,
        }
    }

    /// 20 pairs on a line: genuine pairs close, impostor pairs far.
    fn verification() -> Verification {
        let mut emb = Vec::new();
        let mut issame = Vec::new();
        for i in 0..20 {
            let same = i % 2 == 0;
            let a = [1.0f32, 0.1 * i as f32];
            let b = if same {
                [1.0, 0.1 * i as f32 + 0.05]
            } else {
                [-1.0, 0.3]
            };
            emb.extend_from_slice(&a);
            emb.extend_from_slice(&b);
            issame.push(same);
        }
        verify_embeddings(&emb, 2, &issame, &VerifyConfig::default(), "test pairs").unwrap()
    }

    #[test]
    fn log_records_round_trip_and_read_null_as_nan() {
        let r = log_record();
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<LogRecord>(&line).unwrap(), r);

        let mut lossy = r.clone();
        lossy.loss = f64::INFINITY;
        lossy.acc1 = Some(f64::NAN);
        let line = serde_json::to_string(&lossy).unwrap();
        assert!(line.contains(r#""loss":null"#), "{line}");
        let back: LogRecord = serde_json::from_str(&line).unwrap();
        assert!(back.loss.is_nan());
        assert_eq!(back.acc1, None);
        assert_eq!(back.step, 20);
    }

    #[test]
    fn older_records_without_newer_fields_still_read() {
        let mut v: serde_json::Value = serde_json::to_value(log_record()).unwrap();
        v.as_object_mut().unwrap().remove("data_wait_s");
        let back: LogRecord = serde_json::from_value(v).unwrap();
        assert!(back.data_wait_s.is_nan());

        let e = EvalRecord::new(40, "lfw", &verification());
        let mut v = serde_json::to_value(&e).unwrap();
        for k in ["auc", "roc_fpr", "roc_tpr"] {
            v.as_object_mut().unwrap().remove(k);
        }
        let back: EvalRecord = serde_json::from_value(v).unwrap();
        assert!(back.auc.is_nan() && back.roc_fpr.is_empty() && back.roc_tpr.is_empty());
        assert_eq!((back.step, back.accuracy), (40, e.accuracy));
    }

    #[test]
    fn a_record_of_the_other_kind_is_an_error_naming_both() {
        let line = serde_json::to_string(&log_record()).unwrap();
        let err = serde_json::from_str::<EvalRecord>(&line).unwrap_err();
        assert!(err.to_string().contains(r#""train""#), "{err}");
        assert!(err.to_string().contains(r#""eval""#), "{err}");
    }

    /// `eval --json` (plsc-eval's serialised `Verification`) and the run records use the same
    /// name for the same figure: every figure of an eval record is in the verification's JSON
    /// under the record's name with the same value (the ROC arrays under `roc`).
    #[test]
    fn eval_json_uses_the_record_names() {
        let v = verification();
        let record = serde_json::to_value(EvalRecord::new(7, "pairs", &v)).unwrap();
        let eval_json = serde_json::to_value(&v).unwrap();
        let record = record.as_object().unwrap();
        let mut compared = 0;
        for (name, value) in record {
            match name.as_str() {
                "kind" | "step" | "target" => {}
                "roc_fpr" => assert_eq!(&eval_json["roc"]["fpr"], value),
                "roc_tpr" => assert_eq!(&eval_json["roc"]["tpr"], value),
                _ => {
                    assert_eq!(eval_json.get(name), Some(value), "{name} in {eval_json}");
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 6, "accuracy, accuracy_std, tar, far, xnorm, auc");
        // The old names are gone.
        for old in ["accuracy_mean", "tar_mean", "far_target"] {
            assert!(eval_json.get(old).is_none(), "{old} still in {eval_json}");
        }
        assert!(eval_json["roc"].get("auc").is_none());
    }

    #[test]
    fn metrics_files_read_back_and_bad_lines_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let train = serde_json::to_string(&log_record()).unwrap();
        std::fs::write(
            &path,
            format!("{train}\n\n{{\"kind\":\"other\"}}\n{train}\n"),
        )
        .unwrap();
        let m = super::read_metrics(&path).unwrap();
        assert_eq!(m.train, vec![log_record(), log_record()]);
        assert!(m.eval.is_empty());
        std::fs::write(&path, format!("{train}\n{{\"kind\":\"train\"}}\n")).unwrap();
        let err = super::read_metrics(&path).unwrap_err();
        assert!(
            matches!(&err, crate::TrainError::Records { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("metrics.jsonl line 2"), "{err}");
    }
}
