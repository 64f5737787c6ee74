//! `cargo xtask bench <target>`: each target in its own module, each printing one JSON document
//! on stdout with its figures and `machine` (see [`crate::machine`]).

use clap::Subcommand;

mod backbone;
mod ckpt;
mod comm;
mod data;
mod eval;
mod head;
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
        BenchCommand::Train(args) => train::run(args),
    }
}
