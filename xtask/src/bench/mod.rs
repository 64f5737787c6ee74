//! `cargo xtask bench <target>`: each target in its own module, each printing one JSON document
//! on stdout with its figures and `machine` (see [`crate::machine`]).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {}
}
