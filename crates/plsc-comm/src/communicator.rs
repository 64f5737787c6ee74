use crate::element::{Element, HostSlice, HostSliceMut};
use crate::error::CommError;

/// The reduction applied element-wise by [`Communicator::all_reduce_raw`].
///
/// `Max`/`Min` propagate NaN (a NaN on any rank gives NaN), like PyTorch.
/// Integer sums wrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    /// Element-wise sum, added in rank order.
    Sum,
    /// Element-wise maximum.
    Max,
    /// Element-wise minimum.
    Min,
}

/// A group of `world_size()` ranks that call the same collectives in the same order.
///
/// Contract for every implementation:
/// - results are identical bit for bit on every rank, and do not depend on timing: sums are
///   added in rank order 0, 1, ..., N-1 for every element;
/// - a failure is an error on every rank, never a hang (a peer that leaves makes the others'
///   calls fail at once; an optional timeout bounds a wait);
/// - lengths and element types are checked across ranks before any data moves.
///
/// The trait is object-safe (`&dyn Communicator`); [`CommExt`] adds typed convenience methods.
pub trait Communicator: Send + Sync {
    /// This rank's index in `0..world_size()`.
    fn rank(&self) -> usize;
    /// Number of ranks in the group.
    fn world_size(&self) -> usize;

    /// In place: every rank's `buf` becomes the element-wise reduction of all ranks' `buf`s.
    /// Lengths and element types must be equal on every rank.
    fn all_reduce_raw(&self, buf: HostSliceMut<'_>, op: ReduceOp) -> Result<(), CommError>;

    /// Fused sum all-reduce of several buffers in one collective (one synchronisation); every
    /// rank passes the same number of buffers with the same lengths and types, in the same order.
    fn all_reduce_sum_fused_raw(&self, bufs: &mut [HostSliceMut<'_>]) -> Result<(), CommError>;

    /// Equal-count all-gather: `recv.len() == world_size() * send.len()`; rank r's `send`
    /// lands at `recv[r * send.len()..]`.
    fn all_gather_raw(&self, send: HostSlice<'_>, recv: HostSliceMut<'_>) -> Result<(), CommError>;

    /// All-gather where each rank may send a different count. `recv` is cleared and filled
    /// with the concatenation in rank order; the per-rank counts are returned.
    fn all_gather_varcount_raw(
        &self,
        send: HostSlice<'_>,
        recv: &mut crate::element::HostVec,
    ) -> Result<Vec<usize>, CommError>;

    /// Sum reduce-scatter: `send` holds `counts.iter().sum()` elements on every rank (the same
    /// `counts` everywhere); rank r receives the sum over ranks of `send[off_r..off_r+counts[r]]`
    /// into `recv` (`recv.len() == counts[r]`).
    fn reduce_scatter_raw(
        &self,
        send: HostSlice<'_>,
        recv: HostSliceMut<'_>,
        counts: &[usize],
    ) -> Result<(), CommError>;

    /// Every rank's `buf` becomes rank `root`'s `buf`; lengths must be equal.
    fn broadcast_raw(&self, buf: HostSliceMut<'_>, root: usize) -> Result<(), CommError>;

    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<(), CommError>;
}

/// Typed convenience methods over any [`Communicator`].
pub trait CommExt: Communicator {
    /// Typed [`Communicator::all_reduce_raw`].
    fn all_reduce<T: Element>(&self, buf: &mut [T], op: ReduceOp) -> Result<(), CommError> {
        self.all_reduce_raw(T::slice_mut(buf), op)
    }
    /// Typed [`Communicator::all_reduce_sum_fused_raw`].
    fn all_reduce_sum_fused<T: Element>(&self, bufs: &mut [&mut [T]]) -> Result<(), CommError> {
        let mut views: Vec<HostSliceMut<'_>> = bufs.iter_mut().map(|b| T::slice_mut(b)).collect();
        self.all_reduce_sum_fused_raw(&mut views)
    }
    /// Typed [`Communicator::all_gather_raw`] into a caller's buffer.
    fn all_gather_into<T: Element>(&self, send: &[T], recv: &mut [T]) -> Result<(), CommError> {
        self.all_gather_raw(T::slice(send), T::slice_mut(recv))
    }
    /// Equal-count all-gather into a new vector of `world_size() * send.len()` elements.
    fn all_gather<T: Element>(&self, send: &[T]) -> Result<Vec<T>, CommError> {
        let mut recv = vec![T::default(); send.len() * self.world_size()];
        self.all_gather_into(send, &mut recv)?;
        Ok(recv)
    }
    /// Variable-count all-gather: the concatenation in rank order and each rank's count.
    fn all_gather_varcount<T: Element>(
        &self,
        send: &[T],
    ) -> Result<(Vec<T>, Vec<usize>), CommError> {
        let mut recv = T::empty_host_vec();
        let counts = self.all_gather_varcount_raw(T::slice(send), &mut recv)?;
        Ok((T::unwrap_host_vec(recv), counts))
    }
    /// Typed [`Communicator::reduce_scatter_raw`].
    fn reduce_scatter<T: Element>(
        &self,
        send: &[T],
        recv: &mut [T],
        counts: &[usize],
    ) -> Result<(), CommError> {
        self.reduce_scatter_raw(T::slice(send), T::slice_mut(recv), counts)
    }
    /// Typed [`Communicator::broadcast_raw`].
    fn broadcast<T: Element>(&self, buf: &mut [T], root: usize) -> Result<(), CommError> {
        self.broadcast_raw(T::slice_mut(buf), root)
    }
}

impl<C: Communicator + ?Sized> CommExt for C {}
