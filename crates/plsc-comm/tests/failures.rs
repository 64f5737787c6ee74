//! Each failure mode of the thread group returns its named error on every rank, never a hang.
//! Every test body runs under [`guarded`], so a hang fails the test after 30 s.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::guarded;
use plsc_comm::{
    CommError, CommExt, Communicator, DType, ReduceOp, ThreadGroup, ThreadGroupOptions, run_ranks,
    run_ranks_with,
};

#[test]
fn a_panicking_rank_makes_the_others_fail_with_peer_left() {
    let results = guarded(|| {
        run_ranks(3, |comm| {
            let mut x = [1.0f32];
            comm.all_reduce(&mut x, ReduceOp::Sum)?; // one good round first
            assert_eq!(x[0], 3.0);
            if comm.rank() == 1 {
                panic!("rank 1 fails on purpose");
            }
            comm.all_reduce(&mut x, ReduceOp::Sum)?;
            Ok::<_, CommError>(())
        })
    });
    match &results[1] {
        Err(CommError::Panicked { rank: 1, message }) => {
            assert!(message.contains("on purpose"), "{message}")
        }
        other => panic!("rank 1: expected Panicked, got {other:?}"),
    }
    for r in [0, 2] {
        match &results[r] {
            Err(CommError::PeerLeft {
                rank,
                peer: 1,
                op: "all_reduce",
                reason,
            }) => {
                assert_eq!(*rank, r);
                assert!(reason.contains("panicked"), "{reason}");
            }
            other => panic!("rank {r}: expected PeerLeft from rank 1, got {other:?}"),
        }
    }
}

#[test]
fn a_rank_that_returns_early_makes_the_others_fail_with_peer_left() {
    let results = guarded(|| {
        run_ranks(3, |comm| {
            if comm.rank() == 2 {
                return Ok(()); // drops its communicator without taking part
            }
            comm.all_gather(&[comm.rank() as u8])?;
            Ok::<_, CommError>(())
        })
    });
    assert_eq!(results[2], Ok(()));
    for r in [0, 1] {
        assert!(
            matches!(
                &results[r],
                Err(CommError::PeerLeft {
                    peer: 2,
                    op: "all_gather",
                    ..
                })
            ),
            "rank {r}: {:?}",
            results[r]
        );
    }
}

#[test]
fn a_dropped_communicator_fails_later_calls_at_once() {
    guarded(|| {
        let mut comms = ThreadGroup::new(2);
        drop(comms.pop());
        let err = comms[0].barrier().unwrap_err();
        assert!(
            matches!(
                err,
                CommError::PeerLeft {
                    rank: 0,
                    peer: 1,
                    op: "barrier",
                    ..
                }
            ),
            "{err:?}"
        );
    });
}

/// Runs `f` on 3 ranks and returns each rank's error (panics if a rank succeeded).
fn errors_of<F>(f: F) -> Vec<CommError>
where
    F: Fn(&plsc_comm::ThreadComm) -> Result<(), CommError> + Send + Sync + 'static,
{
    guarded(move || {
        run_ranks(3, |comm| {
            let first = f(&comm);
            // The group stays usable after a refused call: a correct collective still works.
            let mut x = [comm.rank() as i64];
            comm.all_reduce(&mut x, ReduceOp::Sum)?;
            assert_eq!(x[0], 3);
            Ok::<_, CommError>(first)
        })
    })
    .into_iter()
    .enumerate()
    .map(|(r, res)| match res {
        Ok(Err(e)) => e,
        other => panic!("rank {r}: expected an error from the first call, got {other:?}"),
    })
    .collect()
}

#[test]
fn mismatched_all_reduce_lengths_are_bad_length_on_every_rank() {
    let errs = errors_of(|comm| {
        let mut x = vec![1.0f32; if comm.rank() == 1 { 5 } else { 4 }];
        comm.all_reduce(&mut x, ReduceOp::Sum)
    });
    for (r, e) in errs.iter().enumerate() {
        match e {
            CommError::BadLength {
                rank,
                op: "all_reduce",
                detail,
            } => {
                assert_eq!(*rank, r);
                assert!(detail.contains("rank 1"), "{detail}");
            }
            other => panic!("rank {r}: {other:?}"),
        }
    }
}

#[test]
fn wrong_all_gather_recv_length_is_bad_length_on_every_rank() {
    let errs = errors_of(|comm| {
        let mut recv = vec![0u8; if comm.rank() == 2 { 7 } else { 6 }];
        comm.all_gather_into(&[1u8, 2], &mut recv)
    });
    for e in errs {
        assert!(
            matches!(
                e,
                CommError::BadLength {
                    op: "all_gather",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn mismatched_broadcast_lengths_are_bad_length_on_every_rank() {
    let errs = errors_of(|comm| {
        let mut x = vec![0f64; comm.rank() + 1];
        comm.broadcast(&mut x, 0)
    });
    for e in errs {
        assert!(
            matches!(
                e,
                CommError::BadLength {
                    op: "broadcast",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn reduce_scatter_count_errors_are_named_on_every_rank() {
    // Counts that differ across ranks.
    let errs = errors_of(|comm| {
        let counts = if comm.rank() == 0 {
            [1, 1, 1]
        } else {
            [2, 0, 1]
        };
        let mut recv = vec![0f32; counts[comm.rank()]];
        comm.reduce_scatter(&[0.0f32; 3], &mut recv, &counts)
    });
    for e in errs {
        assert!(
            matches!(
                e,
                CommError::Mismatch {
                    op: "reduce_scatter",
                    ..
                }
            ),
            "{e:?}"
        );
    }
    // The same counts everywhere, but a send buffer that does not match them.
    let errs = errors_of(|comm| {
        let mut recv = [0f32; 1];
        comm.reduce_scatter(
            &vec![0.0f32; 3 + usize::from(comm.rank() == 1)],
            &mut recv,
            &[1, 1, 1],
        )
    });
    for e in errs {
        assert!(
            matches!(
                e,
                CommError::BadLength {
                    op: "reduce_scatter",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn mismatched_element_types_are_dtype_mismatch_on_every_rank() {
    let errs = errors_of(|comm| {
        if comm.rank() == 1 {
            comm.all_reduce(&mut [1.0f64; 4], ReduceOp::Sum)
        } else {
            comm.all_reduce(&mut [1.0f32; 4], ReduceOp::Sum)
        }
    });
    for (r, e) in errs.iter().enumerate() {
        match *e {
            CommError::DTypeMismatch {
                rank,
                op: "all_reduce",
                mine,
                theirs,
                peer,
            } => {
                assert_eq!(rank, r);
                if r == 1 {
                    assert_eq!((mine, theirs, peer), (DType::F64, DType::F32, 0));
                } else {
                    assert_eq!((mine, theirs, peer), (DType::F32, DType::F64, 1));
                }
            }
            ref other => panic!("rank {r}: {other:?}"),
        }
    }
}

#[test]
fn different_collectives_are_a_mismatch_on_every_rank() {
    let errs = errors_of(|comm| {
        let mut x = [0.0f32; 4];
        if comm.rank() == 1 {
            comm.broadcast(&mut x, 0)
        } else {
            comm.all_reduce(&mut x, ReduceOp::Sum)
        }
    });
    for (r, e) in errs.iter().enumerate() {
        match e {
            CommError::Mismatch { rank, op, detail } => {
                assert_eq!(*rank, r);
                assert_eq!(*op, if r == 1 { "broadcast" } else { "all_reduce" });
                assert!(
                    detail.contains("broadcast") && detail.contains("all_reduce"),
                    "{detail}"
                );
            }
            other => panic!("rank {r}: {other:?}"),
        }
    }
    // Same collective, different reduction.
    let errs = errors_of(|comm| {
        let op = if comm.rank() == 2 {
            ReduceOp::Max
        } else {
            ReduceOp::Sum
        };
        comm.all_reduce(&mut [0u8; 2], op)
    });
    for e in errs {
        assert!(
            matches!(
                e,
                CommError::Mismatch {
                    op: "all_reduce",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}

#[test]
fn a_broadcast_root_out_of_range_is_bad_rank_on_every_rank() {
    let errs = errors_of(|comm| comm.broadcast(&mut [0i64; 3], 3));
    for (r, e) in errs.iter().enumerate() {
        assert_eq!(
            *e,
            CommError::BadRank {
                rank: r,
                op: "broadcast",
                bad: 3,
                world: 3
            }
        );
    }
}

#[test]
fn a_timeout_is_reported_then_the_group_is_broken() {
    let results = guarded(|| {
        let (tx, rx) = mpsc::channel::<()>();
        let rx = std::sync::Mutex::new(rx);
        let options = ThreadGroupOptions {
            timeout: Some(Duration::from_millis(200)),
        };
        run_ranks_with(2, options, |comm| {
            if comm.rank() == 0 {
                let first = comm.barrier().unwrap_err();
                let second = comm.barrier().unwrap_err();
                tx.send(()).unwrap(); // rank 1 may call now
                Ok::<_, CommError>(vec![first, second])
            } else {
                rx.lock().unwrap().recv().unwrap(); // busy elsewhere until rank 0 gave up
                Ok(vec![comm.barrier().unwrap_err()])
            }
        })
    });
    let r0 = results[0].as_ref().unwrap();
    match &r0[0] {
        CommError::Timeout {
            rank: 0,
            op: "barrier",
            waited_ms,
            missing,
        } => {
            assert_eq!(missing, &vec![1]);
            assert!(*waited_ms >= 200, "{waited_ms}");
        }
        other => panic!("rank 0 first call: expected Timeout, got {other:?}"),
    }
    assert!(
        matches!(&r0[1], CommError::Broken { rank: 0, .. }),
        "{:?}",
        r0[1]
    );
    let r1 = results[1].as_ref().unwrap();
    assert!(
        matches!(&r1[0], CommError::Broken { rank: 1, cause, .. } if cause.contains("timed out")),
        "{:?}",
        r1[0]
    );
}

#[test]
fn ranks_waiting_when_the_group_breaks_get_broken() {
    let results = guarded(|| {
        let options = ThreadGroupOptions {
            timeout: Some(Duration::from_millis(300)),
        };
        let (tx, rx) = mpsc::channel::<()>();
        let rx = std::sync::Mutex::new(rx);
        run_ranks_with(3, options, |comm| {
            let res = match comm.rank() {
                // Ranks 0 and 1 wait for rank 2, which only arrives after they gave up.
                2 => {
                    rx.lock().unwrap().recv().unwrap();
                    rx.lock().unwrap().recv().unwrap();
                    comm.barrier()
                }
                _ => {
                    let r = comm.barrier();
                    tx.send(()).unwrap();
                    r
                }
            };
            Ok::<_, CommError>(res.unwrap_err())
        })
    });
    let errs: Vec<CommError> = results.into_iter().map(Result::unwrap).collect();
    // Exactly one of ranks 0 and 1 timed out; the other was woken by the broken group.
    let timeouts = errs[..2]
        .iter()
        .filter(|e| matches!(e, CommError::Timeout { missing, .. } if missing == &vec![2]))
        .count();
    let broken = errs[..2]
        .iter()
        .filter(|e| matches!(e, CommError::Broken { .. }))
        .count();
    assert_eq!((timeouts, broken), (1, 1), "{errs:?}");
    assert!(
        matches!(errs[2], CommError::Broken { rank: 2, .. }),
        "{:?}",
        errs[2]
    );
}

#[test]
fn overlapping_calls_on_one_rank_are_refused() {
    guarded(|| {
        let mut comms = ThreadGroup::new(2);
        let rank1 = comms.pop().unwrap();
        let rank0 = comms.pop().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::scope(|s| {
            // Two threads call a collective on rank 0's communicator at once. Rank 1 joins only
            // after one of them was refused, so the other is still inside its call by then.
            let calls: Vec<_> = (0..2)
                .map(|_| {
                    let (rank0, tx) = (&rank0, tx.clone());
                    s.spawn(move || {
                        let res = rank0.barrier();
                        if res.is_err() {
                            tx.send(()).unwrap();
                        }
                        res
                    })
                })
                .collect();
            rx.recv().unwrap();
            rank1.barrier().unwrap();
            let results: Vec<_> = calls.into_iter().map(|h| h.join().unwrap()).collect();
            let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
            assert_eq!(
                results.iter().filter(|r| r.is_ok()).count(),
                1,
                "{results:?}"
            );
            assert!(
                matches!(
                    refused[..],
                    [CommError::Mismatch {
                        rank: 0,
                        op: "barrier",
                        ..
                    }]
                ),
                "{results:?}"
            );
        });
    });
}

/// A caller's own error type: `run_ranks` is generic over it (it only needs `From<CommError>`).
#[derive(Debug, PartialEq)]
enum AppError {
    Comm(CommError),
    Invalid(&'static str),
}

impl From<CommError> for AppError {
    fn from(e: CommError) -> Self {
        AppError::Comm(e)
    }
}

#[test]
fn a_rank_error_is_returned_and_the_others_see_it_leave() {
    let results = guarded(|| {
        run_ranks(2, |comm| {
            if comm.rank() == 0 {
                return Err(AppError::Invalid("bad input on rank 0"));
            }
            comm.barrier()?;
            Ok(())
        })
    });
    assert_eq!(results[0], Err(AppError::Invalid("bad input on rank 0")));
    assert!(
        matches!(
            &results[1],
            Err(AppError::Comm(CommError::PeerLeft {
                rank: 1,
                peer: 0,
                ..
            }))
        ),
        "{:?}",
        results[1]
    );
}
