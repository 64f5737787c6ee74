//! The TCP communicator with ranks as threads on 127.0.0.1 (each with its own connections, as
//! separate processes would have): the collective suite bit for bit, the same bits as the
//! thread group, and the failure modes as named errors on every rank.

mod common;

use std::thread;
use std::time::Duration;

use common::guarded;
use plsc_comm::rendezvous::{Rendezvous, RendezvousConfig, RendezvousMaster};
use plsc_comm::tcp::TcpComm;
use plsc_comm::testing::collective_suite;
use plsc_comm::testing::{bits, data};
use plsc_comm::{CommError, CommExt, Communicator, ReduceOp, run_ranks};

/// A TCP group of `n` ranks, rank 0 first.
fn group(n: usize, timeout: Option<Duration>) -> Vec<TcpComm> {
    let cfg = move |r: usize, port: u16| {
        RendezvousConfig::new(r, n, "127.0.0.1", port, Duration::from_secs(10))
    };
    let master = RendezvousMaster::bind(&cfg(0, 0)).unwrap();
    let port = master.local_addr().unwrap().port();
    let workers: Vec<_> = (1..n)
        .map(|r| thread::spawn(move || Rendezvous::connect(&cfg(r, port)).unwrap()))
        .collect();
    let mut comms = vec![TcpComm::with_timeout(master.accept().unwrap(), timeout)];
    comms.extend(
        workers
            .into_iter()
            .map(|w| TcpComm::with_timeout(w.join().unwrap(), timeout)),
    );
    comms
}

/// Runs `f` on one thread per rank and returns the results in rank order.
fn on_ranks<T: Send + 'static>(
    comms: Vec<TcpComm>,
    f: impl Fn(TcpComm) -> T + Send + Sync + Clone + 'static,
) -> Vec<T> {
    let handles: Vec<_> = comms
        .into_iter()
        .map(|c| {
            let f = f.clone();
            thread::spawn(move || f(c))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn tcp_passes_the_collective_suite() {
    guarded(|| {
        for n in 1..=4 {
            let results = on_ranks(group(n, None), |c| collective_suite(&c));
            for (r, res) in results.into_iter().enumerate() {
                assert_eq!(
                    res.unwrap_or_else(|e| panic!("world {n} rank {r}: {e}")),
                    264
                );
            }
        }
    });
}

#[test]
fn tcp_sums_have_the_bits_of_the_thread_group() {
    guarded(|| {
        let step = |c: &dyn Communicator| -> Result<Vec<u64>, CommError> {
            let mut x = data::<f32>(c.rank(), 513, 77);
            c.all_reduce(&mut x, ReduceOp::Sum)?;
            let mut g = vec![0f32; 5];
            c.reduce_scatter(&data::<f32>(c.rank(), 15, 78), &mut g, &[5, 5, 5])?;
            let mut out = bits(&x);
            out.extend(bits(&g));
            Ok(out)
        };
        let tcp = on_ranks(group(3, None), move |c| step(&c).unwrap());
        let threads: Vec<Vec<u64>> = run_ranks(3, |c| step(&c))
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(tcp, threads);
    });
}

#[test]
fn mismatched_lengths_fail_on_every_rank_and_the_group_goes_on() {
    guarded(|| {
        let results = on_ranks(group(3, None), |c| {
            let mut x = vec![1.0f64; 3 + usize::from(c.rank() == 2)];
            let first = c.all_reduce(&mut x, ReduceOp::Sum);
            let mut y = [c.rank() as i64];
            c.all_reduce(&mut y, ReduceOp::Sum).unwrap();
            (first, y[0])
        });
        for (r, (first, after)) in results.into_iter().enumerate() {
            match first {
                Err(CommError::BadLength {
                    rank,
                    op: "all_reduce",
                    ..
                }) => assert_eq!(rank, r),
                other => panic!("rank {r}: expected BadLength, got {other:?}"),
            }
            assert_eq!(after, 3);
        }
    });
}

#[test]
fn a_rank_that_leaves_makes_the_others_fail_then_the_group_is_broken() {
    guarded(|| {
        let results = on_ranks(group(3, None), |c| {
            if c.rank() == 2 {
                drop(c); // closes its connection, like a process that exits
                return (None, None);
            }
            let mut x = [1u8];
            let first = c.all_reduce(&mut x, ReduceOp::Max).err();
            let second = c.barrier().err();
            (first, second)
        });
        for (r, (first, second)) in results.into_iter().take(2).enumerate() {
            match first {
                Some(CommError::PeerLeft { rank, peer: 2, .. }) => assert_eq!(rank, r),
                other => panic!("rank {r}: expected PeerLeft from rank 2, got {other:?}"),
            }
            assert!(
                matches!(second, Some(CommError::Broken { .. })),
                "rank {r}: {second:?}"
            );
        }
    });
}

#[test]
fn the_optional_timeout_names_the_missing_rank() {
    guarded(|| {
        let results = on_ranks(group(2, Some(Duration::from_millis(300))), |c| {
            if c.rank() == 1 {
                thread::sleep(Duration::from_secs(2));
                return None;
            }
            c.barrier().err()
        });
        match &results[0] {
            Some(CommError::Timeout {
                rank: 0, missing, ..
            }) => assert_eq!(missing, &vec![1]),
            other => panic!("expected Timeout, got {other:?}"),
        }
    });
}
