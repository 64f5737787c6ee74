//! The TCP rendezvous with ranks as threads on 127.0.0.1 (the master on an ephemeral port):
//! the bootstrap blob reaches every rank, and each failure is its named error on every rank
//! that can be told, within the timeout (every body runs under the 30 s hang guard).

mod common;

use std::net::TcpListener;
use std::thread;
use std::time::Duration;

use common::guarded;
use plsc_comm::CommError;
use plsc_comm::rendezvous::{PROTOCOL_VERSION, Rendezvous, RendezvousConfig, RendezvousMaster};

const TIMEOUT: Duration = Duration::from_secs(10);

fn cfg(rank: usize, world: usize, port: u16) -> RendezvousConfig {
    RendezvousConfig::new(rank, world, "127.0.0.1", port, TIMEOUT)
}

/// Rank 0 listening on an ephemeral port, and that port.
fn master(world: usize, timeout: Duration) -> (RendezvousMaster, u16) {
    let mut c = cfg(0, world, 0);
    c.timeout = timeout;
    let m = RendezvousMaster::bind(&c).unwrap();
    let port = m.local_addr().unwrap().port();
    (m, port)
}

#[test]
fn every_rank_receives_the_bootstrap_blob() {
    guarded(|| {
        let world = 4;
        let (m, port) = master(world, TIMEOUT);
        let id: Vec<u8> = (0..128u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
        let workers: Vec<_> = (1..world)
            .map(|r| {
                thread::spawn(move || {
                    let mut rdv = Rendezvous::connect(&cfg(r, world, port))?;
                    assert_eq!((rdv.rank(), rdv.world_size()), (r, world));
                    let first = rdv.broadcast_bootstrap(None)?;
                    let second = rdv.broadcast_bootstrap(None)?;
                    Ok::<_, CommError>((first, second))
                })
            })
            .collect();
        let mut rdv = m.accept().unwrap();
        assert_eq!(rdv.world_size(), world);
        assert_eq!(rdv.broadcast_bootstrap(Some(&id)).unwrap(), id);
        assert_eq!(rdv.broadcast_bootstrap(Some(b"")).unwrap(), b"");
        for w in workers {
            let (first, second) = w.join().unwrap().unwrap();
            assert_eq!(first, id);
            assert!(second.is_empty());
        }
    });
}

#[test]
fn world_of_one_needs_nobody() {
    guarded(|| {
        let mut rdv = Rendezvous::connect(&cfg(0, 1, 0)).unwrap();
        assert_eq!(
            rdv.broadcast_bootstrap(Some(&[1, 2, 3])).unwrap(),
            [1, 2, 3]
        );
    });
}

#[test]
fn only_rank_zero_passes_a_blob() {
    guarded(|| {
        let (m, port) = master(2, TIMEOUT);
        let w = thread::spawn(move || {
            let mut rdv = Rendezvous::connect(&cfg(1, 2, port)).unwrap();
            rdv.broadcast_bootstrap(Some(&[1]))
        });
        let mut rdv = m.accept().unwrap();
        assert!(matches!(
            rdv.broadcast_bootstrap(None),
            Err(CommError::Mismatch { rank: 0, .. })
        ));
        assert!(matches!(
            w.join().unwrap(),
            Err(CommError::Mismatch { rank: 1, .. })
        ));
    });
}

#[test]
fn wrong_world_size_is_named_on_both_sides() {
    guarded(|| {
        let (m, port) = master(2, TIMEOUT);
        let w = thread::spawn(move || Rendezvous::connect(&cfg(1, 3, port)).map(|_| ()));
        let expected = |rank| CommError::WrongWorldSize {
            rank,
            peer: 1,
            theirs: 3,
            expected: 2,
        };
        assert_eq!(m.accept().unwrap_err(), expected(0));
        assert_eq!(w.join().unwrap().unwrap_err(), expected(1));
    });
}

#[test]
fn duplicate_rank_is_named_on_every_side() {
    guarded(|| {
        let (m, port) = master(3, TIMEOUT);
        let ws: Vec<_> = (0..2)
            .map(|_| thread::spawn(move || Rendezvous::connect(&cfg(1, 3, port)).map(|_| ())))
            .collect();
        assert_eq!(
            m.accept().unwrap_err(),
            CommError::DuplicateRank {
                rank: 0,
                peer: 1,
                world: 3
            }
        );
        // Both processes that claimed rank 1 are told (the first was waiting for rank 2).
        for w in ws {
            assert_eq!(
                w.join().unwrap().unwrap_err(),
                CommError::DuplicateRank {
                    rank: 1,
                    peer: 1,
                    world: 3
                }
            );
        }
    });
}

#[test]
fn version_mismatch_is_named_on_both_sides() {
    guarded(|| {
        let (m, port) = master(2, TIMEOUT);
        let w = thread::spawn(move || {
            let mut c = cfg(1, 2, port);
            c.protocol_version = PROTOCOL_VERSION + 41;
            Rendezvous::connect(&c).map(|_| ())
        });
        assert_eq!(
            m.accept().unwrap_err(),
            CommError::VersionMismatch {
                rank: 0,
                peer: 1,
                ours: PROTOCOL_VERSION,
                theirs: PROTOCOL_VERSION + 41
            }
        );
        // The worker reads the master's version from the answer's header.
        assert_eq!(
            w.join().unwrap().unwrap_err(),
            CommError::VersionMismatch {
                rank: 1,
                peer: 0,
                ours: PROTOCOL_VERSION + 41,
                theirs: PROTOCOL_VERSION
            }
        );
    });
}

#[test]
fn unreachable_master_fails_within_the_timeout() {
    guarded(|| {
        // A port that was free a moment ago and has no listener now.
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = cfg(1, 2, port);
        c.timeout = Duration::from_millis(400);
        match Rendezvous::connect(&c) {
            Err(CommError::MasterUnreachable {
                rank: 1,
                addr,
                waited_ms,
                last_error,
            }) => {
                assert_eq!(addr, format!("127.0.0.1:{port}"));
                assert!(waited_ms >= 1, "it retried for a while: {waited_ms} ms");
                assert!(!last_error.is_empty());
            }
            other => panic!("expected MasterUnreachable, got {other:?}"),
        }
    });
}

#[test]
fn master_times_out_on_missing_ranks_and_tells_those_that_came() {
    guarded(|| {
        let (m, port) = master(3, Duration::from_millis(500));
        let w = thread::spawn(move || Rendezvous::connect(&cfg(2, 3, port)).map(|_| ()));
        match m.accept() {
            Err(CommError::Timeout {
                rank: 0,
                op: "rendezvous",
                missing,
                ..
            }) => assert_eq!(missing, vec![1]),
            other => panic!("expected Timeout, got {other:?}"),
        }
        match w.join().unwrap() {
            Err(CommError::Aborted { rank: 2, cause, .. }) => {
                assert!(cause.contains("[1]"), "{cause}")
            }
            other => panic!("expected Aborted, got {other:?}"),
        }
    });
}

#[test]
fn a_stranger_on_the_port_is_ignored() {
    guarded(|| {
        use std::io::Write;
        let (m, port) = master(2, TIMEOUT);
        let w = thread::spawn(move || {
            // Not our protocol: a health check writing garbage, then hanging up.
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
            drop(s);
            let mut rdv = Rendezvous::connect(&cfg(1, 2, port))?;
            rdv.broadcast_bootstrap(None)
        });
        let mut rdv = m.accept().unwrap();
        rdv.broadcast_bootstrap(Some(b"ok")).unwrap();
        assert_eq!(w.join().unwrap().unwrap(), b"ok");
    });
}

#[test]
fn bad_rank_in_the_config_is_refused_locally() {
    assert!(matches!(
        Rendezvous::connect(&cfg(2, 2, 1)),
        Err(CommError::BadRank {
            rank: 2,
            bad: 2,
            world: 2,
            ..
        })
    ));
}
