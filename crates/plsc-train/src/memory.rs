//! Peak and steady anonymous resident memory of this process over a run.
//!
//! Linux keeps the peak of the whole resident set (`VmHWM` in `/proc/self/status`: file pages
//! and anonymous pages together) but no peak of `RssAnon`, the heap and other private memory
//! that cannot be dropped under pressure, which is what decides whether a run fits. An
//! [`RssAnonSampler`] reads `RssAnon` from `/proc/self/status` in a background thread (every
//! [`DEFAULT_PERIOD`]) and keeps its peak, and the samples taken inside a *steady window*
//! (the training steps) for their median. Memory-mapped checkpoint files count as file pages,
//! not here.
//!
//! On systems without `/proc/self/status` (not Linux) [`RssAnonSampler::start`] returns `None`
//! and nothing is measured.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler reads `/proc/self/status`.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(50);

/// The most samples of the steady window kept: beyond it every other one is dropped and the
/// sampling stride doubles, so a long run keeps an even spread over its whole window in
/// bounded memory.
const MAX_WINDOW_SAMPLES: usize = 1 << 16;

/// `RssAnon` of this process in bytes, from `/proc/self/status`; `None` where there is none.
pub fn rss_anon_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_rss_anon(&status)
}

/// The `RssAnon:` field of a `/proc/<pid>/status` text, in bytes (the kernel writes kB).
fn parse_rss_anon(status: &str) -> Option<u64> {
    plsc_core::capacity::kib_field(status, "RssAnon:").map(|kib| kib * 1024)
}

/// What a sampler saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RssAnonReport {
    /// The largest `RssAnon` sampled since [`RssAnonSampler::start`], in bytes.
    pub peak_bytes: u64,
    /// The median `RssAnon` of the steady window, in bytes (`None` if it holds no sample).
    pub steady_bytes: Option<u64>,
}

/// Bytes as GiB, for printing.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

#[derive(Default)]
struct Samples {
    peak: u64,
    in_window: bool,
    /// Samples of the steady window (every `stride`-th one taken).
    window: Vec<u64>,
    stride: usize,
    /// Samples taken in the window since the last kept one.
    skipped: usize,
}

impl Samples {
    fn record(&mut self, bytes: u64) {
        self.peak = self.peak.max(bytes);
        if !self.in_window {
            return;
        }
        self.skipped += 1;
        if self.skipped < self.stride.max(1) {
            return;
        }
        self.skipped = 0;
        self.window.push(bytes);
        if self.window.len() >= MAX_WINDOW_SAMPLES {
            let mut i = 0;
            self.window.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.stride = self.stride.max(1) * 2;
        }
    }

    fn median(&self) -> Option<u64> {
        crate::stats::median_by(&self.window, Ord::cmp)
    }
}

/// Samples this process's `RssAnon` in a background thread until dropped.
pub struct RssAnonSampler {
    samples: Arc<Mutex<Samples>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RssAnonSampler {
    /// Starts sampling every `period` (and once now); `None` where `RssAnon` cannot be read
    /// (not Linux) or the thread cannot be started.
    pub fn start(period: Duration) -> Option<Self> {
        let first = rss_anon_bytes()?;
        let samples = Arc::new(Mutex::new(Samples {
            peak: first,
            ..Samples::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (samples, stop) = (samples.clone(), stop.clone());
            std::thread::Builder::new()
                .name("rss-anon-sampler".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Some(b) = rss_anon_bytes() {
                            lock(&samples).record(b);
                        }
                        std::thread::park_timeout(period);
                    }
                })
                .ok()?
        };
        Some(Self {
            samples,
            stop,
            thread: Some(thread),
        })
    }

    /// Takes one sample now (besides the background ones).
    pub fn sample(&self) {
        if let Some(b) = rss_anon_bytes() {
            lock(&self.samples).record(b);
        }
    }

    /// Opens the steady window: samples from now on count for the median.
    pub fn begin_steady(&self) {
        self.sample();
        lock(&self.samples).in_window = true;
    }

    /// Closes the steady window.
    pub fn end_steady(&self) {
        self.sample();
        lock(&self.samples).in_window = false;
    }

    /// The peak so far (a sample is taken first) and the steady window's median.
    pub fn report(&self) -> RssAnonReport {
        self.sample();
        let s = lock(&self.samples);
        RssAnonReport {
            peak_bytes: s.peak,
            steady_bytes: s.median(),
        }
    }
}

impl Drop for RssAnonSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<Samples>) -> std::sync::MutexGuard<'_, Samples> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_status_field() {
        let status = "Name:\txtask\nVmHWM:\t 8000 kB\nRssAnon:\t  4404020 kB\nRssFile:\t 12 kB\n";
        assert_eq!(parse_rss_anon(status), Some(4_404_020 * 1024));
        assert_eq!(parse_rss_anon("Name:\tx\nVmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn peak_counts_every_sample_and_the_median_only_the_window() {
        let mut s = Samples::default();
        s.record(900);
        s.in_window = true;
        for b in [10, 30, 20, 1000, 40] {
            s.record(b);
        }
        s.in_window = false;
        s.record(70);
        assert_eq!(s.peak, 1000);
        // 10 20 30 40 1000: the samples outside (900, 70) would make it 40.
        assert_eq!(s.median(), Some(30));
    }

    #[test]
    fn a_long_window_is_thinned_evenly() {
        let mut s = Samples {
            in_window: true,
            ..Samples::default()
        };
        let n = 3 * MAX_WINDOW_SAMPLES as u64;
        for b in 0..n {
            s.record(b);
        }
        assert!(s.window.len() < MAX_WINDOW_SAMPLES);
        let m = s.median().unwrap() as f64;
        assert!(
            (m - n as f64 / 2.0).abs() < n as f64 * 0.01,
            "median {m} of 0..{n}"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sees_an_allocation_of_this_process() {
        let sampler = RssAnonSampler::start(Duration::from_millis(5)).expect("Linux has RssAnon");
        let before = sampler.report().peak_bytes;
        let big = vec![1u8; 256 << 20];
        std::hint::black_box(&big);
        sampler.sample();
        drop(big);
        let after = sampler.report().peak_bytes;
        assert!(
            after >= before + (200 << 20),
            "peak {after} after touching 256 MiB, {before} before"
        );
    }
}
