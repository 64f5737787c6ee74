//! Helpers shared by the integration tests: deterministic test data and a hang guard.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use plsc_comm::Element;

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

/// Element types with deterministic test values and an exact bit pattern for comparisons.
pub trait TestElem: Element + std::fmt::Debug {
    /// Value `i` of rank `rank`'s buffer number `salt`. Floats include some NaNs and values
    /// whose sums round differently in different orders; integers overflow when summed.
    fn make(rank: usize, i: usize, salt: usize) -> Self;
    fn bits(self) -> u64;
}

impl TestElem for f32 {
    fn make(rank: usize, i: usize, salt: usize) -> Self {
        let h = mix(rank, i, salt);
        if h.is_multiple_of(61) {
            f32::NAN
        } else {
            ((h % 2_000_001) as f32 - 1_000_000.0) * 0.001_37
        }
    }
    fn bits(self) -> u64 {
        u64::from(self.to_bits())
    }
}

impl TestElem for f64 {
    fn make(rank: usize, i: usize, salt: usize) -> Self {
        let h = mix(rank, i, salt);
        if h.is_multiple_of(61) {
            f64::NAN
        } else {
            ((h % 2_000_001) as f64 - 1_000_000.0) * 1.37e-3
        }
    }
    fn bits(self) -> u64 {
        self.to_bits()
    }
}

impl TestElem for i64 {
    fn make(rank: usize, i: usize, salt: usize) -> Self {
        mix(rank, i, salt) as i64
    }
    fn bits(self) -> u64 {
        self as u64
    }
}

impl TestElem for u8 {
    fn make(rank: usize, i: usize, salt: usize) -> Self {
        mix(rank, i, salt) as u8
    }
    fn bits(self) -> u64 {
        u64::from(self)
    }
}

/// Rank `rank`'s buffer number `salt` of `len` elements.
pub fn data<T: TestElem>(rank: usize, len: usize, salt: usize) -> Vec<T> {
    (0..len).map(|i| T::make(rank, i, salt)).collect()
}

pub fn bits<T: TestElem>(v: &[T]) -> Vec<u64> {
    v.iter().map(|&x| x.bits()).collect()
}
