//! Data movement over MPI in bounded chunks, with every reduction folded locally in rank order.
//!
//! MPI counts and displacements are `i32`, and a gather of `world` copies of a big buffer
//! would need `world` times its memory, so every operation runs in rounds of at most
//! [`chunk_elems`] elements per rank and peer.

use mpi::Count;
use mpi::datatype::{Partition, PartitionMut};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{CommunicatorCollectives, Equivalence, Root};

use crate::communicator::ReduceOp;
use crate::element::Element;

/// Bytes per rank and round by default (the staging buffers hold `world` times this).
pub(crate) const CHUNK_BYTES: usize = 16 << 20;

/// An element type MPI can move.
pub(crate) trait MpiElement: Element + Equivalence {}
impl MpiElement for f32 {}
impl MpiElement for f64 {}
impl MpiElement for i64 {}
impl MpiElement for u8 {}

/// Elements of `T` per rank and round: at most `chunk_bytes`, and `world` of them must fit
/// an MPI count.
pub(crate) fn chunk_elems<T>(world: usize, chunk_bytes: usize) -> usize {
    let by_bytes = chunk_bytes / std::mem::size_of::<T>().max(1);
    by_bytes.min(i32::MAX as usize / world.max(1)).max(1)
}

fn count(n: usize) -> Count {
    // Every count and displacement passed to MPI is bounded by `world * chunk_elems` or
    // checked by the caller, so this conversion does not saturate.
    Count::try_from(n).unwrap_or(Count::MAX)
}

fn displs(counts: &[Count]) -> Vec<Count> {
    counts
        .iter()
        .scan(0, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect()
}

/// The part of `[0, n)` handled in round `round`: `[lo, hi)`, possibly empty.
fn piece(n: usize, round: usize, chunk: usize) -> (usize, usize) {
    let lo = (round * chunk).min(n);
    (lo, (lo + chunk).min(n))
}

/// Number of rounds so that every count is covered.
fn rounds(counts: &[usize], chunk: usize) -> usize {
    counts.iter().map(|&c| c.div_ceil(chunk)).max().unwrap_or(0)
}

/// Variable-count all-gather: `out` (holding `sum(counts)` elements) becomes the concatenation
/// of every rank's `send` (rank `s` sends `counts[s]` elements) in rank order.
pub(crate) fn all_gatherv<T: Equivalence + Copy + Default>(
    comm: &SimpleCommunicator,
    chunk_bytes: usize,
    send: &[T],
    counts: &[usize],
    out: &mut [T],
) {
    let world = counts.len();
    let total: usize = counts.iter().sum();
    if total == 0 {
        // Nothing to move on any rank (the counts agree everywhere), so no call at all.
        return;
    }
    // An empty slice's dangling address can equal MPI_IN_PLACE (1 for `u8` in Open MPI):
    // give MPI a real address with count 0 instead.
    let dummy = [T::default(); 1];
    let send = if send.is_empty() { &dummy[..0] } else { send };
    let chunk = chunk_elems::<T>(world, chunk_bytes);
    if total <= i32::MAX as usize && counts.iter().all(|&c| c <= chunk) {
        // One call straight into `out`.
        let c: Vec<Count> = counts.iter().map(|&n| count(n)).collect();
        let d = displs(&c);
        let mut part = PartitionMut::new(out, c, d);
        comm.all_gather_varcount_into(send, &mut part);
        return;
    }
    let offsets: Vec<usize> = counts
        .iter()
        .scan(0, |acc, &c| {
            let o = *acc;
            *acc += c;
            Some(o)
        })
        .collect();
    let mut stage = vec![T::default(); world * chunk];
    for round in 0..rounds(counts, chunk) {
        let sizes: Vec<usize> = counts
            .iter()
            .map(|&n| {
                let (lo, hi) = piece(n, round, chunk);
                hi - lo
            })
            .collect();
        let c: Vec<Count> = sizes.iter().map(|&n| count(n)).collect();
        let d = displs(&c);
        let (lo, hi) = piece(send.len(), round, chunk);
        {
            let mut part = PartitionMut::new(&mut stage[..], c, d.clone());
            comm.all_gather_varcount_into(&send[lo..hi], &mut part);
        }
        for (s, &n) in sizes.iter().enumerate().filter(|&(_, &n)| n > 0) {
            let at = offsets[s] + round * chunk;
            let from = d[s] as usize;
            out[at..at + n].copy_from_slice(&stage[from..from + n]);
        }
    }
}

/// Reduce-scatter: rank `me` gets in `recv` (`counts[me]` elements) the fold, in rank order
/// 0..N-1, of every rank's `send[off_me .. off_me + counts[me]]` (`send` holds `sum(counts)`).
pub(crate) fn reduce_scatter<T: MpiElement>(
    comm: &SimpleCommunicator,
    chunk_bytes: usize,
    me: usize,
    send: &[T],
    counts: &[usize],
    recv: &mut [T],
    op: ReduceOp,
) {
    let world = counts.len();
    let chunk = chunk_elems::<T>(world, chunk_bytes);
    let offsets: Vec<usize> = counts
        .iter()
        .scan(0, |acc, &c| {
            let o = *acc;
            *acc += c;
            Some(o)
        })
        .collect();
    let mut out_stage = vec![T::default(); world * chunk];
    let mut in_stage = vec![T::default(); world * chunk];
    for round in 0..rounds(counts, chunk) {
        // To each destination d: this round's piece of d's segment.
        let mut send_counts = Vec::with_capacity(world);
        let mut filled = 0;
        for (d, &n) in counts.iter().enumerate() {
            let (lo, hi) = piece(n, round, chunk);
            let m = hi - lo;
            out_stage[filled..filled + m].copy_from_slice(&send[offsets[d] + lo..offsets[d] + hi]);
            filled += m;
            send_counts.push(count(m));
        }
        let (lo, hi) = piece(counts[me], round, chunk);
        let m = hi - lo;
        let recv_counts = vec![count(m); world];
        {
            let sd = displs(&send_counts);
            let rd = displs(&recv_counts);
            let part_out = Partition::new(&out_stage[..], send_counts, sd);
            let mut part_in = PartitionMut::new(&mut in_stage[..], recv_counts, rd);
            comm.all_to_all_varcount_into(&part_out, &mut part_in);
        }
        fold_rows(&in_stage[..world * m], m, &mut recv[lo..hi], op);
    }
}

/// `dst[i] = f(...f(f(rows[0][i], rows[1][i]), rows[2][i])..., rows[k-1][i])`: the fold in
/// rank order, as the thread group computes it.
fn fold_rows<T: Element>(rows: &[T], m: usize, dst: &mut [T], op: ReduceOp) {
    if m == 0 {
        return;
    }
    let f = match op {
        ReduceOp::Sum => T::add,
        ReduceOp::Max => T::max,
        ReduceOp::Min => T::min,
    };
    dst.copy_from_slice(&rows[..m]);
    for row in rows.chunks_exact(m).skip(1) {
        for (a, &b) in dst.iter_mut().zip(row) {
            *a = f(*a, b);
        }
    }
}

/// In-place all-reduce: a reduce-scatter over the balanced segments, then an all-gather, so
/// each element is folded once (in rank order) and every rank receives the same bits.
pub(crate) fn all_reduce<T: MpiElement>(
    comm: &SimpleCommunicator,
    chunk_bytes: usize,
    me: usize,
    buf: &mut [T],
    op: ReduceOp,
) {
    let world = comm_size(comm);
    let counts: Vec<usize> = (0..world)
        .map(|r| {
            let (base, rem) = (buf.len() / world, buf.len() % world);
            base + usize::from(r < rem)
        })
        .collect();
    let mut mine = vec![T::default(); counts[me]];
    reduce_scatter(comm, chunk_bytes, me, buf, &counts, &mut mine, op);
    all_gatherv(comm, chunk_bytes, &mine, &counts, buf);
}

/// Broadcast from `root`, in rounds of at most `chunk_elems` elements.
pub(crate) fn broadcast<T: MpiElement>(
    comm: &SimpleCommunicator,
    chunk_bytes: usize,
    buf: &mut [T],
    root: usize,
) {
    use mpi::topology::Communicator as _;
    let chunk = chunk_elems::<T>(1, chunk_bytes);
    let root = comm.process_at_rank(count(root));
    for piece in buf.chunks_mut(chunk) {
        root.broadcast_into(piece);
    }
}

fn comm_size(comm: &SimpleCommunicator) -> usize {
    use mpi::topology::Communicator as _;
    usize::try_from(comm.size()).unwrap_or(1)
}
