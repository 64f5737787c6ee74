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
//!    ([`super::validate`]), so every pointer below addresses elements of the posted buffer,
//!    of the posted element type.
//! 3. **No location is written while another thread accesses it.** Each rank writes only its
//!    own receive buffer (or, for in-place all-reduce and broadcast, its own buffer). Which
//!    regions are written and read in which phase is given with each function; the inner
//!    barrier separates phases and orders memory (release/acquire).
//! 4. **Source and destination never overlap**: a destination is borrowed `&mut` by its rank
//!    for the whole call, so no other live borrow (another rank's send buffer included) can
//!    cover it.
//!
//! A rank's own writable buffer is only ever accessed through the pointer derived from its
//! `&mut` (the `&mut` itself is not used while the collective runs).

use std::ptr;
use std::slice;

use super::desc::BufDesc;
use super::inner_barrier::InnerBarrier;
use super::rendezvous::Round;
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

/// `dst[i] = f(...f(f(src_0[off + i], src_1[off + i]), src_2[off + i])..., src_{k-1}[off + i])`
/// for `i < n`: the fold in rank order, so every element has one fixed summation order.
///
/// # Safety
/// Every `srcs[k]` is valid for reads of `off + n` elements of `T` that nobody writes during
/// the call, `dst` is valid for writes of `n` elements that nobody else accesses, and no
/// source range overlaps the destination range except that `dst` may be `srcs[k] + off` itself
/// (the in-place all-reduce: each block is read completely before it is written).
#[inline(always)]
unsafe fn fold_ranks<T: Element, F: Fn(T, T) -> T>(
    srcs: &[*const T],
    off: usize,
    dst: *mut T,
    n: usize,
    f: F,
) {
    let mut acc_buf = [T::default(); BLOCK];
    let mut done = 0;
    while done < n {
        let m = (n - done).min(BLOCK);
        let acc = &mut acc_buf[..m];
        // SAFETY: in bounds by the caller's contract; the shared slices end before the block
        // is written through `dst`.
        unsafe {
            acc.copy_from_slice(slice::from_raw_parts(srcs[0].add(off + done), m));
            for &src in &srcs[1..] {
                let src = slice::from_raw_parts(src.add(off + done), m);
                for (a, &b) in acc.iter_mut().zip(src) {
                    *a = f(*a, b);
                }
            }
            slice::from_raw_parts_mut(dst.add(done), m).copy_from_slice(acc);
        }
        done += m;
    }
}

/// [`fold_ranks`] with the reduction chosen once.
///
/// # Safety
/// As for [`fold_ranks`].
unsafe fn reduce<T: Element>(srcs: &[*const T], off: usize, dst: *mut T, n: usize, op: ReduceOp) {
    // SAFETY: forwarded contract.
    unsafe {
        match op {
            ReduceOp::Sum => fold_ranks(srcs, off, dst, n, T::add),
            ReduceOp::Max => fold_ranks(srcs, off, dst, n, T::max),
            ReduceOp::Min => fold_ranks(srcs, off, dst, n, T::min),
        }
    }
}

/// Reduces segment `[lo, hi)` of buffer `j` over all ranks into this rank's buffer `j`.
///
/// # Safety
/// Called in phase 1 of [`all_reduce`], with `[lo, hi)` this rank's own segment.
unsafe fn reduce_own_segment<T: Element>(
    round: &Round,
    j: usize,
    rank: usize,
    lo: usize,
    hi: usize,
    op: ReduceOp,
) {
    let srcs: Vec<*const T> = round
        .descs
        .iter()
        .map(|d| d.bufs[j].addr as *const T)
        .collect();
    let dst = round.descs[rank].bufs[j].addr as *mut T;
    // SAFETY: lengths validated equal on all ranks; in phase 1 segment `rank` of every buffer is
    // accessed only by this rank, which reads it on all ranks and writes it in its own buffer.
    unsafe { reduce::<T>(&srcs, lo, dst.add(lo), hi - lo, op) };
}

/// In-place all-reduce of every buffer of the round (one buffer, or several for the fused call).
///
/// Phase 1: rank r computes segment r of each buffer as the fold over ranks in rank order and
/// writes it into its own buffer. Phase 2: rank r copies every other segment s from rank s's
/// buffer (which holds the finished segment s and is no longer written). Every element is
/// computed once, so all ranks hold the same bits.
pub(crate) fn all_reduce(inner: &InnerBarrier, round: &Round, rank: usize, op: ReduceOp) {
    let world = round.descs.len();
    let mine = &round.descs[rank];
    for (j, buf) in mine.bufs.iter().enumerate() {
        let (lo, hi) = segment(buf.len, world, rank);
        // SAFETY: phase 1, see `reduce_own_segment`.
        unsafe { dispatch!(buf.dtype, reduce_own_segment(round, j, rank, lo, hi, op)) };
    }
    inner.wait();
    for (j, buf) in mine.bufs.iter().enumerate() {
        for (s, other) in round.descs.iter().enumerate() {
            if s != rank {
                let (lo, hi) = segment(buf.len, world, s);
                // SAFETY: phase 2: segment s of rank s's buffer is final and only read; segment
                // s of this rank's buffer is written only by this rank.
                unsafe { copy_elems(buf.dtype, &other.bufs[j], lo, buf, lo, hi - lo) };
            }
        }
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
    unsafe { reduce::<T>(&srcs, off, dst, n, ReduceOp::Sum) };
}

/// Sum reduce-scatter: rank r writes the fold over ranks of `send[off_r .. off_r + counts[r]]`
/// into its own receive buffer.
pub(crate) fn reduce_scatter(inner: &InnerBarrier, round: &Round, rank: usize) {
    let counts = &round.descs[rank].counts;
    let off: usize = counts[..rank].iter().sum();
    // SAFETY: see `reduce_block`.
    unsafe {
        dispatch!(
            round.descs[rank].bufs[0].dtype,
            reduce_block(round, rank, off, counts[rank])
        )
    };
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
