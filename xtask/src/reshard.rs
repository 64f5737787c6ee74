//! `cargo xtask reshard` and `cargo xtask export`: offline checkpoint tools over plsc-ckpt.
//!
//! - `reshard --ckpt DIR --ranks M --out DIR2`: the checkpoint resharded for M ranks (head
//!   weight and momentum rows re-split to plsc-core's balanced split, bit for bit, streamed
//!   from memory-mapped files), written atomically as `DIR2/step-<n>/`. With
//!   `--head-storage f32|bf16|f16` the rows are converted to that storage type (round to
//!   nearest); without it they keep the source's.
//! - `export --ckpt DIR --out MODEL_DIR`: the backbone's weights and buffers plus `model.json`,
//!   what plsc-serve and `xtask eval` load.
//! - `export --ckpt DIR | --model MODEL_DIR --onnx FILE.onnx`: the backbone as an ONNX model
//!   (`plsc_ckpt::export_onnx`).
//!
//! `--ckpt` is a checkpoint directory (`step-<n>/`, holding `manifest.json`) or a run's
//! checkpoint root, of which the newest valid checkpoint is used.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use plsc_ckpt::Checkpoint;

/// Arguments of `cargo xtask reshard`.
#[derive(Args, Debug)]
pub struct ReshardArgs {
    /// Checkpoint directory (step-<n>/ with manifest.json), or a root holding several (the
    /// newest valid one is used).
    #[arg(long, value_name = "DIR")]
    ckpt: PathBuf,
    /// Rank count of the new checkpoint.
    #[arg(long, value_name = "M")]
    ranks: usize,
    /// Root to write the new checkpoint into (as DIR2/step-<n>/). Not the source's root, not
    /// inside the source checkpoint, and without a step-<n>/ of the same step: reshard adds
    /// one checkpoint and never removes or replaces any (no pruning).
    #[arg(long, value_name = "DIR2")]
    out: PathBuf,
    /// Store the head's weight and momentum as f32, bf16 or f16 in the new checkpoint
    /// (default: as the source does). To f32 the values are exact; to bf16 or f16 each is
    /// rounded to the nearest representable value (ties to even), and a value beyond f16's
    /// range (65504) is an error. This is how a checkpoint is made to fit a run with another
    /// `head_storage`: resuming never converts by itself.
    #[arg(long, value_name = "STORAGE")]
    head_storage: Option<plsc_core::HeadStorage>,
}

/// Runs `cargo xtask reshard`.
pub fn run_reshard(args: ReshardArgs) -> Result<()> {
    let src = Checkpoint::open_dir_or_latest(&args.ckpt)
        .with_context(|| format!("opening the checkpoint {}", args.ckpt.display()))?;
    let from = src.manifest().world_size;
    let (had, storage) = (
        src.manifest().head.storage,
        args.head_storage.unwrap_or(src.manifest().head.storage),
    );
    let dir = plsc_ckpt::reshard_as(&src, args.ranks, storage, &args.out).with_context(|| {
        format!(
            "resharding {} to {} ranks ({storage} head)",
            src.dir().display(),
            args.ranks
        )
    })?;
    let converted = if had == storage {
        format!("head stored as {storage}")
    } else {
        format!("head converted from {had} to {storage}, rounded to nearest")
    };
    println!(
        "resharded step {} ({} classes) from {from} to {} ranks, {converted}: {}",
        src.step(),
        src.manifest().num_classes,
        args.ranks,
        dir.display()
    );
    Ok(())
}

/// Arguments of `cargo xtask export`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ckpt", "model"])))]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true).args(["out", "onnx"])))]
pub struct ExportArgs {
    /// Checkpoint directory (step-<n>/ with manifest.json), or a root holding several (the
    /// newest valid one is used).
    #[arg(long, value_name = "DIR")]
    ckpt: Option<PathBuf>,
    /// A model directory (model.json + backbone.safetensors, from `export --out` or
    /// `import`) to convert to ONNX (with --onnx).
    #[arg(
        long,
        value_name = "MODEL_DIR",
        conflicts_with = "out",
        requires = "onnx"
    )]
    model: Option<PathBuf>,
    /// Output model directory: backbone.safetensors (weights and buffers) and model.json
    /// (architecture, embedding size, input size and channels, normalisation).
    #[arg(long, value_name = "MODEL_DIR")]
    out: Option<PathBuf>,
    /// Also (or only) write an ONNX model for ONNX Runtime, TensorRT or Triton: opset 17,
    /// input `input` [batch, C, S, S] float32 already normalised ((pixel - mean) / std, RGB),
    /// output `embedding` [batch, D]; mean, std and the rest in its metadata properties
    /// (plsc.mean, plsc.std, ...). An existing file is not replaced.
    #[arg(long, value_name = "FILE.onnx")]
    onnx: Option<PathBuf>,
}

/// `export --ckpt DIR --out MODEL_DIR`.
struct ExportDirArgs {
    ckpt: PathBuf,
    out: PathBuf,
}

/// Runs `cargo xtask export`.
pub fn run_export(args: ExportArgs) -> Result<()> {
    if let Some(onnx) = &args.onnx {
        let src = args
            .model
            .as_ref()
            .or(args.ckpt.as_ref())
            .context("give --ckpt or --model")?;
        let e = plsc_ckpt::export_onnx(src, onnx)
            .with_context(|| format!("exporting {} to ONNX", src.display()))?;
        println!(
            "wrote ONNX {} ({} bytes, opset {}): {} (embedding {}, input [batch, {}, {}, {}] \
             = (pixel - {:?}) / {:?} RGB, {})",
            e.path.display(),
            e.bytes,
            plsc_models::onnx::OPSET,
            e.spec.architecture,
            e.spec.embedding_size,
            e.spec.in_channels,
            e.spec.input_size,
            e.spec.input_size,
            e.spec.mean,
            e.spec.std,
            e.preprocessing_source.name()
        );
    }
    let (Some(ckpt), Some(out)) = (&args.ckpt, &args.out) else {
        return Ok(());
    };
    let args = ExportDirArgs {
        ckpt: ckpt.clone(),
        out: out.clone(),
    };
    let src = Checkpoint::open_dir_or_latest(&args.ckpt)
        .with_context(|| format!("opening the checkpoint {}", args.ckpt.display()))?;
    let report = plsc_ckpt::export(&src, &args.out)
        .with_context(|| format!("exporting {}", src.dir().display()))?;
    let out = &report.dir;
    let model = src
        .manifest()
        .model
        .as_ref()
        .context("checkpoint has no model spec")?;
    println!(
        "exported {} (embedding {}, input {}x{}x{}) from step {}: {}",
        model.architecture,
        model.embedding_size,
        model.in_channels,
        model.input_size,
        model.input_size,
        src.step(),
        out.display()
    );
    if report.unverified.is_empty() {
        println!("verified: every file of the checkpoint (sha256)");
    } else {
        tracing::warn!(
            "the head shards of {} were not verified (export reads only the backbone)",
            src.dir().display()
        );
        println!(
            "not verified (export reads only the backbone): {} file(s) of the checkpoint",
            report.unverified.len()
        );
        for f in &report.unverified {
            println!("  {}", f.display());
        }
    }
    Ok(())
}
