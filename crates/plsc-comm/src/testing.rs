//! A collective suite that checks any [`Communicator`] against a serial reference, bit for
//! bit, on every rank: every collective, all four element types, uneven lengths (empty,
//! shorter than the world, several chunks), data whose sums round differently in different
//! orders, and NaNs. Each rank computes the reference for the whole world itself (the data
//! are a function of rank and index), so nothing but the communicator under test crosses
//! ranks.
//!
//! Run it on each rank of a group: the thread group in the tests, MPI processes under
//! `mpirun -np 2 target/debug/examples/collective_suite` (feature `mpi`), TCP processes under
//! `cargo xtask launch`.

use crate::communicator::{CommExt, Communicator, ReduceOp};
use crate::element::Element;
use crate::error::CommError;

fn mix(rank: usize, i: usize, salt: usize) -> u64 {
    let mut x = (rank as u64)
        .wrapping_mul(1_000_003)
        .wrapping_add((i as u64).wrapping_mul(7919))
        .wrapping_add((salt as u64).wrapping_mul(104_729))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// An element type with deterministic test values, an exact bit pattern and independent
/// scalar reference reductions (not the crate's `Element` methods).
pub trait SuiteElem: Element + std::fmt::Debug {
    /// Value `i` of rank `rank`'s buffer number `salt`. Floats include NaNs and values whose
    /// sums round differently in different orders; integer sums overflow.
    fn make(rank: usize, i: usize, salt: usize) -> Self;
    /// The exact bits, for comparisons (NaN equals NaN of the same bits).
    fn bits(self) -> u64;
    /// Reference sum (wrapping for integers).
    fn ref_sum(a: Self, b: Self) -> Self;
    /// Reference maximum, NaN-propagating.
    fn ref_max(a: Self, b: Self) -> Self;
    /// Reference minimum, NaN-propagating.
    fn ref_min(a: Self, b: Self) -> Self;
}

macro_rules! float_elem {
    ($t:ty, $scale:expr, $bits:expr) => {
        impl SuiteElem for $t {
            fn make(rank: usize, i: usize, salt: usize) -> Self {
                let h = mix(rank, i, salt);
                if h.is_multiple_of(61) {
                    <$t>::NAN
                } else {
                    ((h % 2_000_001) as $t - 1_000_000.0) * $scale
                }
            }
            fn bits(self) -> u64 {
                $bits(self)
            }
            fn ref_sum(a: Self, b: Self) -> Self {
                a + b
            }
            // The data hold no -0.0, so std's max/min are exact references apart from NaN.
            fn ref_max(a: Self, b: Self) -> Self {
                if a.is_nan() || b.is_nan() {
                    <$t>::NAN
                } else {
                    a.max(b)
                }
            }
            fn ref_min(a: Self, b: Self) -> Self {
                if a.is_nan() || b.is_nan() {
                    <$t>::NAN
                } else {
                    a.min(b)
                }
            }
        }
    };
}
float_elem!(f32, 0.001_37, |x: f32| u64::from(x.to_bits()));
float_elem!(f64, 1.37e-3, |x: f64| x.to_bits());

macro_rules! int_elem {
    ($t:ty, $bits:expr) => {
        impl SuiteElem for $t {
            fn make(rank: usize, i: usize, salt: usize) -> Self {
                mix(rank, i, salt) as $t
            }
            fn bits(self) -> u64 {
                $bits(self)
            }
            fn ref_sum(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            fn ref_max(a: Self, b: Self) -> Self {
                a.max(b)
            }
            fn ref_min(a: Self, b: Self) -> Self {
                a.min(b)
            }
        }
    };
}
int_elem!(i64, |x: i64| x as u64);
int_elem!(u8, u64::from);

/// Rank `rank`'s buffer number `salt` of `len` elements.
pub fn data<T: SuiteElem>(rank: usize, len: usize, salt: usize) -> Vec<T> {
    (0..len).map(|i| T::make(rank, i, salt)).collect()
}

/// The exact bits of every element, for comparisons.
pub fn bits<T: SuiteElem>(v: &[T]) -> Vec<u64> {
    v.iter().map(|&x| x.bits()).collect()
}

const OPS: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min];
/// Uneven lengths, including empty, shorter than the rank count, and several reduction blocks.
const LENS: [usize; 6] = [0, 1, 3, 7, 1000, 2051];

fn salt(len: usize, case: usize) -> usize {
    len * 16 + case
}

/// Rank-order fold of `bufs` (one per rank): the reference all-reduce.
pub fn fold<T: SuiteElem>(bufs: &[Vec<T>], op: ReduceOp) -> Vec<T> {
    let f = match op {
        ReduceOp::Sum => T::ref_sum,
        ReduceOp::Max => T::ref_max,
        ReduceOp::Min => T::ref_min,
    };
    let mut acc = bufs[0].clone();
    for b in &bufs[1..] {
        for (a, &x) in acc.iter_mut().zip(b) {
            *a = f(*a, x);
        }
    }
    acc
}

fn varcount_len(len: usize, rank: usize) -> usize {
    (len + 5 * rank) % 13 + if rank == 1 { 0 } else { len / 3 }
}

fn rs_counts(len: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|k| (len * (k + 1) + 3 * k) % 11 + if k == 0 { len } else { 0 })
        .collect()
}

/// The collectives each rank runs, each result as bits; [`expected`] computes the same
/// sequence serially.
fn run_sequence<T: SuiteElem>(comm: &dyn Communicator) -> Result<Vec<Vec<u64>>, CommError> {
    let (r, n) = (comm.rank(), comm.world_size());
    let mut out = Vec::new();
    for &len in &LENS {
        for (c, &op) in OPS.iter().enumerate() {
            let mut buf = data::<T>(r, len, salt(len, c));
            comm.all_reduce(&mut buf, op)?;
            out.push(bits(&buf));
        }
        let mut a = data::<T>(r, len, salt(len, 3));
        let mut b = data::<T>(r, len / 2 + 1, salt(len, 4));
        let mut c = data::<T>(r, 3, salt(len, 5));
        comm.all_reduce_sum_fused(&mut [&mut a, &mut b, &mut c])?;
        out.extend([bits(&a), bits(&b), bits(&c)]);

        out.push(bits(&comm.all_gather(&data::<T>(r, len, salt(len, 6)))?));

        let (all, counts) =
            comm.all_gather_varcount(&data::<T>(r, varcount_len(len, r), salt(len, 7)))?;
        out.push(bits(&all));
        out.push(counts.iter().map(|&c| c as u64).collect());

        let counts = rs_counts(len, n);
        let mut recv = vec![T::default(); counts[r]];
        comm.reduce_scatter(
            &data::<T>(r, counts.iter().sum(), salt(len, 8)),
            &mut recv,
            &counts,
        )?;
        out.push(bits(&recv));

        let mut buf = data::<T>(r, len, salt(len, 9));
        comm.broadcast(&mut buf, len % n)?;
        out.push(bits(&buf));

        comm.barrier()?;
    }
    Ok(out)
}

/// What rank `r` of `n` must get from [`run_sequence`], computed serially.
fn expected<T: SuiteElem>(n: usize, r: usize) -> Vec<Vec<u64>> {
    let all =
        |len: usize, s: usize| -> Vec<Vec<T>> { (0..n).map(|k| data::<T>(k, len, s)).collect() };
    let mut out = Vec::new();
    for &len in &LENS {
        for (c, &op) in OPS.iter().enumerate() {
            out.push(bits(&fold(&all(len, salt(len, c)), op)));
        }
        out.push(bits(&fold(&all(len, salt(len, 3)), ReduceOp::Sum)));
        out.push(bits(&fold(&all(len / 2 + 1, salt(len, 4)), ReduceOp::Sum)));
        out.push(bits(&fold(&all(3, salt(len, 5)), ReduceOp::Sum)));
        out.push(bits(&all(len, salt(len, 6)).concat()));

        let send: Vec<Vec<T>> = (0..n)
            .map(|k| data::<T>(k, varcount_len(len, k), salt(len, 7)))
            .collect();
        out.push(bits(&send.concat()));
        out.push(send.iter().map(|s| s.len() as u64).collect());

        let counts = rs_counts(len, n);
        let total = fold(&all(counts.iter().sum(), salt(len, 8)), ReduceOp::Sum);
        let off: usize = counts[..r].iter().sum();
        out.push(bits(&total[off..off + counts[r]]));

        out.push(bits(&data::<T>(len % n, len, salt(len, 9))));
    }
    out
}

/// The suite for one element type: every collective on this rank, each result compared bit
/// for bit with the serial reference. Every rank of the group must call it. Returns the number
/// of results checked.
pub fn check_elem<T: SuiteElem>(comm: &dyn Communicator) -> Result<usize, CommError> {
    let got = run_sequence::<T>(comm)?;
    let want = expected::<T>(comm.world_size(), comm.rank());
    let fail = |detail: String| CommError::Backend {
        rank: comm.rank(),
        op: "collective_suite",
        detail,
    };
    if got.len() != want.len() {
        return Err(fail(format!(
            "{}: {} results, expected {}",
            std::any::type_name::<T>(),
            got.len(),
            want.len()
        )));
    }
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        if g != w {
            let first = g.iter().zip(w).position(|(a, b)| a != b);
            return Err(fail(format!(
                "{}: world {} rank {}: result {i} differs from the serial reference \
                 (lengths {} vs {}, first differing element {first:?})",
                std::any::type_name::<T>(),
                comm.world_size(),
                comm.rank(),
                g.len(),
                w.len()
            )));
        }
    }
    Ok(got.len())
}

/// Runs every collective for `f32`, `f64`, `i64` and `u8` on this rank and compares each
/// result, bit for bit, with the serial reference (sums folded in rank order 0..N-1). Every
/// rank of the group must call it. Returns the number of results checked; a collective's
/// error is returned as is, a wrong result as [`CommError::Backend`] naming the type, rank
/// and result.
pub fn collective_suite(comm: &dyn Communicator) -> Result<usize, CommError> {
    let mut checked = check_elem::<f32>(comm)?;
    checked += check_elem::<f64>(comm)?;
    checked += check_elem::<i64>(comm)?;
    checked += check_elem::<u8>(comm)?;
    Ok(checked)
}
