//! Collectives on device memory: cudarc buffers ([`CudaSlice`](cudarc::driver::CudaSlice),
//! views) and raw device addresses (burn-cuda tensors' buffers). No host copies; every call
//! returns once the collective has finished on the device.
//!
//! Reductions here are NCCL's own ([`Reduction::Nccl`](super::Reduction::Nccl) semantics):
//! identical on every rank, not in rank order. For a rank-order sum on the device, all-gather
//! (or [`NcclComm::gather_blocks_ptr`]) and add the blocks in rank order, as the
//! `TensorComm<Cuda>` implementation does.

use cudarc::driver::{DevicePtr, DevicePtrMut};

use super::comm::NcclComm;
use super::dtype::{DeviceDType, DeviceElement};
use super::ptr::DeviceAddr;
use crate::call::fixed::{Desc, check};
use crate::communicator::ReduceOp;
use crate::error::CommError;

fn bad_len(rank: usize, op: &'static str, detail: String) -> CommError {
    CommError::BadLength { rank, op, detail }
}

impl NcclComm {
    /// Element-wise reduction over ranks of `send` into `recv` (equal lengths on every rank).
    pub fn all_reduce_device<T, S, R>(
        &self,
        send: &S,
        recv: &mut R,
        op: ReduceOp,
    ) -> Result<(), CommError>
    where
        T: DeviceElement,
        S: DevicePtr<T>,
        R: DevicePtrMut<T>,
    {
        let (n, m) = (send.len(), recv.len());
        if n != m {
            return Err(bad_len(
                self.rank_index(),
                "all_reduce_device",
                format!("send has {n} elements but recv has {m}"),
            ));
        }
        let (src, _a) = send.device_ptr(self.stream());
        let src = DeviceAddr::from_raw(src);
        let (dst, _b) = recv.device_ptr_mut(self.stream());
        let dst = DeviceAddr::from_raw(dst);
        // SAFETY: both buffers hold `n` elements of `T` and are borrowed for the whole call.
        unsafe { self.all_reduce_ptr(src, dst, n, T::DEVICE_DTYPE, op) }
    }

    /// In-place [`NcclComm::all_reduce_device`].
    pub fn all_reduce_device_in_place<T, R>(
        &self,
        buf: &mut R,
        op: ReduceOp,
    ) -> Result<(), CommError>
    where
        T: DeviceElement,
        R: DevicePtrMut<T>,
    {
        let n = buf.len();
        let (p, _a) = buf.device_ptr_mut(self.stream());
        let p = DeviceAddr::from_raw(p);
        // SAFETY: `buf` holds `n` elements of `T` and is borrowed for the whole call.
        unsafe { self.all_reduce_ptr(p, p, n, T::DEVICE_DTYPE, op) }
    }

    /// Equal-count all-gather: `recv.len() == world * send.len()`, rank r's `send` at
    /// `recv[r * send.len()..]`.
    pub fn all_gather_device<T, S, R>(&self, send: &S, recv: &mut R) -> Result<(), CommError>
    where
        T: DeviceElement,
        S: DevicePtr<T>,
        R: DevicePtrMut<T>,
    {
        let (n, m) = (send.len(), recv.len());
        let (src, _a) = send.device_ptr(self.stream());
        let src = DeviceAddr::from_raw(src);
        let (dst, _b) = recv.device_ptr_mut(self.stream());
        let dst = DeviceAddr::from_raw(dst);
        // SAFETY: lengths are checked (against `m`) inside before NCCL runs.
        unsafe { self.all_gather_ptr_checked(src, n, dst, m, T::DEVICE_DTYPE) }
    }

    /// Sum (or max/min) reduce-scatter with equal blocks: `send.len() == world * recv.len()`;
    /// rank r receives the reduction of every rank's block r.
    pub fn reduce_scatter_device<T, S, R>(
        &self,
        send: &S,
        recv: &mut R,
        op: ReduceOp,
    ) -> Result<(), CommError>
    where
        T: DeviceElement,
        S: DevicePtr<T>,
        R: DevicePtrMut<T>,
    {
        let counts = vec![recv.len(); self.world()];
        let n = send.len();
        let (src, _a) = send.device_ptr(self.stream());
        let src = DeviceAddr::from_raw(src);
        let (dst, _b) = recv.device_ptr_mut(self.stream());
        let dst = DeviceAddr::from_raw(dst);
        // SAFETY: the buffers' lengths are passed and checked before NCCL runs.
        unsafe {
            self.reduce_scatter_ptr_checked(src, n, dst, counts[0], &counts, T::DEVICE_DTYPE, op)
        }
    }

    /// Every rank's `buf` becomes rank `root`'s.
    pub fn broadcast_device<T, R>(&self, buf: &mut R, root: usize) -> Result<(), CommError>
    where
        T: DeviceElement,
        R: DevicePtrMut<T>,
    {
        let n = buf.len();
        let (p, _a) = buf.device_ptr_mut(self.stream());
        let p = DeviceAddr::from_raw(p);
        // SAFETY: `buf` holds `n` elements and is borrowed for the whole call.
        unsafe { self.broadcast_ptr(p, p, n, T::DEVICE_DTYPE, root) }
    }

    /// All-reduce on raw device addresses (`send` may equal `recv`).
    ///
    /// # Safety
    /// `send` and `recv` must address `count` elements of `dtype` on this communicator's
    /// device, stay alive for the call, and have no unfinished writes on another stream.
    pub unsafe fn all_reduce_ptr(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.session("all_reduce_device", |s| {
            s.agree(Desc::all_reduce(dtype, count, op), None)?;
            if count > 0 {
                // SAFETY: `count` elements of `dtype` at both addresses, alive until `wait`
                // (this function's contract); the ranks agreed on the call above.
                unsafe { s.all_reduce(send, recv, count, dtype, op)? };
            }
            s.wait()
        })
    }

    /// Equal-count all-gather on raw device addresses; `recv_len` (the capacity at `recv`)
    /// must be `world * send_len`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`], with `send_len` elements at `send` and `recv_len` at
    /// `recv`.
    pub unsafe fn all_gather_ptr_checked(
        &self,
        send: DeviceAddr,
        send_len: usize,
        recv: DeviceAddr,
        recv_len: usize,
        dtype: DeviceDType,
    ) -> Result<(), CommError> {
        self.session("all_gather_device", |s| {
            s.agree(Desc::all_gather(dtype, send_len, recv_len), None)?;
            if recv_len != send_len * s.world() {
                return Err(bad_len(
                    s.rank(),
                    s.op,
                    format!(
                        "recv has {recv_len} elements, expected {} x {send_len}",
                        s.world()
                    ),
                ));
            }
            if send_len > 0 {
                // SAFETY: `send_len` elements at `send`, `recv_len == world * send_len` at
                // `recv` (checked just above), alive until `wait` (the contract).
                unsafe { s.all_gather(send, recv, send_len, dtype)? };
            }
            s.wait()
        })
    }

    /// Variable-count all-gather on raw device addresses: rank p's `send_len` elements land in
    /// rank order at `recv`, whose capacity is `recv_capacity` elements. Returns every rank's
    /// count; a capacity smaller than their sum is [`CommError::BadLength`] (on this rank; call
    /// [`NcclComm::exchange_counts`] first to size `recv`).
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`], with `send_len` elements at `send` and
    /// `recv_capacity` at `recv`.
    pub unsafe fn all_gather_var_ptr(
        &self,
        send: DeviceAddr,
        send_len: usize,
        recv: DeviceAddr,
        recv_capacity: usize,
        counts: &[usize],
        dtype: DeviceDType,
    ) -> Result<(), CommError> {
        self.session("all_gather_varcount_device", |s| {
            let total: usize = counts.iter().sum();
            if counts.len() != s.world() || counts[s.rank()] != send_len || total > recv_capacity {
                return Err(bad_len(
                    s.rank(),
                    s.op,
                    format!(
                        "counts {counts:?}, send {send_len} elements, recv capacity {recv_capacity}"
                    ),
                ));
            }
            // SAFETY: `counts[rank] == send_len` elements at `send` and `sum(counts) <=
            // recv_capacity` at `recv` (checked just above), alive until `wait`.
            unsafe { s.all_gather_var(send, recv, counts, dtype)? };
            s.wait()
        })
    }

    /// Every rank's element count for a variable-count gather (one small collective, with the
    /// element type checked across ranks).
    pub fn exchange_counts(&self, len: usize, dtype: DeviceDType) -> Result<Vec<usize>, CommError> {
        self.session("all_gather_varcount_device", |s| {
            let descs = s.exchange_descs(Desc::all_gather_var(dtype, len))?;
            check(s.rank(), s.op, &descs, None)
        })
    }

    /// Reduce-scatter with NCCL's reduction on raw device addresses: `send` holds
    /// `sum(counts)` elements on every rank (the same `counts` everywhere), rank r receives
    /// `counts[r]` at `recv`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`], with `send_len` elements at `send` and `recv_len` at
    /// `recv`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn reduce_scatter_ptr_checked(
        &self,
        send: DeviceAddr,
        send_len: usize,
        recv: DeviceAddr,
        recv_len: usize,
        counts: &[usize],
        dtype: DeviceDType,
        op: ReduceOp,
    ) -> Result<(), CommError> {
        self.session("reduce_scatter_device", |s| {
            s.agree(
                Desc::reduce_scatter(dtype, send_len, recv_len, counts, op),
                Some(counts),
            )?;
            let total: usize = counts.iter().sum();
            if counts.len() != s.world() || total != send_len || counts[s.rank()] != recv_len {
                return Err(bad_len(
                    s.rank(),
                    s.op,
                    format!("send {send_len}, recv {recv_len}, counts {counts:?}"),
                ));
            }
            if total > 0 {
                if counts.iter().all(|&c| c == counts[0]) {
                    // SAFETY: equal counts: `send` holds `world * counts[0] == send_len` and
                    // `recv` `counts[rank] == recv_len` elements (checked above).
                    unsafe { s.reduce_scatter(send, recv, counts[0], dtype, op)? };
                } else {
                    s.group(|| {
                        let mut off = 0;
                        for (root, &c) in counts.iter().enumerate() {
                            if c > 0 {
                                let src = send.offset(off, dtype);
                                // SAFETY: block `root` is elements `off..off + c` of `send`
                                // (`sum(counts) == send_len`, checked); `recv` is written on
                                // `root` only, where `c == counts[rank] == recv_len`.
                                unsafe { s.reduce(src, recv, c, dtype, op, root)? };
                            }
                            off += c;
                        }
                        Ok(())
                    })?;
                }
            }
            s.wait()
        })
    }

    /// The blocks of a reduce-scatter without reducing them: rank r receives, in rank order,
    /// every rank's block r (`counts[r]` elements each, `world * counts[r]` at `recv`), ready
    /// for a rank-order sum.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`], with `sum(counts)` elements at `send` and
    /// `world * counts[rank]` at `recv`.
    pub unsafe fn gather_blocks_ptr(
        &self,
        send: DeviceAddr,
        send_len: usize,
        recv: DeviceAddr,
        counts: &[usize],
        dtype: DeviceDType,
    ) -> Result<(), CommError> {
        self.session("reduce_scatter_device", |s| {
            let recv_len = counts.get(s.rank()).copied().unwrap_or(0);
            s.agree(
                Desc::reduce_scatter(dtype, send_len, recv_len, counts, ReduceOp::Sum),
                Some(counts),
            )?;
            let total: usize = counts.iter().sum();
            if counts.len() != s.world() || total != send_len {
                return Err(bad_len(
                    s.rank(),
                    s.op,
                    format!("send {send_len}, counts {counts:?}"),
                ));
            }
            if total > 0 {
                // SAFETY: `sum(counts) == send_len` elements at `send` (checked above) and
                // `world * counts[rank]` at `recv` (the contract), alive until `wait`.
                unsafe { s.gather_blocks(send, recv, counts, dtype)? };
            }
            s.wait()
        })
    }

    /// Broadcast on raw device addresses: `recv` becomes root's `send` on every rank (`send`
    /// is read on the root only; it may equal `recv`).
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`], with `count` elements at `send` and `recv`.
    pub unsafe fn broadcast_ptr(
        &self,
        send: DeviceAddr,
        recv: DeviceAddr,
        count: usize,
        dtype: DeviceDType,
        root: usize,
    ) -> Result<(), CommError> {
        self.session("broadcast_device", |s| {
            s.agree(Desc::broadcast(dtype, count, root), None)?;
            if root >= s.world() {
                return Err(CommError::BadRank {
                    rank: s.rank(),
                    op: s.op,
                    bad: root,
                    world: s.world(),
                });
            }
            if count > 0 {
                // SAFETY: `count` elements at both addresses (the contract), `root` checked
                // to be a rank, the call agreed across ranks above.
                unsafe { s.broadcast(send, recv, count, dtype, root)? };
            }
            s.wait()
        })
    }

    /// Several equal-count all-gathers in one NCCL group (one synchronisation): each item is
    /// `(send, recv, count_per_rank, dtype)` with `world * count` elements at `recv`.
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`] for every item.
    pub unsafe fn all_gather_many_ptr(
        &self,
        items: &[(DeviceAddr, DeviceAddr, usize, DeviceDType)],
    ) -> Result<(), CommError> {
        self.session("all_reduce_sum_fused_device", |s| {
            let list: Vec<(DeviceDType, usize)> =
                items.iter().map(|&(_, _, n, d)| (d, n)).collect();
            s.agree(Desc::fused_sum(&list), None)?;
            s.group(|| {
                for &(src, dst, n, d) in items {
                    if n > 0 {
                        // SAFETY: each item's `n` elements at `src` and `world * n` at `dst`
                        // (the contract), alive until `wait`.
                        unsafe { s.all_gather(src, dst, n, d)? };
                    }
                }
                Ok(())
            })?;
            s.wait()
        })
    }

    /// Several sum all-reduces in one NCCL group (NCCL's reduction order): each item is
    /// `(send, recv, count, dtype)` (`send` may equal `recv`).
    ///
    /// # Safety
    /// As [`NcclComm::all_reduce_ptr`] for every item.
    pub unsafe fn all_reduce_sum_many_ptr(
        &self,
        items: &[(DeviceAddr, DeviceAddr, usize, DeviceDType)],
    ) -> Result<(), CommError> {
        self.session("all_reduce_sum_fused_device", |s| {
            let list: Vec<(DeviceDType, usize)> =
                items.iter().map(|&(_, _, n, d)| (d, n)).collect();
            s.agree(Desc::fused_sum(&list), None)?;
            s.group(|| {
                for &(src, dst, n, d) in items {
                    if n > 0 {
                        // SAFETY: each item's `n` elements at `src` and `dst` (the contract),
                        // alive until `wait`.
                        unsafe { s.all_reduce(src, dst, n, d, ReduceOp::Sum)? };
                    }
                }
                Ok(())
            })?;
            s.wait()
        })
    }
}
