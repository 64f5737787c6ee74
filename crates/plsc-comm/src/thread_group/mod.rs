//! Ranks as threads in one process: [`ThreadGroup`] gives one [`ThreadComm`] per rank thread,
//! and the collectives move data through shared memory.
//!
//! How a collective runs:
//! 1. **Entry rendezvous** ([`rendezvous`]): each rank posts a descriptor (the operation, its
//!    arguments, element type, address and length of its buffers). The last rank to arrive
//!    checks that all calls fit together and publishes one outcome: every rank proceeds, or
//!    every rank returns the same kind of error (`Mismatch`, `DTypeMismatch`, `BadLength`,
//!    `BadRank`). This is the only step that can fail: a peer that left gives `PeerLeft`, the
//!    optional timeout gives `Timeout` (and breaks the group: later calls give `Broken`).
//! 2. **Data movement** ([`kernels`]): every rank reads the other ranks' buffers through the
//!    posted addresses and writes only its own, in phases separated by an unconditional
//!    [`inner_barrier`]; the last barrier keeps every buffer alive until nobody reads it.
//!
//! Reductions fold the ranks in order 0, 1, ..., N-1 and each element is computed by exactly
//! one rank, so results are bitwise identical on every rank and independent of timing.

mod inner_barrier;
mod kernels;
mod rendezvous;
mod run;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::call::{BufDesc, Desc, OpKind};
use rendezvous::Shared;

use crate::communicator::{Communicator, ReduceOp};
use crate::element::{HostSlice, HostSliceMut, HostVec};
use crate::error::CommError;

pub use run::{run_ranks, run_ranks_with};

/// Options of a [`ThreadGroup`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThreadGroupOptions {
    /// How long a rank waits at the start of a collective for the others before it gives up
    /// with [`CommError::Timeout`] (the group is then broken). `None` (the default) waits as
    /// long as it takes: rank 0 may be busy evaluating or saving a checkpoint while the others
    /// wait. A rank that leaves (drops its communicator) is detected at once either way.
    pub timeout: Option<Duration>,
}

/// Creates groups of ranks that live in one process, one [`ThreadComm`] per rank thread.
#[derive(Debug)]
pub struct ThreadGroup;

impl ThreadGroup {
    /// `n` communicators of a new group, rank 0 first, without a timeout. Move each one to its
    /// own thread (or use [`run_ranks`]).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(n: usize) -> Vec<ThreadComm> {
        Self::with_options(n, ThreadGroupOptions::default())
    }

    /// `n` communicators of a new group with the given options.
    pub fn with_options(n: usize, options: ThreadGroupOptions) -> Vec<ThreadComm> {
        let shared = Arc::new(Shared::new(n, options.timeout));
        (0..n)
            .map(|rank| ThreadComm {
                rank,
                shared: Arc::clone(&shared),
                busy: AtomicBool::new(false),
            })
            .collect()
    }
}

/// One rank of a [`ThreadGroup`]: a [`Communicator`] over shared memory.
///
/// It is `Sync`, but the calls of one rank must not overlap: a collective started while another
/// one is running on the same communicator is refused with [`CommError::Mismatch`].
///
/// Dropping it (when its thread finishes, returns an error or unwinds from a panic) tells the
/// other ranks that this rank left: their pending and later collectives fail with
/// [`CommError::PeerLeft`].
pub struct ThreadComm {
    rank: usize,
    shared: Arc<Shared>,
    /// Set while this rank is inside a collective (one call at a time per rank).
    busy: AtomicBool,
}

impl std::fmt::Debug for ThreadComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadComm")
            .field("rank", &self.rank)
            .field("world", &self.shared.world)
            .finish()
    }
}

impl Drop for ThreadComm {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            "it panicked"
        } else {
            "its communicator was dropped"
        };
        self.shared.leave(self.rank, reason);
    }
}

/// Clears [`ThreadComm::busy`] when the call ends.
struct BusyGuard<'a>(&'a AtomicBool);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Aborts the process if a panic starts while it is alive: held across the data phase of a
/// collective, where other ranks may be reading this rank's buffers and waiting for it at the
/// inner barriers. Unwinding there would free buffers under their readers and leave them
/// waiting forever; the data phase is written not to panic, so this is a last line of defence.
struct AbortOnUnwind {
    already_panicking: bool,
}

impl AbortOnUnwind {
    fn new() -> Self {
        Self {
            already_panicking: std::thread::panicking(),
        }
    }
}

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.already_panicking {
            eprintln!("plsc-comm: panic inside the data phase of a collective; aborting");
            std::process::abort();
        }
    }
}

impl ThreadComm {
    /// Marks this rank busy for the duration of one collective.
    fn begin(&self, op: &'static str) -> Result<BusyGuard<'_>, CommError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(CommError::Mismatch {
                rank: self.rank,
                op,
                detail: "another collective is already running on this rank's communicator \
                         (calls on one rank must not overlap)"
                    .to_string(),
            });
        }
        Ok(BusyGuard(&self.busy))
    }
}

impl Communicator for ThreadComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_raw(&self, mut buf: HostSliceMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        let kind = OpKind::AllReduce(op);
        let _busy = self.begin(kind.name())?;
        let desc = Desc::new(kind, vec![BufDesc::of_mut(&mut buf)]);
        let round = self.shared.rendezvous(self.rank, desc)?;
        let _abort = AbortOnUnwind::new();
        kernels::all_reduce(&self.shared.inner, &round, self.rank, op);
        Ok(())
    }

    fn all_reduce_sum_fused_raw(&self, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
        let kind = OpKind::AllReduceSumFused;
        let _busy = self.begin(kind.name())?;
        let desc = Desc::new(kind, bufs.iter_mut().map(BufDesc::of_mut).collect());
        let round = self.shared.rendezvous(self.rank, desc)?;
        let _abort = AbortOnUnwind::new();
        kernels::all_reduce(&self.shared.inner, &round, self.rank, ReduceOp::Sum);
        Ok(())
    }

    fn all_gather_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
    ) -> Result<(), CommError> {
        let kind = OpKind::AllGather;
        let _busy = self.begin(kind.name())?;
        let desc = Desc::new(kind, vec![BufDesc::of(&send), BufDesc::of_mut(&mut recv)]);
        let round = self.shared.rendezvous(self.rank, desc)?;
        let _abort = AbortOnUnwind::new();
        kernels::all_gather(&self.shared.inner, &round, self.rank);
        Ok(())
    }

    fn all_gather_varcount_raw(
        &self,
        send: HostSlice<'_>,
        recv: &mut HostVec,
    ) -> Result<Vec<usize>, CommError> {
        let kind = OpKind::AllGatherVarcount;
        let _busy = self.begin(kind.name())?;
        let desc = Desc::new(kind, vec![BufDesc::of(&send)]);
        let round = self.shared.rendezvous(self.rank, desc)?;
        let _abort = AbortOnUnwind::new();
        Ok(kernels::all_gather_varcount(
            &self.shared.inner,
            &round,
            recv,
        ))
    }

    fn reduce_scatter_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError> {
        let kind = OpKind::ReduceScatter;
        let _busy = self.begin(kind.name())?;
        let mut desc = Desc::new(kind, vec![BufDesc::of(&send), BufDesc::of_mut(&mut recv)]);
        desc.counts = counts.to_vec();
        let round = self.shared.rendezvous(self.rank, desc)?;
        let _abort = AbortOnUnwind::new();
        kernels::reduce_scatter(&self.shared.inner, &round, self.rank);
        Ok(())
    }

    fn broadcast_raw(&self, mut buf: HostSliceMut<'_>, root: usize) -> Result<(), CommError> {
        let kind = OpKind::Broadcast { root };
        let _busy = self.begin(kind.name())?;
        let desc = Desc::new(kind, vec![BufDesc::of_mut(&mut buf)]);
        let round = self.shared.rendezvous(self.rank, desc)?;
        let _abort = AbortOnUnwind::new();
        kernels::broadcast(&self.shared.inner, &round, self.rank, root);
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        let kind = OpKind::Barrier;
        let _busy = self.begin(kind.name())?;
        self.shared
            .rendezvous(self.rank, Desc::new(kind, Vec::new()))?;
        Ok(())
    }
}
