//! `cargo xtask eval`: face-verification figures (10-fold accuracy, TAR at FAR, XNorm) the way
//! InsightFace's `eval/verification.py` computes them.
//!
//! From given embeddings: `--embeddings E.safetensors --issame I.json`, so results can be checked
//! against InsightFace's code on identical embeddings. The tensor `embeddings` is `[2P, D]` f32
//! with pairs on consecutive rows; `issame` is a JSON array of `P` booleans.
//!
//! From a model and `.bin` pair sets (`--model DIR --bin lfw.bin,...`): the library side exists
//! (`plsc_eval::verify_bin_files` takes the `.bin` paths and any `plsc_eval::Embedder`); the flags
//! are added here once an exported model directory can be loaded (plsc-ckpt's export format), in
//! the section marked "model path" below.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use plsc_eval::{Verification, VerifyConfig};
use serde::Serialize;

/// Arguments of `cargo xtask eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// safetensors file holding the tensor `embeddings`, [2P, D] f32; pair i is rows 2i and 2i+1.
    #[arg(long, value_name = "E.safetensors")]
    embeddings: PathBuf,
    /// JSON array of P booleans: whether pair i shows the same identity.
    #[arg(long, value_name = "I.json")]
    issame: PathBuf,
    /// Print one JSON document (all figures, per-fold values and the ROC) instead of text.
    #[arg(long)]
    json: bool,
    /// Number of folds (InsightFace: 10).
    #[arg(long, default_value_t = plsc_eval::metrics::DEFAULT_FOLDS)]
    folds: usize,
    /// FAR at which TAR is reported (InsightFace: 1e-3).
    #[arg(long, default_value_t = plsc_eval::metrics::DEFAULT_FAR_TARGET)]
    far: f64,
}

/// What `--json` prints.
#[derive(Serialize)]
struct JsonReport<'a> {
    embeddings: String,
    issame: String,
    #[serde(flatten)]
    report: &'a Verification,
}

/// Runs `cargo xtask eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let config = VerifyConfig {
        folds: args.folds,
        far_target: args.far,
    };
    let report = plsc_eval::verify_files(&args.embeddings, &args.issame, &config)
        .context("verification from given embeddings failed")?;

    // --- model path: `--model DIR --bin a.bin,b.bin` goes here, calling
    // `plsc_eval::verify_bin_files` with an embedder built from the loaded model, once an
    // exported model directory can be loaded.

    if args.json {
        let doc = JsonReport {
            embeddings: args.embeddings.display().to_string(),
            issame: args.issame.display().to_string(),
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!(
            "{}",
            text_report(&args.embeddings.display().to_string(), &report)
        );
    }
    Ok(())
}

/// The text form: one figure per line, InsightFace's precision.
fn text_report(name: &str, v: &Verification) -> String {
    let m = &v.metrics;
    let thresholds: Vec<String> = m
        .best_thresholds
        .iter()
        .map(|t| format!("{t:.2}"))
        .collect();
    format!(
        "{name}: {pairs} pairs, {folds} folds\n\
         Accuracy: {acc:.5}+-{acc_std:.5}\n\
         TAR@FAR={far_target:e}: {tar:.5}+-{tar_std:.5} (FAR measured {far:.5})\n\
         XNorm: {xnorm:.6}\n\
         Best thresholds: {thresholds}\n",
        pairs = m.pairs,
        folds = m.folds,
        acc = m.accuracy_mean,
        acc_std = m.accuracy_std,
        far_target = m.far_target,
        tar = m.tar_mean,
        tar_std = m.tar_std,
        far = m.far_mean,
        xnorm = v.xnorm,
        thresholds = thresholds.join(" "),
    )
}
