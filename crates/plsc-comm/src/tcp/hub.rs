//! What rank 0 (the hub) computes from every rank's request: each reduction folded in rank
//! order 0..N-1 with the crate's element operations, as the thread group does, so the results
//! have the same bits.

use crate::call::{Desc, OpKind};
use crate::communicator::ReduceOp;
use crate::element::{DType, Element};

/// Bytes per element.
pub(crate) fn elem_size(d: DType) -> usize {
    match d {
        DType::F32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::U8 => 1,
    }
}

fn fold_typed<T: Element + bytemuck::Pod>(parts: &[&[u8]], op: ReduceOp) -> Vec<u8> {
    let f = match op {
        ReduceOp::Sum => T::add,
        ReduceOp::Max => T::max,
        ReduceOp::Min => T::min,
    };
    let mut acc: Vec<T> = bytemuck::pod_collect_to_vec(parts[0]);
    for p in &parts[1..] {
        let x: Vec<T> = bytemuck::pod_collect_to_vec(p);
        for (a, &b) in acc.iter_mut().zip(&x) {
            *a = f(*a, b);
        }
    }
    bytemuck::cast_slice(&acc).to_vec()
}

/// The element-wise fold of `parts` (one per rank, equal lengths) in rank order.
fn fold(dtype: DType, parts: &[&[u8]], op: ReduceOp) -> Vec<u8> {
    match dtype {
        DType::F32 => fold_typed::<f32>(parts, op),
        DType::F64 => fold_typed::<f64>(parts, op),
        DType::I64 => fold_typed::<i64>(parts, op),
        DType::U8 => fold_typed::<u8>(parts, op),
    }
}

/// Per rank: the counts and result bytes to send back. `descs` passed validation and
/// `payloads[r]` is what rank r sent for them.
pub(crate) fn results(descs: &[Desc], payloads: &[Vec<u8>]) -> Vec<(Vec<usize>, Vec<u8>)> {
    let world = descs.len();
    let first = &descs[0];
    let all = |v: Vec<u8>| vec![(Vec::new(), v); world];
    let parts: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    match first.op {
        OpKind::AllReduce(op) => all(fold(first.bufs[0].dtype, &parts, op)),
        OpKind::AllReduceSumFused => {
            let mut out = Vec::new();
            let mut off = 0;
            for b in &first.bufs {
                let n = b.len * elem_size(b.dtype);
                let slices: Vec<&[u8]> = parts.iter().map(|p| &p[off..off + n]).collect();
                out.extend(fold(b.dtype, &slices, ReduceOp::Sum));
                off += n;
            }
            all(out)
        }
        OpKind::AllGather => all(parts.concat()),
        OpKind::AllGatherVarcount => {
            let counts: Vec<usize> = descs.iter().map(|d| d.bufs[0].len).collect();
            vec![(counts, parts.concat()); world]
        }
        OpKind::ReduceScatter => {
            let es = elem_size(first.bufs[0].dtype);
            let total = fold(first.bufs[0].dtype, &parts, ReduceOp::Sum);
            let mut off = 0;
            first
                .counts
                .iter()
                .map(|&c| {
                    let piece = total[off * es..(off + c) * es].to_vec();
                    off += c;
                    (Vec::new(), piece)
                })
                .collect()
        }
        OpKind::Broadcast { root } => all(payloads[root].clone()),
        OpKind::Barrier => all(Vec::new()),
    }
}

/// What a rank sends for its call: every buffer it contributes, as bytes (the broadcast's
/// non-root ranks and the barrier send nothing).
pub(crate) fn sends_payload(op: OpKind, rank: usize) -> bool {
    match op {
        OpKind::Broadcast { root } => rank == root,
        OpKind::Barrier => false,
        _ => true,
    }
}

/// How many payload bytes rank `rank` sends for `desc`.
pub(crate) fn payload_len(desc: &Desc, rank: usize) -> usize {
    if !sends_payload(desc.op, rank) {
        return 0;
    }
    let bytes = |i: usize| {
        desc.bufs
            .get(i)
            .map_or(0, |b| b.len.saturating_mul(elem_size(b.dtype)))
    };
    match desc.op {
        OpKind::AllReduceSumFused => (0..desc.bufs.len())
            .map(bytes)
            .fold(0, usize::saturating_add),
        _ => bytes(0),
    }
}
