//! The entry rendezvous of every collective: the only place where a collective can fail.
//!
//! Each rank posts its [`Desc`] and waits. The last rank to arrive validates all descriptors
//! once ([`validate`]) and publishes the outcome for the round: either the descriptors (every
//! rank then moves data) or one [`Failure`] that every rank turns into the same error.
//!
//! While waiting, a rank gives up when a peer leaves (its communicator is dropped: normal end,
//! error return or panic unwind), when the group is broken, or when the optional timeout passes
//! (which breaks the group). Giving up is decided under the lock, and a round whose generation
//! has advanced is never given up, so either all ranks of a round proceed or none does.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::inner_barrier::{InnerBarrier, SPINS, YIELDS};
use crate::call::{Desc, Failure, validate};
use crate::error::CommError;

/// The descriptors of a round that passed validation, indexed by rank.
#[derive(Debug)]
pub(crate) struct Round {
    pub descs: Vec<Desc>,
}

/// State shared by all ranks of one thread group.
#[derive(Debug)]
pub(crate) struct Shared {
    pub world: usize,
    timeout: Option<Duration>,
    /// How many times a waiter polls the generation before it sleeps on the condvar.
    spins: u32,
    state: Mutex<State>,
    cv: Condvar,
    /// Mirrors `State::generation` so waiters can poll without the lock.
    generation: AtomicU64,
    /// Set when a rank leaves or the group breaks, so pollers take the lock and look.
    trouble: AtomicBool,
    /// The barrier between the phases of a collective (see [`InnerBarrier`]).
    pub inner: InnerBarrier,
}

#[derive(Debug)]
struct State {
    /// Number of completed rounds.
    generation: u64,
    /// What each rank posted for the round in progress.
    posted: Vec<Option<Desc>>,
    arrived: usize,
    /// Outcome of the last completed round; a rank reads it after seeing the generation move.
    /// It cannot be overwritten before every rank has read it, because the next round needs
    /// every rank to arrive.
    outcome: Option<Result<Arc<Round>, Failure>>,
    /// Per rank, once its communicator was dropped: the order in which it left (0 for the
    /// first) and why. Errors name the first rank that left: the cause, not a consequence.
    left: Vec<Option<(usize, &'static str)>>,
    /// How many ranks have left.
    left_count: usize,
    /// Why the group is unusable (a timeout).
    broken: Option<String>,
}

impl Shared {
    pub(crate) fn new(world: usize, timeout: Option<Duration>) -> Self {
        // Poll only when every rank can have a core of its own.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let spins = if world <= cores { SPINS } else { 0 };
        Self {
            world,
            timeout,
            spins,
            state: Mutex::new(State {
                generation: 0,
                posted: vec![None; world],
                arrived: 0,
                outcome: None,
                left: vec![None; world],
                left_count: 0,
                broken: None,
            }),
            cv: Condvar::new(),
            generation: AtomicU64::new(0),
            trouble: AtomicBool::new(false),
            inner: InnerBarrier::new(world, spins),
        }
    }

    /// No code panics while holding the lock, but a poisoned lock must not turn into a panic.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks `rank` as gone and wakes every waiter. Called when its communicator is dropped.
    pub(crate) fn leave(&self, rank: usize, reason: &'static str) {
        let mut st = self.lock();
        st.left[rank] = Some((st.left_count, reason));
        st.left_count += 1;
        self.trouble.store(true, Ordering::SeqCst);
        self.cv.notify_all();
    }

    /// Why `rank` cannot take part in a new round, if it cannot.
    fn refusal(&self, st: &State, rank: usize, op: &'static str) -> Option<CommError> {
        if let Some(cause) = &st.broken {
            return Some(CommError::Broken {
                rank,
                op,
                cause: cause.clone(),
            });
        }
        st.left
            .iter()
            .enumerate()
            .filter(|&(peer, _)| peer != rank)
            .filter_map(|(peer, left)| left.map(|(order, reason)| (order, peer, reason)))
            .min()
            .map(|(_, peer, reason)| CommError::PeerLeft {
                rank,
                op,
                peer,
                reason: reason.to_string(),
            })
    }

    /// Posts `desc` for `rank` and waits for every rank. Returns the round's descriptors when
    /// all calls fit together; otherwise every rank of the round gets the same kind of error.
    pub(crate) fn rendezvous(&self, rank: usize, desc: Desc) -> Result<Arc<Round>, CommError> {
        let op = desc.op.name();
        let world = self.world;
        let start = Instant::now();
        let mut st = self.lock();
        if let Some(err) = self.refusal(&st, rank, op) {
            return Err(err);
        }
        let generation = st.generation;
        st.posted[rank] = Some(desc);
        st.arrived += 1;
        if st.arrived == world {
            // Last to arrive: every slot is filled (each rank posts once per round and cannot
            // leave while blocked in this call).
            let descs: Vec<Desc> = st.posted.iter_mut().filter_map(Option::take).collect();
            let outcome = if descs.len() == world {
                validate(&descs).map(|()| Arc::new(Round { descs }))
            } else {
                Err(Failure::Mismatch(
                    "internal: a rank's call was lost".to_string(),
                ))
            };
            st.outcome = Some(outcome.clone());
            st.arrived = 0;
            st.generation += 1;
            self.generation.store(st.generation, Ordering::Release);
            self.cv.notify_all();
            return outcome.map_err(|f| f.to_error(rank, world, op));
        }
        drop(st);

        for _ in 0..self.spins {
            if self.generation.load(Ordering::Acquire) != generation
                || self.trouble.load(Ordering::Acquire)
            {
                break;
            }
            std::hint::spin_loop();
        }
        for _ in 0..YIELDS {
            if self.generation.load(Ordering::Acquire) != generation
                || self.trouble.load(Ordering::Acquire)
            {
                break;
            }
            std::thread::yield_now();
        }

        let deadline = self.timeout.map(|t| start + t);
        let mut st = self.lock();
        loop {
            if st.generation != generation {
                return match &st.outcome {
                    Some(outcome) => outcome.clone().map_err(|f| f.to_error(rank, world, op)),
                    None => Err(CommError::Broken {
                        rank,
                        op,
                        cause: "internal: no outcome".into(),
                    }),
                };
            }
            if let Some(err) = self.refusal(&st, rank, op) {
                return Err(err);
            }
            st = match deadline {
                None => self.cv.wait(st).unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        let waited_ms = now.duration_since(start).as_millis();
                        let missing: Vec<usize> =
                            (0..world).filter(|&r| st.posted[r].is_none()).collect();
                        tracing::warn!(rank, op, waited_ms, ?missing, "collective timed out");
                        st.broken = Some(format!(
                            "rank {rank} timed out in {op} after {waited_ms} ms waiting for ranks {missing:?}"
                        ));
                        self.trouble.store(true, Ordering::SeqCst);
                        self.cv.notify_all();
                        return Err(CommError::Timeout {
                            rank,
                            op,
                            waited_ms,
                            missing,
                        });
                    }
                    self.cv
                        .wait_timeout(st, deadline - now)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}
