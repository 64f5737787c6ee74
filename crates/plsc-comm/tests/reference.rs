//! Every collective of the thread group against a serial reference, for 1 to 5 ranks, all four
//! element types and uneven sizes; results compared bit for bit, on every rank.

mod common;

use common::guarded;
use plsc_comm::testing::{SuiteElem, bits, check_elem, data, fold};
use plsc_comm::{CommError, CommExt, Communicator, ReduceOp, run_ranks};

/// The suite's per-type checks (every collective against the serial reference) for 1 to 5
/// rank threads, on every rank.
fn check<T: SuiteElem>() {
    for n in 1..=5 {
        let results = guarded(move || run_ranks(n, |comm| check_elem::<T>(&comm)));
        assert_eq!(results.len(), n);
        for (r, res) in results.into_iter().enumerate() {
            let checked = res.unwrap_or_else(|e| panic!("n={n} rank {r}: {e}"));
            assert!(checked > 0, "n={n} rank {r}: nothing checked");
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
