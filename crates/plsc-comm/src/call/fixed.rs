//! NCCL's form of the call descriptor, and the checks every rank runs on all of them. NCCL
//! itself cannot tell that ranks disagree (it would hang or read out of bounds), so with
//! validation on, every collective starts with a tiny all-gather of these descriptors; all
//! ranks see the same descriptors and so return the same error.
//!
//! An NCCL all-gather moves the same number of words from every rank, so this form has a fixed
//! width ([`DESC_WORDS`]): the operation ([`OpKind`], numbered as [`codec`](super::codec)
//! numbers it for MPI and TCP), the element type, lengths, and list arguments (reduce-scatter
//! counts, fused buffers) as hashes.

use super::codec;
use super::desc::OpKind;
use crate::communicator::ReduceOp;
use crate::device_dtype::DeviceDType;
use crate::error::CommError;

/// Number of `i64` words in a descriptor: the operation as [`codec`](super::codec) numbers it
/// (code and parameter: reduce op or root), the element type, and six operation-specific
/// words.
pub(crate) const DESC_WORDS: usize = 9;

/// Operation-specific words.
const ARG_WORDS: usize = DESC_WORDS - 3;

/// One rank's description of the call it is making.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Desc {
    pub op: OpKind,
    /// [`DeviceDType::code`], 0 where the call has no single element type.
    pub dtype: i64,
    /// Operation-specific words (see the constructors).
    pub words: [i64; ARG_WORDS],
}

/// NCCL's reduce-scatter takes a reduction, the host one (a sum) does not: the number
/// [`codec`](super::codec) gives `op` inside an all-reduce.
fn reduce_op_code(op: ReduceOp) -> i64 {
    codec::op_code(OpKind::AllReduce(op)).1 as i64
}

/// FNV-1a over a list of numbers: equal lists give equal hashes on every rank.
pub(crate) fn hash_list(values: impl IntoIterator<Item = u64>) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for v in values {
        for b in v.to_le_bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h as i64
}

impl Desc {
    fn new(op: OpKind, dtype: Option<DeviceDType>, w: &[i64]) -> Desc {
        let mut words = [0i64; ARG_WORDS];
        words[..w.len()].copy_from_slice(w);
        Desc {
            op,
            dtype: dtype.map_or(0, DeviceDType::code),
            words,
        }
    }
    pub fn all_reduce(dtype: DeviceDType, len: usize, op: ReduceOp) -> Desc {
        Desc::new(OpKind::AllReduce(op), Some(dtype), &[len as i64])
    }
    /// `bufs`: (type, length) of every buffer, in order.
    pub fn fused_sum(bufs: &[(DeviceDType, usize)]) -> Desc {
        let h = hash_list(bufs.iter().flat_map(|&(d, l)| [d.code() as u64, l as u64]));
        Desc::new(OpKind::AllReduceSumFused, None, &[bufs.len() as i64, h])
    }
    pub fn all_gather(dtype: DeviceDType, send: usize, recv: usize) -> Desc {
        Desc::new(OpKind::AllGather, Some(dtype), &[send as i64, recv as i64])
    }
    pub fn all_gather_var(dtype: DeviceDType, send: usize) -> Desc {
        Desc::new(OpKind::AllGatherVarcount, Some(dtype), &[send as i64])
    }
    pub fn reduce_scatter(
        dtype: DeviceDType,
        send: usize,
        recv: usize,
        counts: &[usize],
        op: ReduceOp,
    ) -> Desc {
        let h = hash_list(counts.iter().map(|&c| c as u64));
        Desc::new(
            OpKind::ReduceScatter,
            Some(dtype),
            &[
                send as i64,
                recv as i64,
                counts.len() as i64,
                h,
                reduce_op_code(op),
            ],
        )
    }
    pub fn broadcast(dtype: DeviceDType, len: usize, root: usize) -> Desc {
        Desc::new(OpKind::Broadcast { root }, Some(dtype), &[len as i64])
    }
    pub fn barrier() -> Desc {
        Desc::new(OpKind::Barrier, None, &[])
    }

    pub fn encode(&self) -> [i64; DESC_WORDS] {
        let (code, param) = codec::op_code(self.op);
        let mut out = [0i64; DESC_WORDS];
        out[0] = code as i64;
        out[1] = param as i64;
        out[2] = self.dtype;
        out[3..].copy_from_slice(&self.words);
        out
    }

    /// Reads a descriptor; `None` for words no plsc-rs rank writes.
    pub fn decode(w: &[i64]) -> Option<Desc> {
        if w.len() != DESC_WORDS {
            return None;
        }
        let op = codec::op_of(u64::try_from(w[0]).ok()?, u64::try_from(w[1]).ok()?)?;
        let mut words = [0i64; ARG_WORDS];
        words.copy_from_slice(&w[3..]);
        Some(Desc {
            op,
            dtype: w[2],
            words,
        })
    }
}

fn dtype_name(code: i64) -> String {
    DeviceDType::from_code(code).map_or_else(|| format!("code {code}"), |d| format!("{d:?}"))
}

/// Checks the descriptors of all ranks (`descs[r]` from rank r) for the call `mine` made on
/// `rank`. `counts` is this rank's reduce-scatter `counts` (identical on every rank once the
/// hashes agree). Returns every rank's first word (the per-rank lengths, which the
/// variable-count all-gather needs).
pub(crate) fn check(
    rank: usize,
    op: &'static str,
    descs: &[Desc],
    counts: Option<&[usize]>,
) -> Result<Vec<usize>, CommError> {
    let world = descs.len();
    let first = descs[0];
    let mismatch = |detail: String| CommError::Mismatch { rank, op, detail };
    let bad_len = |detail: String| CommError::BadLength { rank, op, detail };
    if let Some((r, d)) = descs.iter().enumerate().find(|(_, d)| d.op != first.op) {
        return Err(mismatch(format!(
            "rank 0 called {} but rank {r} called {}",
            first.op.describe(),
            d.op.describe()
        )));
    }
    let my = descs[rank].dtype;
    if let Some(peer) = (0..world).find(|&p| descs[p].dtype != my) {
        let host = |code| DeviceDType::from_code(code).and_then(DeviceDType::host);
        return Err(match (host(my), host(descs[peer].dtype)) {
            (Some(mine), Some(theirs)) => CommError::DTypeMismatch {
                rank,
                op,
                mine,
                theirs,
                peer,
            },
            _ => mismatch(format!(
                "element type {} here but {} on rank {peer}",
                dtype_name(my),
                dtype_name(descs[peer].dtype)
            )),
        });
    }
    let w = |r: usize, i: usize| descs[r].words[i];
    let differ = |i: usize| (1..world).find(|&r| w(r, i) != w(0, i));
    match first.op {
        OpKind::AllReduce(_) => {
            if let Some(r) = differ(0) {
                return Err(bad_len(format!(
                    "rank 0 has {} elements but rank {r} has {}",
                    w(0, 0),
                    w(r, 0)
                )));
            }
        }
        OpKind::AllReduceSumFused => {
            if let Some(r) = differ(0) {
                return Err(mismatch(format!(
                    "rank 0 passes {} buffers but rank {r} passes {}",
                    w(0, 0),
                    w(r, 0)
                )));
            }
            if let Some(r) = differ(1) {
                return Err(bad_len(format!(
                    "the buffer lengths or element types of rank {r} differ from rank 0's"
                )));
            }
        }
        OpKind::AllGather => {
            if let Some(r) = differ(0) {
                return Err(bad_len(format!(
                    "rank 0 sends {} elements but rank {r} sends {}",
                    w(0, 0),
                    w(r, 0)
                )));
            }
            let want = w(0, 0).saturating_mul(world as i64);
            if let Some(r) = (0..world).find(|&r| w(r, 1) != want) {
                return Err(bad_len(format!(
                    "rank {r}'s receive buffer has {} elements, expected {world} x {} = {want}",
                    w(r, 1),
                    w(0, 0)
                )));
            }
        }
        OpKind::AllGatherVarcount => {}
        OpKind::ReduceScatter => {
            if let Some(r) = differ(4) {
                return Err(mismatch(format!(
                    "rank 0 reduces with op {} but rank {r} with op {}",
                    w(0, 4),
                    w(r, 4)
                )));
            }
            if let Some(r) = differ(2).or_else(|| differ(3)) {
                return Err(mismatch(format!(
                    "the counts of rank {r} differ from rank 0's"
                )));
            }
            if w(0, 2) != world as i64 {
                return Err(bad_len(format!(
                    "counts has {} entries, expected one per rank ({world})",
                    w(0, 2)
                )));
            }
            let counts = counts.unwrap_or(&[]);
            let total: usize = counts.iter().sum();
            if let Some(r) = (0..world).find(|&r| w(r, 0) != total as i64) {
                return Err(bad_len(format!(
                    "rank {r} sends {} elements but counts sum to {total}",
                    w(r, 0)
                )));
            }
            if let Some(r) =
                (0..world).find(|&r| w(r, 1) != counts.get(r).map_or(-1, |&c| c as i64))
            {
                return Err(bad_len(format!(
                    "rank {r}'s receive buffer has {} elements but counts[{r}] = {}",
                    w(r, 1),
                    counts.get(r).copied().unwrap_or(0)
                )));
            }
        }
        OpKind::Broadcast { root } => {
            if root >= world {
                return Err(CommError::BadRank {
                    rank,
                    op,
                    bad: root,
                    world,
                });
            }
            if let Some(r) = differ(0) {
                return Err(bad_len(format!(
                    "rank 0 has {} elements but rank {r} has {}",
                    w(0, 0),
                    w(r, 0)
                )));
            }
        }
        OpKind::Barrier => {}
    }
    Ok((0..world).map(|r| w(r, 0).max(0) as usize).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::element::DType;

    fn round_trip(descs: &[Desc]) -> Vec<Desc> {
        descs
            .iter()
            .map(|d| Desc::decode(&d.encode()).unwrap())
            .collect()
    }

    #[test]
    fn descriptors_round_trip() {
        let all = [
            Desc::all_reduce(DeviceDType::F32, 7, ReduceOp::Max),
            Desc::fused_sum(&[(DeviceDType::F32, 3), (DeviceDType::F64, 0)]),
            Desc::all_gather(DeviceDType::U8, 2, 8),
            Desc::all_gather_var(DeviceDType::I64, 9),
            Desc::reduce_scatter(DeviceDType::F64, 6, 2, &[2, 4], ReduceOp::Sum),
            Desc::broadcast(DeviceDType::F32, 5, 1),
            Desc::barrier(),
        ];
        assert_eq!(round_trip(&all), all);
        assert_eq!(Desc::decode(&[99, 0, 0, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(
            Desc::decode(&[1, 7, 3, 0, 0, 0, 0, 0, 0]),
            None,
            "unknown reduce op"
        );
        assert_eq!(Desc::decode(&[1, 0, 3, 0, 0, 0, 0, 0]), None, "too short");
        assert_eq!(Desc::decode(&[1, 3]), None);
    }

    #[test]
    fn agreeing_calls_pass_and_return_lengths() {
        let d = [
            Desc::all_gather_var(DeviceDType::F32, 3),
            Desc::all_gather_var(DeviceDType::F32, 0),
            Desc::all_gather_var(DeviceDType::F32, 5),
        ];
        assert_eq!(check(1, "x", &d, None).unwrap(), vec![3, 0, 5]);
        let rs =
            |r: usize| Desc::reduce_scatter(DeviceDType::F32, 6, [1, 5][r], &[1, 5], ReduceOp::Sum);
        assert!(check(0, "rs", &[rs(0), rs(1)], Some(&[1, 5])).is_ok());
    }

    #[test]
    fn every_rank_reports_the_same_disagreement() {
        let d = [
            Desc::all_reduce(DeviceDType::F32, 4, ReduceOp::Sum),
            Desc::all_reduce(DeviceDType::F32, 5, ReduceOp::Sum),
        ];
        for rank in 0..2 {
            match check(rank, "all_reduce", &d, None) {
                Err(CommError::BadLength {
                    rank: r, detail, ..
                }) => {
                    assert_eq!(r, rank);
                    assert!(detail.contains("rank 1 has 5"), "{detail}");
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn named_errors_for_each_kind_of_disagreement() {
        let ar = Desc::all_reduce(DeviceDType::F32, 4, ReduceOp::Sum);
        let bc = Desc::broadcast(DeviceDType::F32, 4, 0);
        assert!(matches!(
            check(0, "x", &[ar, bc], None),
            Err(CommError::Mismatch { .. })
        ));
        let f64 = Desc::all_reduce(DeviceDType::F64, 4, ReduceOp::Sum);
        assert_eq!(
            check(0, "x", &[ar, f64], None),
            Err(CommError::DTypeMismatch {
                rank: 0,
                op: "x",
                mine: DType::F32,
                theirs: DType::F64,
                peer: 1
            })
        );
        assert_eq!(
            check(1, "x", &[ar, f64], None),
            Err(CommError::DTypeMismatch {
                rank: 1,
                op: "x",
                mine: DType::F64,
                theirs: DType::F32,
                peer: 0
            })
        );
        let max = Desc::all_reduce(DeviceDType::F32, 4, ReduceOp::Max);
        // The operations are named as every backend names them (OpKind::describe).
        assert!(matches!(
            check(0, "x", &[ar, max], None),
            Err(CommError::Mismatch { detail, .. })
                if detail == "rank 0 called all_reduce(Sum) but rank 1 called all_reduce(Max)"
        ));
        assert!(matches!(
            check(1, "x", &[bc, Desc::broadcast(DeviceDType::F32, 4, 1)], None),
            Err(CommError::Mismatch { detail, .. })
                if detail.contains("broadcast(root 0)") && detail.contains("broadcast(root 1)")
        ));
        let root2 = Desc::broadcast(DeviceDType::F32, 4, 2);
        assert_eq!(
            check(0, "b", &[root2, root2], None),
            Err(CommError::BadRank {
                rank: 0,
                op: "b",
                bad: 2,
                world: 2
            })
        );
        let g = |recv| Desc::all_gather(DeviceDType::F32, 3, recv);
        assert!(matches!(
            check(0, "g", &[g(6), g(5)], None),
            Err(CommError::BadLength { detail, .. }) if detail.contains("rank 1's receive buffer has 5")
        ));
        let rs = |send, c: &[usize]| {
            Desc::reduce_scatter(DeviceDType::F32, send, c[0], c, ReduceOp::Sum)
        };
        assert!(matches!(
            check(0, "rs", &[rs(3, &[1, 2]), rs(3, &[2, 1])], Some(&[1, 2])),
            Err(CommError::Mismatch { .. })
        ));
        assert!(matches!(
            check(0, "rs", &[rs(4, &[1, 2]), rs(4, &[1, 2])], Some(&[1, 2])),
            Err(CommError::BadLength { detail, .. }) if detail.contains("counts sum to 3")
        ));
        let fa = Desc::fused_sum(&[(DeviceDType::F32, 3)]);
        let fb = Desc::fused_sum(&[(DeviceDType::F32, 4)]);
        assert!(matches!(
            check(0, "f", &[fa, fb], None),
            Err(CommError::BadLength { .. })
        ));
    }
}
