//! What a rank posts when it enters a collective: the operation and where its buffers are.

use crate::communicator::ReduceOp;
use crate::element::{DType, HostSlice, HostSliceMut};

/// The collective a rank called, with the arguments that must agree across ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    AllReduce(ReduceOp),
    AllReduceSumFused,
    AllGather,
    AllGatherVarcount,
    ReduceScatter,
    Broadcast { root: usize },
    Barrier,
}

impl OpKind {
    /// The name used in error messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            OpKind::AllReduce(_) => "all_reduce",
            OpKind::AllReduceSumFused => "all_reduce_sum_fused",
            OpKind::AllGather => "all_gather",
            OpKind::AllGatherVarcount => "all_gather_varcount",
            OpKind::ReduceScatter => "reduce_scatter",
            OpKind::Broadcast { .. } => "broadcast",
            OpKind::Barrier => "barrier",
        }
    }

    /// The call with its arguments, for mismatch messages.
    pub(crate) fn describe(self) -> String {
        match self {
            OpKind::AllReduce(op) => format!("all_reduce({op:?})"),
            OpKind::Broadcast { root } => format!("broadcast(root {root})"),
            other => other.name().to_string(),
        }
    }
}

/// One buffer of a rank: its element type, base address and length in elements.
///
/// The address is kept as an integer so that descriptors can live in the shared state; it is
/// turned back into a pointer only inside the collective, while the owning rank is blocked in
/// the same call (see the safety argument in [`super::kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BufDesc {
    pub dtype: DType,
    pub addr: usize,
    pub len: usize,
}

impl BufDesc {
    /// Describes a buffer that other ranks may only read.
    pub(crate) fn of(s: &HostSlice<'_>) -> Self {
        let (dtype, addr, len) = match s {
            HostSlice::F32(s) => (DType::F32, s.as_ptr() as usize, s.len()),
            HostSlice::F64(s) => (DType::F64, s.as_ptr() as usize, s.len()),
            HostSlice::I64(s) => (DType::I64, s.as_ptr() as usize, s.len()),
            HostSlice::U8(s) => (DType::U8, s.as_ptr() as usize, s.len()),
        };
        Self { dtype, addr, len }
    }

    /// Describes a buffer that its own rank writes (and others may read). The address comes
    /// from `as_mut_ptr`, so writes through it are permitted for as long as the `&mut` borrow
    /// that it was derived from is not used again (the collective does not use it again).
    pub(crate) fn of_mut(s: &mut HostSliceMut<'_>) -> Self {
        let (dtype, addr, len) = match s {
            HostSliceMut::F32(s) => (DType::F32, s.as_mut_ptr() as usize, s.len()),
            HostSliceMut::F64(s) => (DType::F64, s.as_mut_ptr() as usize, s.len()),
            HostSliceMut::I64(s) => (DType::I64, s.as_mut_ptr() as usize, s.len()),
            HostSliceMut::U8(s) => (DType::U8, s.as_mut_ptr() as usize, s.len()),
        };
        Self { dtype, addr, len }
    }
}

/// Everything a rank posts at the entry rendezvous.
///
/// `bufs` by operation: all-reduce and broadcast `[buf]`; fused all-reduce one entry per
/// buffer; all-gather and reduce-scatter `[send, recv]`; variable-count all-gather `[send]`;
/// barrier `[]`. `counts` is only used by reduce-scatter.
#[derive(Debug, Clone)]
pub(crate) struct Desc {
    pub op: OpKind,
    pub bufs: Vec<BufDesc>,
    pub counts: Vec<usize>,
}

impl Desc {
    pub(crate) fn new(op: OpKind, bufs: Vec<BufDesc>) -> Self {
        Self {
            op,
            bufs,
            counts: Vec::new(),
        }
    }
}
