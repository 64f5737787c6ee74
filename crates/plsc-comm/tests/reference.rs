//! Every collective of the thread group against a serial reference, for 1 to 5 ranks, all four
//! element types and uneven sizes; results compared bit for bit, on every rank.

mod common;

use common::{TestElem, bits, data, guarded};
use plsc_comm::{CommError, CommExt, Communicator, ReduceOp, run_ranks};

/// Independent scalar reductions (not the crate's `Element` methods).
trait RefOps: TestElem {
    fn ref_sum(a: Self, b: Self) -> Self;
    fn ref_max(a: Self, b: Self) -> Self;
    fn ref_min(a: Self, b: Self) -> Self;
}

macro_rules! float_ref {
    ($t:ty) => {
        impl RefOps for $t {
            fn ref_sum(a: Self, b: Self) -> Self {
                a + b
            }
            // The test data hold no -0.0, so std's max/min are exact references apart from NaN.
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
macro_rules! int_ref {
    ($t:ty) => {
        impl RefOps for $t {
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
float_ref!(f32);
float_ref!(f64);
int_ref!(i64);
int_ref!(u8);

const OPS: [ReduceOp; 3] = [ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min];
/// Uneven lengths, including empty, shorter than the rank count, and several reduction blocks.
const LENS: [usize; 6] = [0, 1, 3, 7, 1000, 2051];

fn salt(len: usize, case: usize) -> usize {
    len * 16 + case
}

/// Rank-order fold of `bufs` (one per rank) with `op`: the reference all-reduce.
fn fold<T: RefOps>(bufs: &[Vec<T>], op: ReduceOp) -> Vec<T> {
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

/// The sequence of collectives each rank runs, with each result as bits. The same sequence is
/// computed serially by [`expected`].
fn run_sequence<T: RefOps>(comm: &impl Communicator) -> Result<Vec<Vec<u64>>, CommError> {
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
fn expected<T: RefOps>(n: usize, r: usize) -> Vec<Vec<u64>> {
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

        out.push(
            all(len, salt(len, 6))
                .concat()
                .iter()
                .map(|&x| x.bits())
                .collect(),
        );

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

fn check<T: RefOps>() {
    for n in 1..=5 {
        let results = guarded(move || run_ranks(n, |comm| run_sequence::<T>(&comm)));
        assert_eq!(results.len(), n);
        let results: Vec<Vec<Vec<u64>>> = results
            .into_iter()
            .enumerate()
            .map(|(r, res)| res.unwrap_or_else(|e| panic!("n={n} rank {r}: {e}")))
            .collect();
        for (r, got) in results.iter().enumerate() {
            let want = expected::<T>(n, r);
            assert_eq!(got.len(), want.len());
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "{}: n={n} rank {r}: result {i} differs from the serial reference",
                    std::any::type_name::<T>()
                );
            }
        }
    }
}

#[test]
fn f32_matches_serial_reference() {
    check::<f32>();
}

#[test]
fn f64_matches_serial_reference() {
    check::<f64>();
}

#[test]
fn i64_matches_serial_reference() {
    check::<i64>();
}

#[test]
fn u8_matches_serial_reference() {
    check::<u8>();
}

/// All-reduce results are the same bits on every rank (here on data where the summation order
/// changes the rounding), over many repetitions so that thread timing varies.
#[test]
fn all_reduce_is_bitwise_identical_on_every_rank() {
    let results = guarded(|| {
        run_ranks(4, |comm| {
            let mut seen = Vec::new();
            for it in 0..300 {
                let mut buf = data::<f32>(comm.rank(), 257 + it % 5, it);
                comm.all_reduce(&mut buf, ReduceOp::Sum)?;
                seen.push(bits(&buf));
            }
            Ok::<_, CommError>(seen)
        })
    });
    let results: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    for r in 1..4 {
        assert_eq!(results[r], results[0], "rank {r} differs from rank 0");
    }
    // The values really do depend on the summation order, so the check above is not trivial.
    let bufs: Vec<Vec<f32>> = (0..4).map(|k| data::<f32>(k, 257, 0)).collect();
    let forward = fold(&bufs, ReduceOp::Sum);
    let mut rev = bufs.clone();
    rev.reverse();
    let backward = fold(&rev, ReduceOp::Sum);
    assert_ne!(bits(&forward), bits(&backward));
    assert_eq!(results[0][0], bits(&forward));
}

/// Max and min propagate NaN from any rank, with explicit expected values.
#[test]
fn max_and_min_propagate_nan() {
    let results = guarded(|| {
        run_ranks(3, |comm| {
            let nan = f32::NAN;
            let mut x = match comm.rank() {
                0 => [1.0, nan, 5.0, -2.0],
                1 => [3.0, 2.0, nan, -7.0],
                _ => [2.0, 0.5, 4.0, nan],
            };
            let mut y = x;
            comm.all_reduce(&mut x, ReduceOp::Max)?;
            comm.all_reduce(&mut y, ReduceOp::Min)?;
            Ok::<_, CommError>((x, y))
        })
    });
    for res in results {
        let (max, min) = res.unwrap();
        assert_eq!(max[0], 3.0);
        assert_eq!(min[0], 1.0);
        for i in 1..4 {
            assert!(
                max[i].is_nan() && min[i].is_nan(),
                "index {i}: {max:?} {min:?}"
            );
        }
    }
}

/// A typed call through `&dyn Communicator` works like the concrete type.
#[test]
fn works_through_dyn_communicator() {
    let results = guarded(|| {
        run_ranks(2, |comm| {
            let dynamic: &dyn Communicator = &comm;
            let mut x = [dynamic.rank() as i64 + 1];
            dynamic.all_reduce(&mut x, ReduceOp::Sum)?;
            Ok::<_, CommError>(x[0])
        })
    });
    assert_eq!(
        results.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![3, 3]
    );
}

#[test]
fn zero_ranks_run_nothing() {
    let results = run_ranks(0, |_comm| Ok::<(), CommError>(()));
    assert!(results.is_empty());
}
