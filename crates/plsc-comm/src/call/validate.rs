//! Checks, done once by the last rank to arrive, that all ranks' calls fit together.
//!
//! The outcome is shared: every rank of the round returns the same error variant (built for
//! its own rank by [`Failure::to_error`]), so no rank proceeds while another one fails.

use super::desc::{Desc, OpKind};
use crate::element::DType;
use crate::error::CommError;

/// Why a round was refused, independent of which rank reports it.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Mismatch(String),
    /// The element type of one argument, per rank (at least two differ).
    DType(Vec<DType>),
    BadLength(String),
    BadRank(usize),
}

impl Failure {
    /// The error that rank `rank` (which called `op`) returns.
    pub(crate) fn to_error(&self, rank: usize, world: usize, op: &'static str) -> CommError {
        match self {
            Failure::Mismatch(detail) => CommError::Mismatch {
                rank,
                op,
                detail: detail.clone(),
            },
            Failure::BadLength(detail) => CommError::BadLength {
                rank,
                op,
                detail: detail.clone(),
            },
            Failure::BadRank(bad) => CommError::BadRank {
                rank,
                op,
                bad: *bad,
                world,
            },
            Failure::DType(dtypes) => {
                let mine = dtypes[rank];
                let (peer, theirs) = dtypes
                    .iter()
                    .copied()
                    .enumerate()
                    .find(|&(_, d)| d != mine)
                    .unwrap_or((rank, mine));
                CommError::DTypeMismatch {
                    rank,
                    op,
                    mine,
                    theirs,
                    peer,
                }
            }
        }
    }
}

/// Largest number of elements of `dtype` that one allocation can hold.
fn max_elems(dtype: DType) -> usize {
    let size = match dtype {
        DType::F32 => 4,
        DType::F64 | DType::I64 => 8,
        DType::U8 => 1,
    };
    isize::MAX as usize / size
}

/// Checks the descriptors of one round (`descs[r]` is rank r's). Panic-free: it runs under the
/// group lock, and indexes only after checking lengths.
pub(crate) fn validate(descs: &[Desc]) -> Result<(), Failure> {
    let world = descs.len();
    let first = &descs[0];

    // 1. The same collective with the same arguments everywhere.
    if let Some((r, d)) = descs.iter().enumerate().find(|(_, d)| d.op != first.op) {
        return Err(Failure::Mismatch(format!(
            "rank 0 called {} but rank {r} called {}",
            first.op.describe(),
            d.op.describe()
        )));
    }
    if let OpKind::Broadcast { root } = first.op
        && root >= world
    {
        return Err(Failure::BadRank(root));
    }
    if let Some((r, d)) = descs
        .iter()
        .enumerate()
        .find(|(_, d)| d.bufs.len() != first.bufs.len())
    {
        return Err(Failure::Mismatch(format!(
            "rank 0 passed {} buffers but rank {r} passed {}",
            first.bufs.len(),
            d.bufs.len()
        )));
    }

    // 2. Send and receive buffers of one rank hold the same element type.
    if matches!(first.op, OpKind::AllGather | OpKind::ReduceScatter) {
        for (r, d) in descs.iter().enumerate() {
            if d.bufs[0].dtype != d.bufs[1].dtype {
                return Err(Failure::Mismatch(format!(
                    "rank {r}: send holds {:?} but recv holds {:?}",
                    d.bufs[0].dtype, d.bufs[1].dtype
                )));
            }
        }
    }

    // 3. Element types agree across ranks, buffer by buffer.
    for j in 0..first.bufs.len() {
        if descs.iter().any(|d| d.bufs[j].dtype != first.bufs[j].dtype) {
            return Err(Failure::DType(
                descs.iter().map(|d| d.bufs[j].dtype).collect(),
            ));
        }
    }

    // 4. Lengths.
    let lens = |j: usize| descs.iter().map(move |d| d.bufs[j].len);
    let equal_lens = |j: usize, what: &str| -> Result<(), Failure> {
        let want = first.bufs[j].len;
        match lens(j).enumerate().find(|&(_, l)| l != want) {
            None => Ok(()),
            Some((r, l)) => Err(Failure::BadLength(format!(
                "{what} has {want} elements on rank 0 but {l} on rank {r}"
            ))),
        }
    };
    match first.op {
        OpKind::Barrier => {}
        OpKind::AllReduce(_) | OpKind::Broadcast { .. } => equal_lens(0, "the buffer")?,
        OpKind::AllReduceSumFused => {
            for j in 0..first.bufs.len() {
                equal_lens(j, &format!("buffer {j}"))?;
            }
        }
        OpKind::AllGather => {
            equal_lens(0, "the send buffer")?;
            let send = first.bufs[0].len;
            let want = send
                .checked_mul(world)
                .filter(|&n| n <= max_elems(first.bufs[0].dtype));
            for (r, d) in descs.iter().enumerate() {
                if want != Some(d.bufs[1].len) {
                    return Err(Failure::BadLength(format!(
                        "rank {r}: recv has {} elements, expected world size {world} x send {send}",
                        d.bufs[1].len
                    )));
                }
            }
        }
        OpKind::AllGatherVarcount => {
            let total = lens(0).try_fold(0usize, |acc, l| acc.checked_add(l));
            if total.is_none_or(|t| t > max_elems(first.bufs[0].dtype)) {
                return Err(Failure::BadLength(
                    "the concatenation of all ranks' send buffers is too large for one allocation"
                        .to_string(),
                ));
            }
        }
        OpKind::ReduceScatter => {
            if let Some((r, d)) = descs
                .iter()
                .enumerate()
                .find(|(_, d)| d.counts != first.counts)
            {
                return Err(Failure::Mismatch(format!(
                    "reduce_scatter counts {:?} on rank 0 but {:?} on rank {r}",
                    first.counts, d.counts
                )));
            }
            if first.counts.len() != world {
                return Err(Failure::BadLength(format!(
                    "reduce_scatter got {} counts for world size {world}",
                    first.counts.len()
                )));
            }
            let total = first
                .counts
                .iter()
                .try_fold(0usize, |acc, &c| acc.checked_add(c));
            for (r, d) in descs.iter().enumerate() {
                if total != Some(d.bufs[0].len) {
                    return Err(Failure::BadLength(format!(
                        "rank {r}: send has {} elements but the counts {:?} sum to {}",
                        d.bufs[0].len,
                        first.counts,
                        total.map_or_else(|| "more than usize::MAX".to_string(), |t| t.to_string())
                    )));
                }
                if d.bufs[1].len != first.counts[r] {
                    return Err(Failure::BadLength(format!(
                        "rank {r}: recv has {} elements but its count is {}",
                        d.bufs[1].len, first.counts[r]
                    )));
                }
            }
        }
    }
    Ok(())
}
