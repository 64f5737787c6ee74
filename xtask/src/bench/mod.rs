//! `cargo xtask bench <target>`: each target in its own module, each printing one JSON document
//! on stdout with its figures and `machine` (see [`crate::machine`]).

use clap::Subcommand;

mod comm;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Collectives of the thread group (all-reduce, all-gather) against a plain memcpy.
    Comm(comm::CommArgs),
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Comm(args) => comm::run(args),
    }
}
