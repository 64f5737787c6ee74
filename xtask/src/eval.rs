//! `cargo xtask eval`: face-verification figures (10-fold accuracy, TAR at FAR, XNorm) the way
//! InsightFace's `eval/verification.py` computes them.
//!
//! From given embeddings: `--embeddings E.safetensors --issame I.json`, so results can be checked
//! against InsightFace's code on identical embeddings. The tensor `embeddings` is `[2P, D]` f32
//! with pairs on consecutive rows; `issame` is a JSON array of `P` booleans.
//!
//! From a model and `.bin` pair sets: `--model DIR --bin lfw.bin,cfp_fp.bin`, where `DIR` is an
//! exported model (`cargo xtask export`: `model.json` + weights), loaded as the server loads it.
//! Each set is decoded to the model's input by plsc-data's pipeline (as in training and
//! serving), every image and its mirror image are embedded on the CPU backend (evaluation mode:
//! running BatchNorm statistics), and the figures are computed as above (the flip test).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use plsc_data::decode::ImageSpec;
use plsc_eval::{EmbedderError, EvalOptions, Verification, VerifyConfig};
use plsc_serve::ServeModel;
use serde::Serialize;

/// Arguments of `cargo xtask eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// safetensors file holding the tensor `embeddings`, [2P, D] f32; pair i is rows 2i and 2i+1.
    #[arg(
        long,
        value_name = "E.safetensors",
        required_unless_present = "model",
        conflicts_with = "model",
        requires = "issame"
    )]
    embeddings: Option<PathBuf>,
    /// JSON array of P booleans: whether pair i shows the same identity.
    #[arg(long, value_name = "I.json", requires = "embeddings")]
    issame: Option<PathBuf>,
    /// An exported model directory (model.json + backbone.safetensors, from `cargo xtask export`).
    #[arg(long, value_name = "DIR", requires = "bin")]
    model: Option<PathBuf>,
    /// InsightFace `.bin` pair sets to verify the model on, comma-separated.
    #[arg(
        long,
        value_name = "A.bin,B.bin",
        value_delimiter = ',',
        requires = "model"
    )]
    bin: Vec<PathBuf>,
    /// How images of another size or aspect ratio become the model input (with --model):
    /// squash (resize ignoring the aspect ratio), pad (fit inside, pad with black) or
    /// center-crop (cover, cut out the centre). [default: what the model's model.json records,
    /// squash when it records nothing]
    #[arg(long, value_name = "POLICY", requires = "model")]
    resize: Option<plsc_eval::Resize>,
    /// Images per forward pass (with --model).
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
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

/// One set's figures in `--json --model` output.
#[derive(Serialize)]
struct SetReport<'a> {
    set: &'a str,
    #[serde(flatten)]
    report: &'a Verification,
}

/// Runs `cargo xtask eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let config = VerifyConfig {
        folds: args.folds,
        far_target: args.far,
    };
    if let Some(dir) = &args.model {
        return run_model(dir, &args, config);
    }
    let (Some(embeddings), Some(issame)) = (&args.embeddings, &args.issame) else {
        anyhow::bail!("give --embeddings and --issame, or --model and --bin");
    };
    let report = plsc_eval::verify_files(embeddings, issame, &config)
        .context("verification from given embeddings failed")?;
    if args.json {
        let doc = JsonReport {
            embeddings: embeddings.display().to_string(),
            issame: issame.display().to_string(),
            report: &report,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!(
            "{}",
            text_report(&embeddings.display().to_string(), &report)
        );
    }
    Ok(())
}

/// `--model DIR --bin ...`: the flip test of an exported model on each pair set. The model is
/// loaded as the server loads it (`plsc_serve::ServeModel`: plsc-ckpt's
/// `load_exported_backbone` and `ModelSpec::image_spec`), the images are decoded by plsc-data's
/// pipeline with the model's input spec, and the batches run through the server's forward pass.
fn run_model(dir: &Path, args: &EvalArgs, verify: VerifyConfig) -> Result<()> {
    let model = ServeModel::load(dir)
        .with_context(|| format!("loading the exported model {}", dir.display()))?;
    let recorded = model.image_spec().resize;
    let resize = args.resize.unwrap_or(recorded);
    if resize != recorded {
        tracing::warn!(
            "resize {resize} from --resize, while {} records {recorded}",
            dir.join(plsc_ckpt::export::MODEL_JSON).display()
        );
    }
    tracing::info!(model = %dir.display(), %resize, "images of another size are brought to the input by {resize}");
    let spec = ImageSpec {
        resize,
        ..model.image_spec().clone()
    };
    let options = EvalOptions {
        batch_size: args.batch_size,
        verify,
    };
    let mut embed = |images: &[f32], shape: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        Ok(model.embed(images.to_vec(), shape[0])?)
    };
    let paths: Vec<&Path> = args.bin.iter().map(PathBuf::as_path).collect();
    let reports = plsc_eval::verify_bin_files(&paths, &spec, &mut embed, &options)
        .with_context(|| format!("verifying {} on the pair sets", dir.display()))?;
    if args.json {
        let sets: Vec<SetReport> = reports
            .iter()
            .map(|(set, report)| SetReport { set, report })
            .collect();
        println!("{}", serde_json::to_string_pretty(&sets)?);
    } else {
        for (set, report) in &reports {
            print!("{}", text_report(set, report));
        }
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
        "{name}: {pairs} pairs ({genuine} genuine, {impostor} impostor), {folds} folds\n\
         Accuracy: {acc:.5}+-{acc_std:.5}\n\
         TAR@FAR={far_target:e}: {tar:.5}+-{tar_std:.5} (FAR measured {far:.5})\n\
         AUC: {auc:.5}\n\
         XNorm: {xnorm:.6}\n\
         Best thresholds: {thresholds}\n",
        pairs = m.pairs,
        genuine = m.genuine,
        impostor = m.impostor,
        folds = m.folds,
        acc = m.accuracy_mean,
        acc_std = m.accuracy_std,
        far_target = m.far_target,
        tar = m.tar_mean,
        tar_std = m.tar_std,
        far = m.far_mean,
        auc = m.roc.auc,
        xnorm = v.xnorm,
        thresholds = thresholds.join(" "),
    )
}
