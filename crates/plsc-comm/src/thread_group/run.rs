//! [`run_ranks`]: run a closure on n rank threads with a fresh thread group.

use std::any::Any;
use std::thread;

use super::{ThreadComm, ThreadGroup, ThreadGroupOptions};
use crate::error::CommError;

/// Runs `f` on `n` scoped rank threads (named `plsc-rank-<r>`), each with its own
/// [`ThreadComm`] of a new group, and returns each rank's result in rank order.
///
/// A rank that panics yields `Err(E::from(CommError::Panicked { .. }))`; its communicator is
/// dropped during the unwind, so the other ranks' collectives fail with
/// [`CommError::PeerLeft`] instead of hanging. A rank that returns (with a value or an error)
/// drops its communicator in the same way. Use
/// `run_ranks(..).into_iter().collect::<Result<Vec<_>, _>>()` for the first error.
///
/// ```
/// use plsc_comm::{CommExt, CommError, Communicator, ReduceOp, run_ranks};
/// let sums = run_ranks(3, |comm| {
///     let mut x = [comm.rank() as f32, 1.0];
///     comm.all_reduce(&mut x, ReduceOp::Sum)?;
///     Ok::<_, CommError>(x)
/// });
/// for s in sums {
///     assert_eq!(s.unwrap(), [3.0, 3.0]);
/// }
/// ```
pub fn run_ranks<T, E, F>(n: usize, f: F) -> Vec<Result<T, E>>
where
    T: Send,
    E: From<CommError> + Send,
    F: Fn(ThreadComm) -> Result<T, E> + Sync,
{
    run_ranks_with(n, ThreadGroupOptions::default(), f)
}

/// [`run_ranks`] with group options (for example a timeout).
pub fn run_ranks_with<T, E, F>(n: usize, options: ThreadGroupOptions, f: F) -> Vec<Result<T, E>>
where
    T: Send,
    E: From<CommError> + Send,
    F: Fn(ThreadComm) -> Result<T, E> + Sync,
{
    let comms = ThreadGroup::with_options(n, options);
    let f = &f;
    thread::scope(|scope| {
        let handles: Vec<_> = comms
            .into_iter()
            .enumerate()
            .map(|(rank, comm)| {
                // If spawning fails, the closure and with it `comm` are dropped, so the other
                // ranks see this rank leave.
                thread::Builder::new()
                    .name(format!("plsc-rank-{rank}"))
                    .spawn_scoped(scope, move || f(comm))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(rank, handle)| match handle {
                Ok(handle) => handle.join().unwrap_or_else(|payload| {
                    Err(E::from(CommError::Panicked {
                        rank,
                        message: panic_message(payload.as_ref()),
                    }))
                }),
                Err(e) => Err(E::from(CommError::Backend {
                    rank,
                    op: "run_ranks",
                    detail: format!("could not spawn the rank thread: {e}"),
                })),
            })
            .collect()
    })
}

/// The message of a panic payload (`panic!("...")` gives a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}
