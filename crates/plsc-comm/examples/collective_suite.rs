//! The plsc-comm collective suite on the MPI communicator, one process per rank:
//!
//! ```text
//! cargo build -p plsc-comm --features mpi --example collective_suite
//! mpirun --allow-run-as-root --oversubscribe -np 2 target/debug/examples/collective_suite
//! ```
//!
//! Every rank checks every collective, bit for bit, against the serial reference (sums in rank
//! order), and exits non-zero on the first difference or error.

use std::process::ExitCode;

use plsc_comm::mpi::MpiComm;
use plsc_comm::testing::collective_suite;
use plsc_comm::{CommExt, Communicator, ReduceOp};

fn main() -> ExitCode {
    let mut comm = match MpiComm::init() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("collective_suite: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Once with the default rounds (one round per call here), once with 24-byte rounds so the
    // multi-round paths (MPI count limits, bounded staging) run too.
    let outcome = collective_suite(&comm)
        .and_then(|a| {
            comm.set_chunk_bytes(24);
            Ok(a + collective_suite(&comm)?)
        })
        .and_then(|checked| {
            // Every rank passed: agree on it, so that rank 0's line speaks for the world.
            let mut ok = [checked as i64];
            comm.all_reduce(&mut ok, ReduceOp::Min)?;
            Ok(ok[0])
        });
    match outcome {
        Ok(checked) => {
            println!(
                "collective_suite: rank {} of {}: {checked} results equal the serial reference",
                comm.rank(),
                comm.world_size()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("collective_suite: {e}");
            ExitCode::FAILURE
        }
    }
}
