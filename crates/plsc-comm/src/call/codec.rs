//! Collective descriptors as `u64` words, so that multi-process backends (MPI, TCP) can
//! exchange them and run the common validation ([`super::validate`])
//! on every rank before any data moves. Addresses are not sent (they mean nothing in
//! another process); lengths, element types, the operation and its arguments are.

use super::desc::{BufDesc, Desc, OpKind};
use crate::communicator::ReduceOp;
use crate::element::DType;

pub(crate) fn dtype_code(d: DType) -> u64 {
    match d {
        DType::F32 => 0,
        DType::F64 => 1,
        DType::I64 => 2,
        DType::U8 => 3,
    }
}

pub(crate) fn dtype_of(code: u64) -> Option<DType> {
    Some(match code {
        0 => DType::F32,
        1 => DType::F64,
        2 => DType::I64,
        3 => DType::U8,
        _ => return None,
    })
}

/// The operation as two words: a code and its parameter (reduce op or broadcast root).
pub(crate) fn op_code(op: OpKind) -> (u64, u64) {
    let red = |r: ReduceOp| match r {
        ReduceOp::Sum => 0,
        ReduceOp::Max => 1,
        ReduceOp::Min => 2,
    };
    match op {
        OpKind::AllReduce(r) => (1, red(r)),
        OpKind::AllReduceSumFused => (2, 0),
        OpKind::AllGather => (3, 0),
        OpKind::AllGatherVarcount => (4, 0),
        OpKind::ReduceScatter => (5, 0),
        OpKind::Broadcast { root } => (6, root as u64),
        OpKind::Barrier => (7, 0),
    }
}

/// The inverse of [`op_code`]; `None` for words no encoder produced.
pub(crate) fn op_of(code: u64, param: u64) -> Option<OpKind> {
    Some(match (code, param) {
        (1, 0) => OpKind::AllReduce(ReduceOp::Sum),
        (1, 1) => OpKind::AllReduce(ReduceOp::Max),
        (1, 2) => OpKind::AllReduce(ReduceOp::Min),
        (2, _) => OpKind::AllReduceSumFused,
        (3, _) => OpKind::AllGather,
        (4, _) => OpKind::AllGatherVarcount,
        (5, _) => OpKind::ReduceScatter,
        (6, root) => OpKind::Broadcast {
            root: usize::try_from(root).ok()?,
        },
        (7, _) => OpKind::Barrier,
        _ => return None,
    })
}

/// `[op, param, n_bufs, n_counts, (dtype, len) per buffer, counts...]`.
pub(crate) fn encode(desc: &Desc) -> Vec<u64> {
    let (op, param) = op_code(desc.op);
    let mut out = Vec::with_capacity(4 + 2 * desc.bufs.len() + desc.counts.len());
    out.extend([op, param, desc.bufs.len() as u64, desc.counts.len() as u64]);
    for b in &desc.bufs {
        out.extend([dtype_code(b.dtype), b.len as u64]);
    }
    out.extend(desc.counts.iter().map(|&c| c as u64));
    out
}

/// The inverse of [`encode`] (addresses are 0); `None` for words no encoder produced.
pub(crate) fn decode(words: &[u64]) -> Option<Desc> {
    let [op, param, nbufs, ncounts, rest @ ..] = words else {
        return None;
    };
    let nbufs = usize::try_from(*nbufs).ok()?;
    let ncounts = usize::try_from(*ncounts).ok()?;
    if rest.len() != nbufs.checked_mul(2)?.checked_add(ncounts)? {
        return None;
    }
    let (bufs, counts) = rest.split_at(2 * nbufs);
    let bufs = bufs
        .chunks_exact(2)
        .map(|p| {
            Some(BufDesc {
                dtype: dtype_of(p[0])?,
                addr: 0,
                len: usize::try_from(p[1]).ok()?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let counts = counts
        .iter()
        .map(|&c| usize::try_from(c).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(Desc {
        op: op_of(*op, *param)?,
        bufs,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_operation() {
        let ops = [
            OpKind::AllReduce(ReduceOp::Sum),
            OpKind::AllReduce(ReduceOp::Max),
            OpKind::AllReduce(ReduceOp::Min),
            OpKind::AllReduceSumFused,
            OpKind::AllGather,
            OpKind::AllGatherVarcount,
            OpKind::ReduceScatter,
            OpKind::Broadcast { root: 3 },
            OpKind::Barrier,
        ];
        for (i, op) in ops.into_iter().enumerate() {
            let desc = Desc {
                op,
                bufs: vec![
                    BufDesc {
                        dtype: DType::F64,
                        addr: 0,
                        len: 17 + i,
                    },
                    BufDesc {
                        dtype: DType::U8,
                        addr: 0,
                        len: 0,
                    },
                ],
                counts: vec![4, 0, i],
            };
            let back = decode(&encode(&desc)).expect("decodes");
            assert_eq!(back.op, desc.op);
            assert_eq!(back.bufs, desc.bufs);
            assert_eq!(back.counts, desc.counts);
        }
    }

    #[test]
    fn rejects_malformed_words() {
        assert!(decode(&[1, 0, 1]).is_none());
        assert!(decode(&[1, 9, 0, 0]).is_none(), "unknown reduce op");
        assert!(decode(&[1, 0, 1, 0, 7, 3]).is_none(), "unknown dtype");
        assert!(decode(&[3, 0, 2, 0, 0, 1]).is_none(), "too few words");
    }
}
