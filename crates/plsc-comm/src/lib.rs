//! Collectives for plsc-rs: the [`Communicator`] trait that the sharded head and data-parallel
//! training call, and [`ThreadGroup`], ranks as threads in one process over shared memory.
//!
//! In the flow: **`comm`** <- `core` (the head's all-gather / all-reduce / reduce-scatter) and
//! `train` (gradient all-reduce). Backends over NCCL and MPI implement the same trait.
//!
//! Across processes: [`env::RankEnv::from_env`] reads the launcher's variables,
//! [`rendezvous::Rendezvous`] meets the world over TCP (and hands out a bootstrap blob such as
//! the NCCL unique id), [`backend::connect`] builds the communicator a backend name asks for
//! ([`tcp::TcpComm`] over the rendezvous, `mpi::MpiComm` under feature `mpi`), and
//! [`testing::collective_suite`] checks any communicator against a serial reference.
//!
//! - [`Communicator`] works on host slices ([`HostSlice`], typed through [`CommExt`]);
//!   [`tensor::TensorComm`] takes burn tensors and is where device backends plug in.
//! - [`ThreadGroup`] / [`run_ranks`]: one [`ThreadComm`] per rank thread. Reductions fold the
//!   ranks in order 0..N, so results are bitwise identical on every rank; a failure (a rank
//!   that panics or leaves, mismatched calls, the optional timeout) is a [`CommError`] on every
//!   rank, never a hang.
//! - Every backend describes a call the same way before any data moves (the crate-private
//!   `call` module: operation, element types, lengths; checked on every rank), so mismatched
//!   calls are the same named [`CommError`] on the thread group, TCP, MPI and NCCL.

pub mod backend;
mod call;
mod communicator;
#[cfg(feature = "nccl")]
mod device_dtype;
mod element;
pub mod env;
mod error;
#[cfg(feature = "mpi")]
pub mod mpi;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod rendezvous;
pub mod tcp;
pub mod tensor;
pub mod testing;
mod thread_group;

pub use communicator::{CommExt, Communicator, ReduceOp};
pub use element::{DType, Element, HostSlice, HostSliceMut, HostVec};
pub use error::CommError;
pub use thread_group::{ThreadComm, ThreadGroup, ThreadGroupOptions, run_ranks, run_ranks_with};
