//! [`MpiComm`]: a [`Communicator`] over MPI (feature `mpi`; Open MPI from the system's
//! packages), one per process, for ranks started by `mpirun` or `cargo xtask launch --backend
//! mpi`.
//!
//! Every collective starts with an all-gather of the ranks' call descriptors (operation,
//! arguments, element types, lengths) and the thread group's validation, so a mismatch is the
//! same named error on every rank before any data moves. Reductions never use MPI's own
//! reduction (whose summation order is unspecified): the ranks exchange their data and fold
//! it in rank order 0..N-1, so a 2-process MPI run gives the same bits as a 2-thread run.
//!
//! A rank that dies or exits with an error makes `mpirun` stop the job (MPI's default error
//! handler aborts), so the other ranks end instead of hanging.

mod exchange;

use std::sync::{Mutex, TryLockError};

use ::mpi::Threading;
use ::mpi::environment::Universe;
use ::mpi::topology::{Communicator as _, SimpleCommunicator};
use ::mpi::traits::CommunicatorCollectives;

use exchange::MpiElement;

use crate::call::codec;
use crate::call::{BufDesc, Desc, OpKind, validate};
use crate::communicator::{Communicator, ReduceOp};
use crate::element::{HostSlice, HostSliceMut, HostVec};
use crate::error::CommError;

/// MPI's world communicator with the raw handle made shareable: calls are serialised by the
/// mutex in [`MpiComm`] and MPI was initialised with at least `MPI_THREAD_SERIALIZED`.
struct World(SimpleCommunicator);

// SAFETY: the handle is only used under `MpiComm::world`'s mutex (one MPI call at a time from
// any thread), which MPI_THREAD_SERIALIZED permits.
unsafe impl Send for World {}

/// One rank of the MPI world. Create it once per process with [`MpiComm::init`]; dropping it
/// finalises MPI.
pub struct MpiComm {
    rank: usize,
    world_size: usize,
    world: Mutex<World>,
    /// Bytes per rank and round of the chunked exchanges.
    chunk_bytes: usize,
    /// Dropped after `world` (fields drop in order): finalises MPI.
    _universe: Universe,
}

impl std::fmt::Debug for MpiComm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiComm")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .finish()
    }
}

impl MpiComm {
    /// Initialises MPI (thread level serialised) and returns this process's rank of the world.
    /// Fails if MPI was already initialised in this process or offers no thread support.
    pub fn init() -> Result<Self, CommError> {
        let err = |detail: String| CommError::Backend {
            rank: 0,
            op: "mpi_init",
            detail,
        };
        let (universe, level) = ::mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| err("MPI is already initialised in this process".to_string()))?;
        if level < Threading::Serialized {
            return Err(err(format!(
                "the MPI library offers thread level {level:?}; plsc-comm needs Serialized"
            )));
        }
        let world = universe.world();
        let rank = usize::try_from(world.rank()).map_err(|e| err(e.to_string()))?;
        let world_size = usize::try_from(world.size()).map_err(|e| err(e.to_string()))?;
        tracing::debug!(rank, world_size, "MPI initialised");
        Ok(Self {
            rank,
            world_size,
            world: Mutex::new(World(world)),
            chunk_bytes: exchange::CHUNK_BYTES,
            _universe: universe,
        })
    }

    /// Sets how many bytes per rank one round of a collective moves (default 16 MiB; larger
    /// buffers go in several rounds). Tests set it tiny to exercise the rounds.
    #[doc(hidden)]
    pub fn set_chunk_bytes(&mut self, bytes: usize) {
        self.chunk_bytes = bytes.max(1);
    }

    /// Takes the world for one collective; an overlapping call from another thread of this
    /// rank is refused (like the thread group does).
    fn lock(&self, op: &'static str) -> Result<std::sync::MutexGuard<'_, World>, CommError> {
        match self.world.try_lock() {
            Ok(g) => Ok(g),
            Err(TryLockError::Poisoned(p)) => Ok(p.into_inner()),
            Err(TryLockError::WouldBlock) => Err(CommError::Mismatch {
                rank: self.rank,
                op,
                detail: "another collective is already running on this rank's communicator \
                         (calls on one rank must not overlap)"
                    .to_string(),
            }),
        }
    }

    /// All-gathers every rank's descriptor and validates them (the same outcome everywhere).
    fn agree(&self, comm: &SimpleCommunicator, desc: &Desc) -> Result<Vec<Desc>, CommError> {
        let op = desc.op.name();
        let words = codec::encode(desc);
        let mut lens = vec![0u64; self.world_size];
        comm.all_gather_into(&(words.len() as u64), &mut lens[..]);
        let counts: Vec<usize> = lens.iter().map(|&l| l as usize).collect();
        let mut all = vec![0u64; counts.iter().sum()];
        exchange::all_gatherv(comm, self.chunk_bytes, &words, &counts, &mut all);
        let mut descs = Vec::with_capacity(self.world_size);
        let mut at = 0;
        for (r, &n) in counts.iter().enumerate() {
            let d = codec::decode(&all[at..at + n]).ok_or_else(|| CommError::Mismatch {
                rank: self.rank,
                op,
                detail: format!("rank {r} sent a descriptor this build cannot read"),
            })?;
            descs.push(d);
            at += n;
        }
        validate(&descs).map_err(|f| f.to_error(self.rank, self.world_size, op))?;
        Ok(descs)
    }
}

macro_rules! dispatch_mut {
    ($buf:expr, |$b:ident| $body:expr) => {
        match $buf {
            HostSliceMut::F32($b) => $body,
            HostSliceMut::F64($b) => $body,
            HostSliceMut::I64($b) => $body,
            HostSliceMut::U8($b) => $body,
        }
    };
}

fn gather_eq<T: MpiElement>(
    comm: &SimpleCommunicator,
    chunk_bytes: usize,
    send: &[T],
    recv: &mut [T],
    world: usize,
) {
    exchange::all_gatherv(comm, chunk_bytes, send, &vec![send.len(); world], recv);
}

fn gather_var<T: MpiElement>(
    comm: &SimpleCommunicator,
    chunk_bytes: usize,
    send: &[T],
    counts: &[usize],
) -> HostVec {
    let mut out = vec![T::default(); counts.iter().sum()];
    exchange::all_gatherv(comm, chunk_bytes, send, counts, &mut out);
    T::into_host_vec(out)
}

/// Send and receive types differ (validation refuses this on every rank first).
fn type_pair_error(rank: usize, op: &'static str) -> CommError {
    CommError::Mismatch {
        rank,
        op,
        detail: "send and recv hold different element types".to_string(),
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_raw(&self, mut buf: HostSliceMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        let kind = OpKind::AllReduce(op);
        let w = self.lock(kind.name())?;
        self.agree(&w.0, &Desc::new(kind, vec![BufDesc::of_mut(&mut buf)]))?;
        dispatch_mut!(buf, |b| exchange::all_reduce(
            &w.0,
            self.chunk_bytes,
            self.rank,
            b,
            op
        ));
        Ok(())
    }

    fn all_reduce_sum_fused_raw(&self, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
        let kind = OpKind::AllReduceSumFused;
        let w = self.lock(kind.name())?;
        self.agree(
            &w.0,
            &Desc::new(kind, bufs.iter_mut().map(BufDesc::of_mut).collect()),
        )?;
        for buf in bufs.iter_mut() {
            dispatch_mut!(buf, |b| exchange::all_reduce(
                &w.0,
                self.chunk_bytes,
                self.rank,
                b,
                ReduceOp::Sum
            ));
        }
        Ok(())
    }

    fn all_gather_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
    ) -> Result<(), CommError> {
        let kind = OpKind::AllGather;
        let w = self.lock(kind.name())?;
        self.agree(
            &w.0,
            &Desc::new(kind, vec![BufDesc::of(&send), BufDesc::of_mut(&mut recv)]),
        )?;
        let (n, cb) = (self.world_size, self.chunk_bytes);
        match (send, recv) {
            (HostSlice::F32(s), HostSliceMut::F32(r)) => gather_eq(&w.0, cb, s, r, n),
            (HostSlice::F64(s), HostSliceMut::F64(r)) => gather_eq(&w.0, cb, s, r, n),
            (HostSlice::I64(s), HostSliceMut::I64(r)) => gather_eq(&w.0, cb, s, r, n),
            (HostSlice::U8(s), HostSliceMut::U8(r)) => gather_eq(&w.0, cb, s, r, n),
            // Validation refused differing send and receive types on every rank.
            _ => return Err(type_pair_error(self.rank, kind.name())),
        }
        Ok(())
    }

    fn all_gather_varcount_raw(
        &self,
        send: HostSlice<'_>,
        recv: &mut HostVec,
    ) -> Result<Vec<usize>, CommError> {
        let kind = OpKind::AllGatherVarcount;
        let w = self.lock(kind.name())?;
        let descs = self.agree(&w.0, &Desc::new(kind, vec![BufDesc::of(&send)]))?;
        let counts: Vec<usize> = descs.iter().map(|d| d.bufs[0].len).collect();
        *recv = match send {
            HostSlice::F32(s) => gather_var(&w.0, self.chunk_bytes, s, &counts),
            HostSlice::F64(s) => gather_var(&w.0, self.chunk_bytes, s, &counts),
            HostSlice::I64(s) => gather_var(&w.0, self.chunk_bytes, s, &counts),
            HostSlice::U8(s) => gather_var(&w.0, self.chunk_bytes, s, &counts),
        };
        Ok(counts)
    }

    fn reduce_scatter_raw(
        &self,
        send: HostSlice<'_>,
        mut recv: HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError> {
        let kind = OpKind::ReduceScatter;
        let w = self.lock(kind.name())?;
        let mut desc = Desc::new(kind, vec![BufDesc::of(&send), BufDesc::of_mut(&mut recv)]);
        desc.counts = counts.to_vec();
        self.agree(&w.0, &desc)?;
        let (c, cb, me, s) = (&w.0, self.chunk_bytes, self.rank, ReduceOp::Sum);
        match (send, recv) {
            (HostSlice::F32(a), HostSliceMut::F32(b)) => {
                exchange::reduce_scatter(c, cb, me, a, counts, b, s)
            }
            (HostSlice::F64(a), HostSliceMut::F64(b)) => {
                exchange::reduce_scatter(c, cb, me, a, counts, b, s)
            }
            (HostSlice::I64(a), HostSliceMut::I64(b)) => {
                exchange::reduce_scatter(c, cb, me, a, counts, b, s)
            }
            (HostSlice::U8(a), HostSliceMut::U8(b)) => {
                exchange::reduce_scatter(c, cb, me, a, counts, b, s)
            }
            _ => return Err(type_pair_error(self.rank, kind.name())),
        }
        Ok(())
    }

    fn broadcast_raw(&self, mut buf: HostSliceMut<'_>, root: usize) -> Result<(), CommError> {
        let kind = OpKind::Broadcast { root };
        let w = self.lock(kind.name())?;
        self.agree(&w.0, &Desc::new(kind, vec![BufDesc::of_mut(&mut buf)]))?;
        dispatch_mut!(buf, |b| exchange::broadcast(
            &w.0,
            self.chunk_bytes,
            b,
            root
        ));
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        let kind = OpKind::Barrier;
        let w = self.lock(kind.name())?;
        // The descriptor all-gather completes only once every rank has entered it.
        self.agree(&w.0, &Desc::new(kind, Vec::new()))?;
        Ok(())
    }
}
