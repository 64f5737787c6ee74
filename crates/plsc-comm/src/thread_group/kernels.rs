//! Data movement of the collectives, run by every rank after the entry rendezvous succeeded.
//!
//! # Safety argument
//!
//! Ranks read each other's buffers through the addresses posted in their descriptors. This is
//! sound because of four facts:
//!
//! 1. **The buffers are alive and keep their place.** A rank's buffers are borrowed (`&[T]` or
//!    `&mut [T]`) for the whole collective call. A rank returns from a collective only after the
//!    last [`InnerBarrier::wait`] of that call, which every rank passes only once every rank has
//!    finished reading. The entry rendezvous is the only point that can fail; after it, the
//!    code here cannot panic (a panic would abort, see [`super::AbortOnUnwind`]) and the inner
//!    barriers wait unconditionally, so no rank leaves early and frees a buffer being read.
//! 2. **Lengths and types were validated** by the last arriver before any rank got here
//!    ([`crate::call::validate`]), so every pointer below addresses elements of the posted buffer,
//!    of the posted element type.
//! 3. **No location is written while another thread accesses it.** In all-reduce, rank r owns
//!    segment r of *every* rank's buffer: it alone reads and writes it. In the other
//!    collectives a rank writes only its own receive buffer (or own buffer, for broadcast)
//!    and reads buffers nobody writes. Each function states its regions. The final inner
//!    barrier orders all writes before any rank returns (release/acquire).
//! 4. **Source and destination never overlap**: a destination is borrowed `&mut` by its rank
//!    for the whole call, so no other live borrow (another rank's send buffer included) can
//!    cover it.
//!
//! A rank's own writable buffer is only ever accessed through the pointer derived from its
//! `&mut` (the `&mut` itself is not used while the collective runs).

use std::ptr;
use std::slice;

use super::inner_barrier::InnerBarrier;
use super::rendezvous::Round;
use crate::call::BufDesc;
use crate::communicator::ReduceOp;
use crate::element::{DType, Element, HostVec};

/// Elements reduced per block: the accumulator stays in L1 while the sources stream through.
const BLOCK: usize = 1024;

/// Calls the generic function `$f::<T>(args)` for the element type `$dtype` (one dispatch per
/// call, so the loops inside are monomorphic and vectorise).
macro_rules! dispatch {
    ($dtype:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $dtype {
            DType::F32 => $f::<f32>($($arg),*),
            DType::F64 => $f::<f64>($($arg),*),
            DType::I64 => $f::<i64>($($arg),*),
            DType::U8 => $f::<u8>($($arg),*),
        }
    };
}

fn elem_size(dtype: DType) -> usize {
    match dtype {
        DType::F32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::U8 => 1,
    }
}

/// The balanced split of `len` elements into `world` contiguous segments: segment `r`.
pub(crate) fn segment(len: usize, world: usize, r: usize) -> (usize, usize) {
    let base = len / world;
    let rem = len % world;
    let lo = base * r + r.min(rem);
    (lo, lo + base + usize::from(r < rem))
}

/// Copies `n` elements of `dtype` from element `src_off` of `src` to element `dst_off` of `dst`.
///
/// # Safety
/// Both ranges lie inside live buffers of `dtype`, nobody writes the source range and nobody
/// else accesses the destination range during the copy, and the ranges do not overlap.
unsafe fn copy_elems(
    dtype: DType,
    src: &BufDesc,
    src_off: usize,
    dst: &BufDesc,
    dst_off: usize,
    n: usize,
) {
    let size = elem_size(dtype);
    // SAFETY: guaranteed by the caller; byte offsets stay inside the buffers because the
    // element ranges do.
    unsafe {
        ptr::copy_nonoverlapping(
            (src.addr as *const u8).add(src_off * size),
            (dst.addr as *mut u8).add(dst_off * size),
            n * size,
        );
    }
}

/// For `i < n`: `acc = f(...f(f(src_0[off + i], src_1[off + i]), src_2[off + i])...,
/// src_{k-1}[off + i])`, the fold in rank order (so every element has one fixed summation
/// order), written to `dst[dst_off + i]` for every `dst` in `dsts`.
///
/// # Safety
/// Every `srcs[k]` is valid for reads of `off + n` elements of `T`, every `dsts[k]` for writes
/// of `dst_off + n` elements; during the call nobody else accesses the destination ranges or
/// writes the source ranges; a destination range either equals a source range (in-place
/// all-reduce: each block is read completely before it is written) or overlaps none.
#[inline(always)]
unsafe fn fold_ranks<T: Element, F: Fn(T, T) -> T>(
    srcs: &[*const T],
    off: usize,
    dsts: &[*mut T],
    dst_off: usize,
    n: usize,
    f: F,
) {
    let mut acc_buf = [T::default(); BLOCK];
    let mut done = 0;
    while done < n {
        let m = (n - done).min(BLOCK);
        let acc = &mut acc_buf[..m];
        // SAFETY: in bounds by the caller's contract; the shared source slices end before the
        // block is written.
        unsafe {
            acc.copy_from_slice(slice::from_raw_parts(srcs[0].add(off + done), m));
            for &src in &srcs[1..] {
                let src = slice::from_raw_parts(src.add(off + done), m);
                for (a, &b) in acc.iter_mut().zip(src) {
                    *a = f(*a, b);
                }
            }
            for &dst in dsts {
                ptr::copy_nonoverlapping(acc.as_ptr(), dst.add(dst_off + done), m);
            }
        }
        done += m;
    }
}

/// [`fold_ranks`] with the reduction chosen once.
///
/// # Safety
/// As for [`fold_ranks`].
unsafe fn reduce<T: Element>(
    srcs: &[*const T],
    off: usize,
    dsts: &[*mut T],
    dst_off: usize,
    n: usize,
    op: ReduceOp,
) {
    // SAFETY: forwarded contract.
    unsafe {
        match op {
            ReduceOp::Sum => fold_ranks(srcs, off, dsts, dst_off, n, T::add),
            ReduceOp::Max => fold_ranks(srcs, off, dsts, dst_off, n, T::max),
            ReduceOp::Min => fold_ranks(srcs, off, dsts, dst_off, n, T::min),
        }
    }
}

/// Reduces segment `[lo, hi)` of buffer `j` over all ranks and writes it into buffer `j` of
/// every rank.
///
/// # Safety
/// Called from [`all_reduce`] with `[lo, hi)` this rank's own segment.
unsafe fn reduce_segment_everywhere<T: Element>(
    round: &Round,
    j: usize,
    lo: usize,
    hi: usize,
    op: ReduceOp,
) {
    let srcs: Vec<*const T> = round
        .descs
        .iter()
        .map(|d| d.bufs[j].addr as *const T)
        .collect();
    let dsts: Vec<*mut T> = round
        .descs
        .iter()
        .map(|d| d.bufs[j].addr as *mut T)
        .collect();
    // SAFETY: lengths validated equal on all ranks, so `[lo, hi)` is inside every buffer. All
    // these buffers were posted from `&mut` borrows, so writing them is allowed, and segment
    // `[lo, hi)` of every buffer is accessed by this rank only (each rank works on its own
    // segment, and the owners do not touch their buffers while the collective runs).
    unsafe { reduce::<T>(&srcs, lo, &dsts, lo, hi - lo, op) };
}

/// In-place all-reduce of every buffer of the round (one buffer, or several for the fused call).
///
/// Rank r computes segment r of each buffer as the fold over ranks in rank order and writes
/// it into segment r of every rank's buffer; then all ranks meet at the barrier. Every element
/// is computed once, so all ranks hold the same bits, and the memory traffic is the minimum:
/// each input read once, each output written once.
pub(crate) fn all_reduce(inner: &InnerBarrier, round: &Round, rank: usize, op: ReduceOp) {
    let world = round.descs.len();
    for (j, buf) in round.descs[rank].bufs.iter().enumerate() {
        let (lo, hi) = segment(buf.len, world, rank);
        // SAFETY: see `reduce_segment_everywhere`.
        unsafe { dispatch!(buf.dtype, reduce_segment_everywhere(round, j, lo, hi, op)) };
    }
    inner.wait();
}

/// Equal-count all-gather: this rank copies every rank's send buffer into its own receive
/// buffer at `s * count`. Send buffers are only read; each receive buffer is written only by
/// its own rank.
pub(crate) fn all_gather(inner: &InnerBarrier, round: &Round, rank: usize) {
    let recv = &round.descs[rank].bufs[1];
    for (s, d) in round.descs.iter().enumerate() {
        let send = &d.bufs[0];
        // SAFETY: validated `recv.len == world * send.len`; see the module's safety argument.
        unsafe { copy_elems(send.dtype, send, 0, recv, s * send.len, send.len) };
    }
    inner.wait();
}

/// Fills `recv` with the concatenation of `round`'s send buffers of element type `T`.
///
/// # Safety
/// Called inside [`all_gather_varcount`] only.
unsafe fn gather_into_vec<T: Element>(round: &Round, total: usize, recv: &mut HostVec) {
    let mut v = T::unwrap_host_vec(std::mem::replace(recv, HostVec::U8(Vec::new())));
    v.clear();
    // `total` elements fit one allocation (validated), so this cannot panic.
    v.reserve_exact(total);
    for d in &round.descs {
        let send = &d.bufs[0];
        // SAFETY: the send buffers are live, of type `T` (validated) and only read.
        v.extend_from_slice(unsafe { slice::from_raw_parts(send.addr as *const T, send.len) });
    }
    *recv = T::into_host_vec(v);
}

/// Variable-count all-gather into this rank's own vector; returns the per-rank counts.
pub(crate) fn all_gather_varcount(
    inner: &InnerBarrier,
    round: &Round,
    recv: &mut HostVec,
) -> Vec<usize> {
    let counts: Vec<usize> = round.descs.iter().map(|d| d.bufs[0].len).collect();
    let total = counts.iter().sum();
    // SAFETY: see `gather_into_vec`.
    unsafe {
        dispatch!(
            round.descs[0].bufs[0].dtype,
            gather_into_vec(round, total, recv)
        )
    };
    inner.wait();
    counts
}

/// Rank r's block of the sum over ranks of the send buffers, in rank order.
///
/// # Safety
/// Called inside [`reduce_scatter`] only.
unsafe fn reduce_block<T: Element>(round: &Round, rank: usize, off: usize, n: usize) {
    let srcs: Vec<*const T> = round
        .descs
        .iter()
        .map(|d| d.bufs[0].addr as *const T)
        .collect();
    let dst = round.descs[rank].bufs[1].addr as *mut T;
    // SAFETY: send buffers hold `sum(counts)` elements and are only read; `recv` holds `n`
    // elements and is written only by this rank; send and recv never overlap (fact 4).
    unsafe { reduce::<T>(&srcs, off, &[dst], 0, n, ReduceOp::Sum) };
}

/// Sum reduce-scatter: rank r writes the fold over ranks of `send[off_r .. off_r + counts[r]]`
/// into its own receive buffer.
pub(crate) fn reduce_scatter(inner: &InnerBarrier, round: &Round, rank: usize) {
    let counts = &round.descs[rank].counts;
    let off: usize = counts[..rank].iter().sum();
    let dtype = round.descs[rank].bufs[0].dtype;
    // SAFETY: see `reduce_block`.
    unsafe { dispatch!(dtype, reduce_block(round, rank, off, counts[rank])) };
    inner.wait();
}

/// Broadcast: every rank but the root copies the root's buffer into its own; the root's buffer
/// is only read.
pub(crate) fn broadcast(inner: &InnerBarrier, round: &Round, rank: usize, root: usize) {
    if rank != root {
        let src = &round.descs[root].bufs[0];
        let dst = &round.descs[rank].bufs[0];
        // SAFETY: equal lengths validated; see the module's safety argument.
        unsafe { copy_elems(dst.dtype, src, 0, dst, 0, dst.len) };
    }
    inner.wait();
}
