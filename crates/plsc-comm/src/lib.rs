//! Collectives for plsc-rs: the [`Communicator`] trait that the sharded head and data-parallel
//! training call, and [`ThreadGroup`], ranks as threads in one process over shared memory.
//!
//! In the flow: **`comm`** <- `core` (the head's all-gather / all-reduce / reduce-scatter) and
//! `train` (gradient all-reduce). Backends over NCCL and MPI implement the same trait.

mod communicator;
mod element;
mod error;
pub mod tensor;
mod thread_group;

pub use communicator::{CommExt, Communicator, ReduceOp};
pub use element::{DType, Element, HostSlice, HostSliceMut, HostVec};
pub use error::CommError;
pub use thread_group::{ThreadComm, ThreadGroup, ThreadGroupOptions, run_ranks, run_ranks_with};
