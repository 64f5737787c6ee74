//! The call descriptor: what a rank says about the collective it is entering (operation, its
//! arguments, each buffer's element type and length), and the checks every backend runs on all
//! ranks' descriptors before any data moves, so that mismatched calls are the same named error
//! on every rank instead of a hang or an out-of-bounds read.
//!
//! - [`desc`]: [`OpKind`], [`BufDesc`], [`Desc`]: the descriptor itself.
//! - [`validate`]: the checks on all ranks' descriptors ([`validate()`](validate::validate)),
//!   and the rank-independent [`Failure`] each rank turns into its own `CommError`.
//! - [`codec`]: a descriptor as `u64` words for the multi-process backends (MPI, TCP), which
//!   exchange them and run [`validate()`](validate::validate) on every rank; the thread group
//!   validates the descriptors in shared memory.
//! - [`fixed`] (feature `nccl`): the fixed-width form NCCL all-gathers on the device (every
//!   rank must send the same number of words), with list arguments as hashes, and its checks;
//!   it names operations with the same [`OpKind`].

pub(crate) mod codec;
pub(crate) mod desc;
#[cfg(feature = "nccl")]
pub(crate) mod fixed;
pub(crate) mod validate;

pub(crate) use desc::{BufDesc, Desc, OpKind};
pub(crate) use validate::{Failure, validate};
