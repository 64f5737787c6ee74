//! `cargo xtask`: the plsc-rs command line.
//!
//! Each command lives in its own module; this file only parses arguments and dispatches.

use clap::{Parser, Subcommand};

mod bench;
mod data;
mod eval;
mod head_check;
mod import;
mod import_idx;
mod launch;
#[cfg(feature = "blas")]
mod openblas;
mod plot;
mod reshard;
mod serve;
mod train;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// plsc-rs: large-scale classification training (face recognition over millions of classes).
#[derive(Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks that print JSON with the figures and the machine they ran on.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Training data: shuffle-split, importers (RecordIO, folder, label list), synth, inspect.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Run the head on given tensors and write its loss and gradients (compare with PyTorch).
    HeadCheck(head_check::HeadCheckArgs),
    /// Verification figures (10-fold accuracy, TAR@FAR, XNorm) as InsightFace computes them.
    ///
    /// Squared L2 distance of L2-normalised embeddings; 10 contiguous folds (scikit-learn KFold);
    /// threshold 0..4 step 0.01 chosen on nine folds (first maximum) and applied to the tenth;
    /// TAR at FAR = 1e-3 with the threshold interpolated on the training folds as InsightFace's
    /// calculate_val; XNorm = mean L2 norm of the raw embeddings. Input: given embeddings
    /// (--embeddings, --issame), or an exported model and InsightFace .bin pair sets (--model,
    /// --bin), embedding every image and its mirror image (the flip test).
    Eval(eval::EvalArgs),
    /// PNG charts of a run: loss, learning rate and accuracy against the step, and the ROC of
    /// every verification (log-scale FPR, AUC and TAR@FAR in the legend). Prints the paths.
    Plot(plot::PlotArgs),
    /// Start one process per rank on this node (torchrun style): rank layout in the
    /// environment, output prefixed with `[rank r]`, signals forwarded, and when one rank fails
    /// the others are stopped and launch exits non-zero. Example:
    /// `cargo xtask launch --nproc-per-node 2 --backend mpi -- train`.
    Launch(launch::LaunchArgs),
    /// Test helper of `launch`: prints its rank environment, sleeps, maybe fails.
    #[command(hide = true)]
    LaunchProbe(launch::ProbeArgs),
    /// Reshard a checkpoint to another rank count (head rows bit for bit, streamed from mmaps).
    Reshard(reshard::ReshardArgs),
    /// Export a checkpoint's backbone for inference: backbone.safetensors + model.json
    /// (--out), and/or an ONNX model (--onnx, opset 17) of a checkpoint or a model directory.
    Export(reshard::ExportArgs),
    /// Import a model trained elsewhere (arcface_torch's backbone.pth) as a model directory
    /// for `serve` and `eval --model`.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Serve an exported model over HTTP/JSON with dynamic batching: POST /v1/encode, PLSC's
    /// POST /FaceClassifyService/inference, GET /healthz, /v1/model, /metrics. Stops on
    /// SIGINT/SIGTERM after answering the requests in flight. Face models expect aligned
    /// face crops; the server does not detect or align faces. See docs/serving.md.
    Serve(serve::ServeArgs),
    /// Ask a running server (or several, in turn) for embeddings; one JSON line per image.
    Encode(serve::EncodeArgs),
    /// Train: the shipped Fashion-MNIST job with no arguments (2 rank threads, dist_arcface,
    /// iresnet_tiny), or `--config FILE` (TOML/JSON) with flag overrides; writes runs/<time>/.
    Train(Box<train::TrainArgs>),
    /// IDX files (MNIST, Fashion-MNIST) into the base64 layout plus a held-out-class `.bin`
    /// pair set (how datasets/fashion_mnist was built).
    ImportIdx(import_idx::ImportIdxArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    #[cfg(feature = "blas")]
    openblas::ensure_core_type();
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(cmd) => bench::run(cmd),
        Command::Data(cmd) => data::run(cmd),
        Command::HeadCheck(args) => head_check::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Plot(args) => plot::run(args),
        Command::Launch(args) => launch::run(args),
        Command::LaunchProbe(args) => launch::probe(args),
        Command::Reshard(args) => reshard::run_reshard(args),
        Command::Export(args) => reshard::run_export(args),
        Command::Import(cmd) => import::run(cmd),
        Command::Serve(args) => serve::run_serve(args),
        Command::Encode(args) => serve::run_encode(args),
        Command::Train(args) => train::run(*args),
        Command::ImportIdx(args) => import_idx::run(args),
    }
}
