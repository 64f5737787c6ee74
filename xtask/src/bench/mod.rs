//! `cargo xtask bench <target>`: each target in its own module, each printing one JSON document
//! on stdout with its figures and `machine` (see [`crate::machine`]).

use clap::Subcommand;

mod comm;
mod data;
mod eval;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Collectives of the thread group (all-reduce, all-gather) against a plain memcpy.
    Comm(comm::CommArgs),
    /// Data: shuffle-split MB/s and peak RssAnon on a generated input; JPEG decode+augment images/s.
    Data(data::DataArgs),
    /// Verification: .bin pickle MB/s, JPEG decode and flipped-batch images/s, metrics time.
    Eval(eval::EvalBenchArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Comm(args) => comm::run(args),
        BenchCommand::Data(args) => data::run(args),
        BenchCommand::Eval(args) => eval::run(args),
    }
}
