//! `cargo xtask bench <target>`: each target in its own module, each printing one JSON document
//! on stdout with its figures and `machine` (see `plsc_train::machine`).

use clap::Subcommand;

mod backbone;
mod backbone_profile;
mod ckpt;
mod comm;
mod data;
mod eval;
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
mod head;
mod peer;
mod serve;
mod stats;
mod train;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Checkpoints: save and load MB/s, peak RssAnon of resharding a 1M x 512 head 4 -> 3 ranks.
    Ckpt(ckpt::CkptArgs),
    /// A backbone's forward and forward+backward images per second on burn-flex.
    Backbone(backbone::BackboneArgs),
    /// Collectives of the thread group (all-reduce, all-gather) against a plain memcpy.
    Comm(comm::CommArgs),
    /// Data: shuffle-split MB/s and peak RssAnon on a generated input; JPEG decode+augment images/s.
    Data(data::DataArgs),
    /// Verification: .bin pickle MB/s, JPEG decode and flipped-batch images/s, metrics time.
    Eval(eval::EvalBenchArgs),
    /// The sharded head: step time, GFLOP/s against a plain matmul, and work-buffer memory.
    Head(head::HeadArgs),
    /// The embedding server on loopback: requests/s and p50/p99 latency of single-image
    /// requests at concurrency 1 and 16, dynamic batching on and off.
    Serve(serve::ServeBenchArgs),
    /// Training steps of the whole loop: global images/s split into data, backbone, head and
    /// communication time.
    Train(train::TrainArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Ckpt(args) => ckpt::run(args),
        BenchCommand::Backbone(args) => backbone::run(args),
        BenchCommand::Comm(args) => comm::run(args),
        BenchCommand::Data(args) => data::run(args),
        BenchCommand::Eval(args) => eval::run(args),
        BenchCommand::Head(args) => head::run(args),
        BenchCommand::Serve(args) => serve::run(args),
        BenchCommand::Train(args) => train::run(args),
    }
}

/// Runs `body` in a fresh scratch folder `<dir or the temp dir>/plsc-bench-<name>-<pid>`,
/// removes the folder whatever happened, and prints the report as one JSON document.
pub fn run_in_scratch<R: serde::Serialize>(
    dir: Option<std::path::PathBuf>,
    name: &str,
    body: impl FnOnce(&std::path::Path) -> anyhow::Result<R>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let base = dir.unwrap_or_else(std::env::temp_dir);
    let scratch = base.join(format!("plsc-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = body(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    println!("{}", serde_json::to_string_pretty(&result?)?);
    Ok(())
}
