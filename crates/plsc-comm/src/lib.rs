//! Collectives for plsc-rs: the [`Communicator`] trait that the sharded head and data-parallel
//! training call, and [`ThreadGroup`], ranks as threads in one process over shared memory.
//!
//! In the flow: **`comm`** <- `core` (the head's all-gather / all-reduce / reduce-scatter) and
//! `train` (gradient all-reduce). Backends over NCCL and MPI implement the same trait.
//!
//! - [`Communicator`] works on host slices ([`HostSlice`], typed through [`CommExt`]);
//!   [`tensor::TensorComm`] takes burn tensors and is where device backends plug in.
//! - [`ThreadGroup`] / [`run_ranks`]: one [`ThreadComm`] per rank thread. Reductions fold the
//!   ranks in order 0..N, so results are bitwise identical on every rank; a failure (a rank
//!   that panics or leaves, mismatched calls, the optional timeout) is a [`CommError`] on every
//!   rank, never a hang.

mod communicator;
mod element;
mod error;
pub mod tensor;
mod thread_group;

pub use communicator::{CommExt, Communicator, ReduceOp};
pub use element::{DType, Element, HostSlice, HostSliceMut, HostVec};
pub use error::CommError;
pub use thread_group::{ThreadComm, ThreadGroup, ThreadGroupOptions, run_ranks, run_ranks_with};
