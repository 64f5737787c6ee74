//! A small TCP rendezvous: rank 0 (the master) listens on `MASTER_ADDR:MASTER_PORT` (only on
//! that address), every other rank connects, announces (protocol version, rank, world size),
//! and the master checks the world layout before anyone proceeds. Afterwards rank 0 can
//! publish an opaque bootstrap blob (the NCCL unique id) that every rank receives.
//!
//! ```no_run
//! use plsc_comm::env::RankEnv;
//! use plsc_comm::rendezvous::{Rendezvous, RendezvousConfig};
//! # fn main() -> Result<(), plsc_comm::CommError> {
//! let env = RankEnv::from_env()?.expect("started by a launcher");
//! let mut rdv = Rendezvous::connect(&RendezvousConfig::from_env(&env)?)?;
//! let id = [7u8; 128]; // rank 0's NCCL unique id
//! let blob = rdv.broadcast_bootstrap((rdv.rank() == 0).then_some(&id[..]))?;
//! assert_eq!(blob.len(), 128);
//! # Ok(()) }
//! ```
//!
//! Every wait is bounded by [`RendezvousConfig::timeout`]; failures are named errors on every
//! rank that can be told: [`CommError::WrongWorldSize`], [`CommError::DuplicateRank`],
//! [`CommError::RankOutOfRange`], [`CommError::VersionMismatch`],
//! [`CommError::MasterUnreachable`], [`CommError::Timeout`] (the master waited for ranks that
//! never came) and [`CommError::Aborted`].

pub(crate) mod wire;

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use wire::{Hello, Verdict};

use crate::env::RankEnv;
use crate::error::CommError;

/// The rendezvous protocol version; processes of different versions refuse each other.
pub const PROTOCOL_VERSION: u32 = 1;

const OP: &str = "rendezvous";

/// Where and how to meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RendezvousConfig {
    /// This process's rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// The master's address (rank 0 listens only there).
    pub master_addr: String,
    /// The master's port (0 lets the master pick one, see [`RendezvousMaster::local_addr`]).
    pub master_port: u16,
    /// Bounds every wait: connecting, the master waiting for all ranks, the blob.
    pub timeout: Duration,
    /// The protocol version announced (tests change it to provoke a mismatch).
    #[doc(hidden)]
    pub protocol_version: u32,
}

impl RendezvousConfig {
    /// A config with [`PROTOCOL_VERSION`].
    pub fn new(
        rank: usize,
        world_size: usize,
        master_addr: impl Into<String>,
        master_port: u16,
        timeout: Duration,
    ) -> Self {
        Self {
            rank,
            world_size,
            master_addr: master_addr.into(),
            master_port,
            timeout,
            protocol_version: PROTOCOL_VERSION,
        }
    }

    /// From the launcher's environment; an error names `MASTER_ADDR` or `MASTER_PORT` if unset.
    pub fn from_env(env: &RankEnv) -> Result<Self, CommError> {
        let (addr, port) = env.master()?;
        Ok(Self::new(
            env.rank,
            env.world_size,
            addr,
            port,
            env.rendezvous_timeout,
        ))
    }

    fn addrs(&self) -> Result<Vec<SocketAddr>, CommError> {
        let addrs: Vec<SocketAddr> = (self.master_addr.as_str(), self.master_port)
            .to_socket_addrs()
            .map_err(|e| CommError::MasterUnreachable {
                rank: self.rank,
                addr: self.master_display(),
                waited_ms: 0,
                last_error: format!("cannot resolve the address: {e}"),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(CommError::MasterUnreachable {
                rank: self.rank,
                addr: self.master_display(),
                waited_ms: 0,
                last_error: "the address resolves to nothing".to_string(),
            });
        }
        Ok(addrs)
    }

    fn master_display(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }

    fn check(&self) -> Result<(), CommError> {
        if self.world_size == 0 || self.rank >= self.world_size {
            return Err(CommError::BadRank {
                rank: self.rank,
                op: OP,
                bad: self.rank,
                world: self.world_size,
            });
        }
        Ok(())
    }
}

/// The open connections after a successful rendezvous.
#[derive(Debug)]
pub(crate) enum Links {
    /// Rank 0: one stream per other rank, indexed by `rank - 1`.
    Master(Vec<TcpStream>),
    /// Other ranks: the stream to rank 0.
    Worker(TcpStream),
}

/// A world that has met: every rank is connected to rank 0, the layout is checked.
#[derive(Debug)]
pub struct Rendezvous {
    rank: usize,
    world: usize,
    timeout: Duration,
    links: Links,
}

/// Rank 0's listening socket, before the others have joined (split from
/// [`Rendezvous::connect`] so that a master on port 0 can tell its port first).
#[derive(Debug)]
pub struct RendezvousMaster {
    cfg: RendezvousConfig,
    listener: TcpListener,
}

impl RendezvousMaster {
    /// Listens on the master address (rank 0 only).
    pub fn bind(cfg: &RendezvousConfig) -> Result<Self, CommError> {
        cfg.check()?;
        if cfg.rank != 0 {
            return Err(CommError::Backend {
                rank: cfg.rank,
                op: OP,
                detail: "only rank 0 listens for the rendezvous".to_string(),
            });
        }
        let mut last = None;
        for addr in cfg.addrs()? {
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    return Ok(Self {
                        cfg: cfg.clone(),
                        listener,
                    });
                }
                Err(e) => last = Some(format!("{addr}: {e}")),
            }
        }
        Err(CommError::Backend {
            rank: 0,
            op: OP,
            detail: format!(
                "cannot listen on {} ({})",
                cfg.master_display(),
                last.unwrap_or_default()
            ),
        })
    }

    /// The address actually listened on (its port when the config asked for port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, CommError> {
        self.listener.local_addr().map_err(|e| CommError::Backend {
            rank: 0,
            op: OP,
            detail: format!("local address of the listener: {e}"),
        })
    }

    /// Waits (at most the timeout) for every other rank, checks the layout and welcomes them.
    /// On a layout error every rank that joined is told, and rank 0 returns the named error.
    pub fn accept(self) -> Result<Rendezvous, CommError> {
        let cfg = &self.cfg;
        let start = Instant::now();
        let deadline = start + cfg.timeout;
        let world = cfg.world_size;
        let mut peers: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        let io_err = |what: &str, e: io::Error| CommError::Backend {
            rank: 0,
            op: OP,
            detail: format!("{what}: {e}"),
        };
        self.listener
            .set_nonblocking(true)
            .map_err(|e| io_err("listener", e))?;
        while peers.iter().any(Option::is_none) {
            let now = Instant::now();
            if now >= deadline {
                let missing: Vec<usize> = peers
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.is_none())
                    .map(|(i, _)| i + 1)
                    .collect();
                let err = CommError::Timeout {
                    rank: 0,
                    op: OP,
                    waited_ms: start.elapsed().as_millis(),
                    missing: missing.clone(),
                };
                abort_all(
                    &mut peers,
                    cfg.protocol_version,
                    &Verdict::Aborted {
                        cause: format!("ranks {missing:?} did not join within {:?}", cfg.timeout),
                    },
                );
                return Err(err);
            }
            let (mut stream, from) = match self.listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("accept", e)),
            };
            let hello = stream
                .set_nonblocking(false)
                .and_then(|()| stream.set_nodelay(true))
                .and_then(|()| stream.set_read_timeout(Some(remaining(deadline))))
                .and_then(|()| stream.set_write_timeout(Some(cfg.timeout)))
                .and_then(|()| read_hello(&mut stream));
            let hello = match hello {
                Ok(Some(h)) => h,
                Ok(None) | Err(_) => {
                    // Not one of ours (a port scan, a health check) or it hung up: ignore it.
                    tracing::warn!(
                        "rendezvous: ignoring a connection from {from} that sent no hello"
                    );
                    continue;
                }
            };
            let verdict = if hello.version != cfg.protocol_version {
                Some(Verdict::VersionMismatch {
                    peer: hello.rank,
                    theirs: hello.version,
                })
            } else if hello.world != world as u64 {
                Some(Verdict::WrongWorldSize {
                    peer: hello.rank,
                    theirs: hello.world,
                    expected: world as u64,
                })
            } else if hello.rank == 0 || hello.rank >= world as u64 {
                if hello.rank == 0 {
                    Some(Verdict::DuplicateRank {
                        peer: 0,
                        world: world as u64,
                    })
                } else {
                    Some(Verdict::RankOutOfRange {
                        peer: hello.rank,
                        world: world as u64,
                    })
                }
            } else if peers[hello.rank as usize - 1].is_some() {
                Some(Verdict::DuplicateRank {
                    peer: hello.rank,
                    world: world as u64,
                })
            } else {
                None
            };
            match verdict {
                None => peers[hello.rank as usize - 1] = Some(stream),
                Some(v) => {
                    let _ = wire::write_verdict(&mut stream, cfg.protocol_version, &v);
                    abort_all(&mut peers, cfg.protocol_version, &v);
                    return Err(verdict_error(0, cfg.protocol_version, v));
                }
            }
        }
        let mut streams: Vec<TcpStream> = peers.into_iter().flatten().collect();
        for (i, s) in streams.iter_mut().enumerate() {
            wire::write_verdict(s, cfg.protocol_version, &Verdict::Welcome)
                .map_err(|e| io_err(&format!("welcoming rank {}", i + 1), e))?;
        }
        tracing::debug!(world, "rendezvous: every rank joined");
        Ok(Rendezvous {
            rank: 0,
            world,
            timeout: cfg.timeout,
            links: Links::Master(streams),
        })
    }
}

fn remaining(deadline: Instant) -> Duration {
    deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn read_hello(stream: &mut TcpStream) -> io::Result<Option<Hello>> {
    match wire::read_header(stream)? {
        None => Ok(None),
        Some(version) => wire::read_hello_body(stream, version).map(Some),
    }
}

/// Tells every rank that joined that the rendezvous failed.
fn abort_all(peers: &mut [Option<TcpStream>], version: u32, v: &Verdict) {
    for s in peers.iter_mut().flatten() {
        let _ = wire::write_verdict(s, version, v);
    }
}

/// The named error rank `rank` returns for a verdict.
fn verdict_error(rank: usize, ours: u32, v: Verdict) -> CommError {
    let u = |x: u64| usize::try_from(x).unwrap_or(usize::MAX);
    match v {
        Verdict::Welcome => CommError::Backend {
            rank,
            op: OP,
            detail: "unexpected welcome".to_string(),
        },
        Verdict::VersionMismatch { peer, theirs } => CommError::VersionMismatch {
            rank,
            peer: u(peer),
            ours,
            theirs,
        },
        Verdict::WrongWorldSize {
            peer,
            theirs,
            expected,
        } => CommError::WrongWorldSize {
            rank,
            peer: u(peer),
            theirs: u(theirs),
            expected: u(expected),
        },
        Verdict::DuplicateRank { peer, world } => CommError::DuplicateRank {
            rank,
            peer: u(peer),
            world: u(world),
        },
        Verdict::RankOutOfRange { peer, world } => CommError::RankOutOfRange {
            rank,
            peer: u(peer),
            world: u(world),
        },
        Verdict::Aborted { cause } => CommError::Aborted {
            rank,
            op: OP,
            cause,
        },
    }
}

impl Rendezvous {
    /// Meets the world: rank 0 listens and waits for everyone, the others connect (retrying
    /// until the timeout while the master is not up yet) and wait for the master's welcome.
    pub fn connect(cfg: &RendezvousConfig) -> Result<Self, CommError> {
        cfg.check()?;
        if cfg.rank == 0 {
            return RendezvousMaster::bind(cfg)?.accept();
        }
        let start = Instant::now();
        let deadline = start + cfg.timeout;
        let addrs = cfg.addrs()?;
        let mut delay = Duration::from_millis(20);
        let stream = loop {
            let mut last = String::from("the timeout passed before the first attempt");
            let mut connected = None;
            for addr in &addrs {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match TcpStream::connect_timeout(addr, left) {
                    Ok(s) => {
                        connected = Some(s);
                        break;
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            if let Some(s) = connected {
                break s;
            }
            if Instant::now() + delay >= deadline {
                return Err(CommError::MasterUnreachable {
                    rank: cfg.rank,
                    addr: cfg.master_display(),
                    waited_ms: start.elapsed().as_millis(),
                    last_error: last,
                });
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(500));
        };
        Self::join(cfg, start, deadline, stream)
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// Rank 0 passes `Some(blob)`, every other rank `None`; every rank returns the blob (rank 0
    /// a copy of its own). Used to distribute the NCCL unique id (128 bytes), but any bytes up
    /// to 1 GiB work; may be called several times, in the same order on every rank.
    pub fn broadcast_bootstrap(&mut self, blob: Option<&[u8]>) -> Result<Vec<u8>, CommError> {
        const BOP: &str = "broadcast_bootstrap";
        let rank = self.rank;
        match (&mut self.links, blob) {
            (Links::Master(streams), Some(blob)) => {
                if blob.len() as u64 > wire::MAX_FRAME {
                    return Err(CommError::BadLength {
                        rank,
                        op: BOP,
                        detail: format!("blob of {} bytes exceeds 1 GiB", blob.len()),
                    });
                }
                for (i, s) in streams.iter_mut().enumerate() {
                    wire::write_bytes(s, blob).map_err(|e| CommError::PeerLeft {
                        rank,
                        op: BOP,
                        peer: i + 1,
                        reason: e.to_string(),
                    })?;
                }
                Ok(blob.to_vec())
            }
            (Links::Worker(s), None) => s
                .set_read_timeout(Some(self.timeout))
                .and_then(|()| wire::read_bytes(s))
                .map_err(|e| io_to_comm(rank, BOP, 0, e, self.timeout)),
            (Links::Master(_), None) => Err(CommError::Mismatch {
                rank,
                op: BOP,
                detail: "rank 0 must pass the blob (Some)".to_string(),
            }),
            (Links::Worker(_), Some(_)) => Err(CommError::Mismatch {
                rank,
                op: BOP,
                detail: "only rank 0 passes a blob; other ranks pass None".to_string(),
            }),
        }
    }

    /// The open connections and settings, for the TCP communicator.
    pub(crate) fn into_parts(self) -> (usize, usize, Links) {
        (self.rank, self.world, self.links)
    }

    fn join(
        cfg: &RendezvousConfig,
        start: Instant,
        deadline: Instant,
        mut stream: TcpStream,
    ) -> Result<Self, CommError> {
        let rank = cfg.rank;
        let setup = stream
            .set_nodelay(true)
            .and_then(|()| stream.set_write_timeout(Some(cfg.timeout)))
            .and_then(|()| {
                wire::write_hello(
                    &mut stream,
                    Hello {
                        version: cfg.protocol_version,
                        rank: rank as u64,
                        world: cfg.world_size as u64,
                    },
                )
            });
        if let Err(e) = setup {
            return Err(CommError::MasterUnreachable {
                rank,
                addr: cfg.master_display(),
                waited_ms: start.elapsed().as_millis(),
                last_error: format!("sending the hello: {e}"),
            });
        }
        // The master answers once the whole world has joined (or at its own timeout, which it
        // reports); a little grace beyond ours lets its answer arrive first.
        let wait = remaining(deadline) + Duration::from_secs(2);
        let verdict = stream
            .set_read_timeout(Some(wait))
            .and_then(|()| wire::read_header(&mut stream))
            .map_err(|e| io_to_comm(rank, OP, 0, e, cfg.timeout))?;
        let Some(version) = verdict else {
            return Err(CommError::Backend {
                rank,
                op: OP,
                detail: format!("{} is not a plsc-rs rendezvous", cfg.master_display()),
            });
        };
        if version != cfg.protocol_version {
            return Err(CommError::VersionMismatch {
                rank,
                peer: 0,
                ours: cfg.protocol_version,
                theirs: version,
            });
        }
        match wire::read_verdict_body(&mut stream)
            .map_err(|e| io_to_comm(rank, OP, 0, e, cfg.timeout))?
        {
            Verdict::Welcome => Ok(Self {
                rank,
                world: cfg.world_size,
                timeout: cfg.timeout,
                links: Links::Worker(stream),
            }),
            v => Err(verdict_error(rank, cfg.protocol_version, v)),
        }
    }
}

/// An I/O error while talking to `peer` as a named error: a timeout, or the peer gone.
pub(crate) fn io_to_comm(
    rank: usize,
    op: &'static str,
    peer: usize,
    e: io::Error,
    timeout: Duration,
) -> CommError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => CommError::Timeout {
            rank,
            op,
            waited_ms: timeout.as_millis(),
            missing: vec![peer],
        },
        _ => CommError::PeerLeft {
            rank,
            op,
            peer,
            reason: e.to_string(),
        },
    }
}
