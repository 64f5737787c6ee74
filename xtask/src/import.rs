//! `cargo xtask import arcface-torch`: an arcface_torch `backbone.pth` (or its safetensors
//! conversion) as a model directory that `serve` and `eval --model` use as is. The work is
//! `plsc_ckpt::import`; this module parses the arguments and prints what was written.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use plsc_ckpt::{ImportOptions, PreprocessingSource};

/// `cargo xtask import ...`.
#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// An InsightFace arcface_torch backbone: the `backbone.pth` that
    /// `torch.save(model.state_dict())` wrote (read directly, no Python needed), or its
    /// safetensors conversion. Writes MODEL_DIR with backbone.safetensors and model.json
    /// (architecture, input size, arcface_torch's normalisation: RGB, (x - 127.5) / 127.5).
    ///
    /// Example: `cargo xtask import arcface-torch --pth backbone.pth --arch r50 --out model/`,
    /// then `cargo xtask serve --model model/`.
    ArcfaceTorch(ArcfaceTorchArgs),
}

/// The normalisation to record in model.json.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum Preprocessing {
    /// arcface_torch: RGB, (x / 255 - 0.5) / 0.5 = (x - 127.5) / 127.5.
    #[value(name = "arcface_torch")]
    ArcfaceTorch,
    /// PaddlePaddle PLSC: RGB, (x - 127.5) / 128 (for PLSC weights converted to arcface_torch's
    /// names).
    Plsc,
}

/// Arguments of `cargo xtask import arcface-torch`.
#[derive(Args, Debug)]
pub struct ArcfaceTorchArgs {
    /// The state file: PyTorch's `torch.save` file (.pth/.pt) or safetensors, told apart by
    /// their first bytes. `num_batches_tracked` is ignored.
    #[arg(long, value_name = "FILE")]
    pth: PathBuf,
    /// The architecture: iresnet18, iresnet34, iresnet50, iresnet100, mbf, iresnet_tiny,
    /// iresnet_nano, or arcface_torch's names r18, r34, r50, r100.
    #[arg(long, value_name = "NAME")]
    arch: String,
    /// Embedding size (arcface_torch's `num_features`); by default read from the file's last
    /// Linear layer.
    #[arg(long, value_name = "D")]
    embedding_size: Option<usize>,
    /// Input height and width in pixels the model was trained at.
    #[arg(long, value_name = "S", default_value_t = 112)]
    input_size: usize,
    /// The normalisation model.json records (and `serve` and `eval` apply).
    #[arg(long, value_enum, default_value = "arcface_torch")]
    preprocessing: Preprocessing,
    /// Output model directory (created; an earlier model directory there is replaced, any
    /// other non-empty directory is refused).
    #[arg(long, value_name = "MODEL_DIR")]
    out: PathBuf,
}

/// Runs `cargo xtask import ...`.
pub fn run(cmd: ImportCommand) -> Result<()> {
    match cmd {
        ImportCommand::ArcfaceTorch(args) => run_arcface_torch(args),
    }
}

fn run_arcface_torch(args: ArcfaceTorchArgs) -> Result<()> {
    let options = ImportOptions {
        arch: args.arch,
        embedding_size: args.embedding_size,
        input_size: args.input_size,
        source: match args.preprocessing {
            Preprocessing::ArcfaceTorch => PreprocessingSource::ArcfaceTorch,
            Preprocessing::Plsc => PreprocessingSource::Plsc,
        },
    };
    let imported = plsc_ckpt::import(&args.pth, &options, &args.out)
        .with_context(|| format!("importing {}", args.pth.display()))?;
    let spec = &imported.spec;
    println!(
        "imported {} ({} file, {} tensors, {} parameters): embedding {}, input {}x{}x{}, \
         normalisation (x - {}) / {} RGB ({}): {}",
        spec.architecture,
        imported.format.name(),
        imported.tensors,
        imported.parameters,
        spec.embedding_size,
        spec.in_channels,
        spec.input_size,
        spec.input_size,
        spec.mean[0],
        spec.std[0],
        options.source.name(),
        imported.dir.display()
    );
    Ok(())
}
