//! [`Communicator`] for [`NcclComm`]: host slices are copied to the device, the collective
//! runs in NCCL, and the result is copied back (two PCIe transfers per call on top of the
//! network; see the module documentation for the device-memory entry points that avoid them).

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};

use super::comm::{NcclComm, Reduction, Session};
use super::dtype::{DeviceDType, DeviceElement};
use crate::call::fixed::{Desc, check};
use crate::communicator::{Communicator, ReduceOp};
use crate::element::{Element, HostSlice, HostSliceMut, HostVec};
use crate::error::CommError;

/// Host element types the NCCL backend stages: `f32`, `f64`, `i64`, `u8`.
trait Staged: Element + DeviceElement + DeviceRepr + ValidAsZeroBits {}
impl Staged for f32 {}
impl Staged for f64 {}
impl Staged for i64 {}
impl Staged for u8 {}

fn fold_fn<T: Element>(op: ReduceOp) -> fn(T, T) -> T {
    match op {
        ReduceOp::Sum => T::add,
        ReduceOp::Max => T::max,
        ReduceOp::Min => T::min,
    }
}

/// `out[i]` = fold over ranks r = 0, 1, ... of `all[r * out.len() + i]`, in rank order:
/// the thread group's reduction, bit for bit.
pub(crate) fn fold_rank_order<T: Element>(all: &[T], out: &mut [T], op: ReduceOp) {
    let n = out.len();
    if n == 0 {
        return;
    }
    let f = fold_fn::<T>(op);
    out.copy_from_slice(&all[..n]);
    for block in all[n..].chunks_exact(n) {
        for (acc, &x) in out.iter_mut().zip(block) {
            *acc = f(*acc, x);
        }
    }
}

/// Copies `buf` to the device, reduces it over ranks (rank-order fold on the host, or NCCL's
/// reduction) and leaves the result in `buf`.
fn all_reduce_staged<T: Staged>(
    s: &Session<'_>,
    buf: &mut [T],
    op: ReduceOp,
) -> Result<(), CommError> {
    let n = buf.len();
    let dt = T::DEVICE_DTYPE;
    let d = s.upload(buf)?;
    match s.comm.options().reduction {
        Reduction::RankOrder => {
            let world = s.world();
            let all_d = s.alloc::<T>(n * world)?;
            // SAFETY: staging buffers of `n` and `n * world` elements of `T`, alive until
            // after `wait`.
            unsafe { s.all_gather(s.ptr(&d), s.ptr(&all_d), n, dt)? };
            s.wait()?;
            let mut all = vec![T::default(); n * world];
            s.download(&all_d, &mut all)?;
            fold_rank_order(&all, buf, op);
        }
        Reduction::Nccl => {
            // SAFETY: in place on the staging buffer of `n` elements of `T`, alive until
            // after `wait`.
            unsafe { s.all_reduce(s.ptr(&d), s.ptr(&d), n, dt, op)? };
            s.wait()?;
            s.download(&d, buf)?;
        }
    }
    Ok(())
}

/// Rank-order staging of several buffers: uploads and gathers all of them in one NCCL group
/// (one synchronisation), then folds each.
fn fused_rank_order(s: &Session<'_>, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
    enum Dev {
        F32(
            cudarc::driver::CudaSlice<f32>,
            cudarc::driver::CudaSlice<f32>,
        ),
        F64(
            cudarc::driver::CudaSlice<f64>,
            cudarc::driver::CudaSlice<f64>,
        ),
        I64(
            cudarc::driver::CudaSlice<i64>,
            cudarc::driver::CudaSlice<i64>,
        ),
        U8(cudarc::driver::CudaSlice<u8>, cudarc::driver::CudaSlice<u8>),
    }
    let world = s.world();
    let mut devs = Vec::with_capacity(bufs.len());
    for b in bufs.iter() {
        let n = b.len();
        devs.push(match b {
            HostSliceMut::F32(v) => Dev::F32(s.upload(v)?, s.alloc(n * world)?),
            HostSliceMut::F64(v) => Dev::F64(s.upload(v)?, s.alloc(n * world)?),
            HostSliceMut::I64(v) => Dev::I64(s.upload(v)?, s.alloc(n * world)?),
            HostSliceMut::U8(v) => Dev::U8(s.upload(v)?, s.alloc(n * world)?),
        });
    }
    s.group(|| {
        for (b, d) in bufs.iter().zip(&devs) {
            let n = b.len();
            if n == 0 {
                continue;
            }
            let dt = DeviceDType::from(b.dtype());
            let (src, dst) = match d {
                Dev::F32(a, g) => (s.ptr(a), s.ptr(g)),
                Dev::F64(a, g) => (s.ptr(a), s.ptr(g)),
                Dev::I64(a, g) => (s.ptr(a), s.ptr(g)),
                Dev::U8(a, g) => (s.ptr(a), s.ptr(g)),
            };
            // SAFETY: the pair was allocated for this buffer: `n` and `n * world` elements of
            // its type, alive (in `devs`) until after `wait`.
            unsafe { s.all_gather(src, dst, n, dt)? };
        }
        Ok(())
    })?;
    s.wait()?;
    for (b, d) in bufs.iter_mut().zip(&devs) {
        fn finish<T: Staged>(
            s: &Session<'_>,
            g: &cudarc::driver::CudaSlice<T>,
            out: &mut [T],
        ) -> Result<(), CommError> {
            let mut all = vec![T::default(); out.len() * s.world()];
            s.download(g, &mut all)?;
            fold_rank_order(&all, out, ReduceOp::Sum);
            Ok(())
        }
        match (b, d) {
            (HostSliceMut::F32(v), Dev::F32(_, g)) => finish(s, g, v)?,
            (HostSliceMut::F64(v), Dev::F64(_, g)) => finish(s, g, v)?,
            (HostSliceMut::I64(v), Dev::I64(_, g)) => finish(s, g, v)?,
            (HostSliceMut::U8(v), Dev::U8(_, g)) => finish(s, g, v)?,
            _ => unreachable!("staging buffers are made from the same list"),
        }
    }
    Ok(())
}

/// NCCL-order fused sum: every buffer reduced in place, in one NCCL group.
fn fused_nccl(s: &Session<'_>, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
    enum Dev {
        F32(cudarc::driver::CudaSlice<f32>),
        F64(cudarc::driver::CudaSlice<f64>),
        I64(cudarc::driver::CudaSlice<i64>),
        U8(cudarc::driver::CudaSlice<u8>),
    }
    let mut devs = Vec::with_capacity(bufs.len());
    for b in bufs.iter() {
        devs.push(match b {
            HostSliceMut::F32(v) => Dev::F32(s.upload(v)?),
            HostSliceMut::F64(v) => Dev::F64(s.upload(v)?),
            HostSliceMut::I64(v) => Dev::I64(s.upload(v)?),
            HostSliceMut::U8(v) => Dev::U8(s.upload(v)?),
        });
    }
    let ptr = |d: &Dev| match d {
        Dev::F32(a) => s.ptr(a),
        Dev::F64(a) => s.ptr(a),
        Dev::I64(a) => s.ptr(a),
        Dev::U8(a) => s.ptr(a),
    };
    s.group(|| {
        for (b, d) in bufs.iter().zip(&devs) {
            if !b.is_empty() {
                let p = ptr(d);
                let dt = DeviceDType::from(b.dtype());
                // SAFETY: in place on the staging copy of `b` (same length and type), alive
                // (in `devs`) until after `wait`.
                unsafe { s.all_reduce(p, p, b.len(), dt, ReduceOp::Sum)? };
            }
        }
        Ok(())
    })?;
    s.wait()?;
    for (b, d) in bufs.iter_mut().zip(&devs) {
        match (b, d) {
            (HostSliceMut::F32(v), Dev::F32(a)) => s.download(a, v)?,
            (HostSliceMut::F64(v), Dev::F64(a)) => s.download(a, v)?,
            (HostSliceMut::I64(v), Dev::I64(a)) => s.download(a, v)?,
            (HostSliceMut::U8(v), Dev::U8(a)) => s.download(a, v)?,
            _ => unreachable!("staging buffers are made from the same list"),
        }
    }
    Ok(())
}

fn all_gather_staged<T: Staged>(
    s: &Session<'_>,
    send: &[T],
    recv: &mut [T],
) -> Result<(), CommError> {
    let d = s.upload(send)?;
    let g = s.alloc::<T>(recv.len())?;
    // SAFETY: staging buffers of `send.len()` and `recv.len()` (validated to be world x
    // send) elements of `T`, alive until after `wait`.
    unsafe { s.all_gather(s.ptr(&d), s.ptr(&g), send.len(), T::DEVICE_DTYPE)? };
    s.wait()?;
    s.download(&g, recv)
}

fn all_gather_var_staged<T: Staged>(
    s: &Session<'_>,
    send: &[T],
    counts: &[usize],
) -> Result<Vec<T>, CommError> {
    let total: usize = counts.iter().sum();
    let d = s.upload(send)?;
    let g = s.alloc::<T>(total)?;
    // SAFETY: `counts[rank] == send.len()` elements at `d` (counts come from the descriptor
    // exchange) and `sum(counts)` at `g`, alive until after `wait`.
    unsafe { s.all_gather_var(s.ptr(&d), s.ptr(&g), counts, T::DEVICE_DTYPE)? };
    s.wait()?;
    let mut out = vec![T::default(); total];
    s.download(&g, &mut out)?;
    Ok(out)
}

fn reduce_scatter_staged<T: Staged>(
    s: &Session<'_>,
    send: &[T],
    recv: &mut [T],
    counts: &[usize],
) -> Result<(), CommError> {
    let dt = T::DEVICE_DTYPE;
    let d = s.upload(send)?;
    let me = s.rank();
    match s.comm.options().reduction {
        Reduction::RankOrder => {
            let world = s.world();
            let g = s.alloc::<T>(counts[me] * world)?;
            // SAFETY: `sum(counts)` (validated) elements at `d`, `counts[rank] * world` at
            // `g`, alive until after `wait`.
            unsafe { s.gather_blocks(s.ptr(&d), s.ptr(&g), counts, dt)? };
            s.wait()?;
            let mut all = vec![T::default(); counts[me] * world];
            s.download(&g, &mut all)?;
            fold_rank_order(&all, recv, ReduceOp::Sum);
        }
        Reduction::Nccl => {
            let out = s.alloc::<T>(recv.len())?;
            if counts.iter().all(|&c| c == counts[0]) {
                // SAFETY: equal counts: `world * counts[0]` elements at `d` (validated) and
                // `counts[0] == recv.len()` at `out`, alive until after `wait`.
                unsafe { s.reduce_scatter(s.ptr(&d), s.ptr(&out), counts[0], dt, ReduceOp::Sum)? };
            } else {
                s.group(|| {
                    let mut off = 0;
                    for (root, &c) in counts.iter().enumerate() {
                        if c > 0 {
                            let src = s.ptr(&d).offset(off, dt);
                            // SAFETY: block `root` is elements `off..off + c` of `d`
                            // (`sum(counts)` validated); `out` is written on `root` only,
                            // where `c == recv.len()`.
                            unsafe { s.reduce(src, s.ptr(&out), c, dt, ReduceOp::Sum, root)? };
                        }
                        off += c;
                    }
                    Ok(())
                })?;
            }
            s.wait()?;
            s.download(&out, recv)?;
        }
    }
    Ok(())
}

fn broadcast_staged<T: Staged>(
    s: &Session<'_>,
    buf: &mut [T],
    root: usize,
) -> Result<(), CommError> {
    let d = s.upload(buf)?;
    let p = s.ptr(&d);
    // SAFETY: in place on the staging copy of `buf`, alive until after `wait`; the root was
    // validated with the descriptors.
    unsafe { s.broadcast(p, p, buf.len(), T::DEVICE_DTYPE, root)? };
    s.wait()?;
    s.download(&d, buf)
}

/// Calls `$f::<T>(s, slice, args)` for the element type of a host slice.
macro_rules! staged {
    ($slice:expr, $f:ident ( $s:expr $(, $arg:expr)* )) => {
        match $slice {
            HostSliceMut::F32(v) => $f::<f32>($s, v $(, $arg)*),
            HostSliceMut::F64(v) => $f::<f64>($s, v $(, $arg)*),
            HostSliceMut::I64(v) => $f::<i64>($s, v $(, $arg)*),
            HostSliceMut::U8(v) => $f::<u8>($s, v $(, $arg)*),
        }
    };
}

impl Communicator for NcclComm {
    fn rank(&self) -> usize {
        self.rank_index()
    }

    fn world_size(&self) -> usize {
        self.world()
    }

    fn all_reduce_raw(&self, buf: HostSliceMut<'_>, op: ReduceOp) -> Result<(), CommError> {
        self.session("all_reduce", |s| {
            let dt = DeviceDType::from(buf.dtype());
            s.agree(Desc::all_reduce(dt, buf.len(), op), None)?;
            if buf.is_empty() {
                return Ok(());
            }
            staged!(buf, all_reduce_staged(s, op))
        })
    }

    fn all_reduce_sum_fused_raw(&self, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError> {
        self.session("all_reduce_sum_fused", |s| {
            let list: Vec<(DeviceDType, usize)> = bufs
                .iter()
                .map(|b| (DeviceDType::from(b.dtype()), b.len()))
                .collect();
            s.agree(Desc::fused_sum(&list), None)?;
            if bufs.iter().all(|b| b.is_empty()) {
                return Ok(());
            }
            match s.comm.options().reduction {
                Reduction::RankOrder => fused_rank_order(s, bufs),
                Reduction::Nccl => fused_nccl(s, bufs),
            }
        })
    }

    fn all_gather_raw(&self, send: HostSlice<'_>, recv: HostSliceMut<'_>) -> Result<(), CommError> {
        self.session("all_gather", |s| {
            let dt = DeviceDType::from(send.dtype());
            let (n, world) = (send.len(), s.world());
            if recv.dtype() != send.dtype() {
                return Err(CommError::BadLength {
                    rank: s.rank(),
                    op: s.op,
                    detail: format!(
                        "send holds {:?} but recv holds {:?}",
                        send.dtype(),
                        recv.dtype()
                    ),
                });
            }
            s.agree(Desc::all_gather(dt, n, recv.len()), None)?;
            if recv.len() != n * world {
                // Only reachable with validation off: fail before NCCL reads past `recv`.
                return Err(CommError::BadLength {
                    rank: s.rank(),
                    op: s.op,
                    detail: format!("recv has {} elements, expected {world} x {n}", recv.len()),
                });
            }
            if n == 0 {
                return Ok(());
            }
            match (send, recv) {
                (HostSlice::F32(a), HostSliceMut::F32(b)) => all_gather_staged(s, a, b),
                (HostSlice::F64(a), HostSliceMut::F64(b)) => all_gather_staged(s, a, b),
                (HostSlice::I64(a), HostSliceMut::I64(b)) => all_gather_staged(s, a, b),
                (HostSlice::U8(a), HostSliceMut::U8(b)) => all_gather_staged(s, a, b),
                _ => unreachable!("element types checked above"),
            }
        })
    }

    fn all_gather_varcount_raw(
        &self,
        send: HostSlice<'_>,
        recv: &mut HostVec,
    ) -> Result<Vec<usize>, CommError> {
        self.session("all_gather_varcount", |s| {
            let dt = DeviceDType::from(send.dtype());
            // The lengths travel in the descriptors, so they are exchanged even with
            // validation off.
            let descs = s.exchange_descs(Desc::all_gather_var(dt, send.len()))?;
            let counts = check(s.rank(), s.op, &descs, None)?;
            *recv = match send {
                HostSlice::F32(v) => f32::into_host_vec(all_gather_var_staged(s, v, &counts)?),
                HostSlice::F64(v) => f64::into_host_vec(all_gather_var_staged(s, v, &counts)?),
                HostSlice::I64(v) => i64::into_host_vec(all_gather_var_staged(s, v, &counts)?),
                HostSlice::U8(v) => u8::into_host_vec(all_gather_var_staged(s, v, &counts)?),
            };
            Ok(counts)
        })
    }

    fn reduce_scatter_raw(
        &self,
        send: HostSlice<'_>,
        recv: HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError> {
        self.session("reduce_scatter", |s| {
            let dt = DeviceDType::from(send.dtype());
            if recv.dtype() != send.dtype() {
                return Err(CommError::BadLength {
                    rank: s.rank(),
                    op: s.op,
                    detail: format!(
                        "send holds {:?} but recv holds {:?}",
                        send.dtype(),
                        recv.dtype()
                    ),
                });
            }
            let desc = Desc::reduce_scatter(dt, send.len(), recv.len(), counts, ReduceOp::Sum);
            s.agree(desc, Some(counts))?;
            // Local re-check (the only check with validation off).
            let total: usize = counts.iter().sum();
            if counts.len() != s.world() || total != send.len() || counts[s.rank()] != recv.len() {
                return Err(CommError::BadLength {
                    rank: s.rank(),
                    op: s.op,
                    detail: format!(
                        "send {} elements, recv {}, counts {counts:?} for world {}",
                        send.len(),
                        recv.len(),
                        s.world()
                    ),
                });
            }
            if total == 0 {
                return Ok(());
            }
            match (send, recv) {
                (HostSlice::F32(a), HostSliceMut::F32(b)) => reduce_scatter_staged(s, a, b, counts),
                (HostSlice::F64(a), HostSliceMut::F64(b)) => reduce_scatter_staged(s, a, b, counts),
                (HostSlice::I64(a), HostSliceMut::I64(b)) => reduce_scatter_staged(s, a, b, counts),
                (HostSlice::U8(a), HostSliceMut::U8(b)) => reduce_scatter_staged(s, a, b, counts),
                _ => unreachable!("element types checked above"),
            }
        })
    }

    fn broadcast_raw(&self, buf: HostSliceMut<'_>, root: usize) -> Result<(), CommError> {
        self.session("broadcast", |s| {
            let dt = DeviceDType::from(buf.dtype());
            s.agree(Desc::broadcast(dt, buf.len(), root), None)?;
            if root >= s.world() {
                return Err(CommError::BadRank {
                    rank: s.rank(),
                    op: s.op,
                    bad: root,
                    world: s.world(),
                });
            }
            if buf.is_empty() {
                return Ok(());
            }
            staged!(buf, broadcast_staged(s, root))
        })
    }

    fn barrier(&self) -> Result<(), CommError> {
        // The descriptor exchange is itself a collective every rank must reach.
        self.session("barrier", |s| s.exchange_descs(Desc::barrier()).map(|_| ()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_order_fold_matches_a_serial_left_fold() {
        // Values whose f32 sum depends on the order: ((a + b) + c) != (a + (b + c)).
        let (a, b, c) = (1.0e8f32, -1.0e8f32, 1.0f32);
        let all = [a, 0.5, b, 0.25, c, 0.125];
        let mut out = [0f32; 2];
        fold_rank_order(&all, &mut out, ReduceOp::Sum);
        assert_eq!(out[0].to_bits(), ((a + b) + c).to_bits());
        assert_ne!(out[0].to_bits(), (a + (b + c)).to_bits());
        assert_eq!(out[1], 0.875);

        let mut out = [0f64; 2];
        fold_rank_order(&[1.0, f64::NAN, 3.0, 2.0], &mut out, ReduceOp::Max);
        assert_eq!(out[0], 3.0);
        assert!(out[1].is_nan(), "max propagates NaN like the thread group");

        let mut out = [0u8; 1];
        fold_rank_order(&[200u8, 100], &mut out, ReduceOp::Sum);
        assert_eq!(out[0], 44, "integer sums wrap");
        let mut out = [0i64; 1];
        fold_rank_order(&[5i64, -7, 3], &mut out, ReduceOp::Min);
        assert_eq!(out[0], -7);
    }
}
