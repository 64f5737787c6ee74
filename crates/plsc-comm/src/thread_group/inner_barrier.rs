//! The barrier between the phases of one collective, once every rank is inside it.
//!
//! Unlike the entry rendezvous ([`super::rendezvous`]) this barrier cannot fail and has no
//! timeout: it is only reached after every rank has passed the entry rendezvous of the same
//! collective, and the code between the entry and the last inner barrier cannot panic (a panic
//! there aborts the process, see [`super::AbortOnUnwind`]). So every rank is guaranteed to
//! arrive, and waiting unconditionally is what keeps the buffers that other ranks read through
//! raw pointers alive until they are done.
//!
//! Waiters spin briefly (small collectives finish in microseconds), then sleep on a condvar.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};

/// How many times a waiter polls before it yields and then sleeps (when every rank can have a
/// core of its own; otherwise spinning only delays the ranks that still have to arrive). Kept
/// short: on a busy machine the peer may share this core, and yielding lets it run.
pub(crate) const SPINS: u32 = 64;
/// How many times a waiter yields its time slice before it sleeps.
pub(crate) const YIELDS: u32 = 64;

/// A reusable generation barrier for a fixed number of threads.
#[derive(Debug)]
pub(crate) struct InnerBarrier {
    world: usize,
    spins: u32,
    arrived: AtomicUsize,
    generation: AtomicU64,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
}

impl InnerBarrier {
    /// A barrier for `world` threads that poll `spins` times before yielding.
    pub(crate) fn new(world: usize, spins: u32) -> Self {
        Self {
            world,
            spins,
            arrived: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Returns once all `world` threads have called `wait` for this generation.
    ///
    /// Memory written by any thread before its `wait` is visible to every thread after `wait`
    /// (the counter's release/acquire pairs and the generation's release/acquire pairs order it).
    pub(crate) fn wait(&self) {
        // The generation must be read before arriving: the last arriver bumps it only after
        // everyone (including us) has arrived, so this value is the one of our round.
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.world {
            // Reset before publishing the new generation, so a thread that sees the new
            // generation and enters the next round counts from zero.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation
                .store(generation.wrapping_add(1), Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
                self.cv.notify_all();
            }
            return;
        }
        let passed = || self.generation.load(Ordering::Acquire) != generation;
        for _ in 0..self.spins {
            if passed() {
                return;
            }
            std::hint::spin_loop();
        }
        for _ in 0..YIELDS {
            if passed() {
                return;
            }
            std::thread::yield_now();
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // Announce the sleeper before the final check (SeqCst on both sides): either the
        // waker sees `sleepers > 0` and notifies under the lock we hold until `wait` releases
        // it, or we see the new generation here and do not sleep.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == generation {
            guard = self.cv.wait(guard).unwrap_or_else(PoisonError::into_inner);
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}
