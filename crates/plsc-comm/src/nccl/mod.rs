//! NCCL between GPUs (feature `nccl`): [`NcclComm`], one per process and device.
//!
//! Built on cudarc 0.19, the version burn-cuda 0.21 links (through cubecl-cuda 0.10), with the
//! same features, so there is one cudarc in the build and device addresses pass between
//! burn-cuda and NCCL. CUDA and NCCL are loaded at run time: the crate builds without CUDA,
//! and a missing library is [`CommError::LibraryMissing`](crate::CommError::LibraryMissing),
//! not a panic. NCCL installs `libnccl.so.2`, which cudarc does not look for: put a link named
//! `libnccl.so` on `LD_LIBRARY_PATH` ([`library::NCCL_HINT`]).
//!
//! # Bootstrapping
//! Rank 0 calls [`NcclComm::unique_id`] and sends the 128 bytes to every rank (the launcher's
//! rendezvous carries them); every rank then calls
//! [`NcclComm::new(rank, world, &id, device)`](NcclComm::new), which returns once all ranks
//! have joined. [`NcclComm::from_env`] does all of it for a launched process (GPU = local
//! rank). NCCL does not put two ranks of one communicator on the same GPU.
//!
//! # Three ways in
//! - **Host slices** ([`Communicator`](crate::Communicator), what the head and training call
//!   today): each call copies the input to the device, runs NCCL, and copies the result back.
//!   That is two PCIe transfers per call on top of the network (plus one small descriptor
//!   all-gather with validation on), so it suits small and medium buffers; large gradients
//!   belong on the device paths.
//! - **Device memory** ([`NcclComm::all_reduce_device`] and friends on cudarc buffers;
//!   `*_ptr` on raw device addresses): no host copies.
//! - **burn-cuda tensors** (`TensorComm<Cuda>`, see [`tensor`](self::tensor)): the tensors'
//!   own device buffers go to NCCL.
//!
//! Every call is synchronous: it returns after the collective finished on the device.
//!
//! # The rank-order contract
//! The [`Communicator`](crate::Communicator) contract asks for sums added in rank order,
//! identical on every rank. NCCL's ring and tree reductions give identical results on every
//! rank (each element is reduced once and then broadcast) but add in an order of NCCL's
//! choosing, so they are not bit for bit the [`ThreadGroup`](crate::ThreadGroup)'s.
//! [`Reduction::RankOrder`] (the default) keeps the contract exactly: host-slice reductions
//! all-gather every rank's values (or, for reduce-scatter, every rank's block via send/recv)
//! and fold them in rank order on the host with the thread group's arithmetic; the
//! `TensorComm<Cuda>` path gathers on the device and adds the blocks in rank order with
//! burn's element-wise add. That moves `N - 1` buffers per rank instead of NCCL's
//! `2 (N - 1) / N`. [`Reduction::Nccl`] trades the bitwise guarantee for NCCL's traffic. The
//! raw device entry points always reduce with NCCL.
//!
//! # Failures
//! With [`NcclOptions::validate`] on (the default), each collective first all-gathers a small
//! descriptor (operation, element type, lengths, root, counts) and every rank checks all of
//! them, so a mismatched call is the same named error on every rank instead of a hang.
//! While waiting, NCCL's asynchronous errors are polled, and [`NcclOptions::timeout`] bounds
//! the wait; either failure aborts the communicator (later calls: `CommError::Broken`). A
//! peer process that dies can still block NCCL inside its first connection set-up; the
//! launcher, which stops every rank when one fails, is the outer guarantee.

mod bootstrap;
mod comm;
mod device;
mod dtype;
mod host;
pub mod library;
pub mod ptr;
pub mod tensor;
mod unique_id;

pub use comm::{NcclComm, NcclOptions, Reduction};
pub use dtype::{DeviceDType, DeviceElement};
pub use ptr::DeviceAddr;
pub use unique_id::UNIQUE_ID_BYTES;
