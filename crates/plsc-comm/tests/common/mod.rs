//! Helpers shared by the integration tests: a hang guard. (Deterministic test data and the
//! serial reference are `plsc_comm::testing`'s.)

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// Far above how long any of these tests takes; a collective that hangs fails the test here.
pub const HANG_LIMIT: Duration = Duration::from_secs(30);

/// Runs `f` on its own thread and returns its value, failing the test if it takes longer than
/// [`HANG_LIMIT`] (a hang) or panics.
pub fn guarded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no result within {HANG_LIMIT:?}: a collective hung")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the guarded test body panicked"),
    }
}
