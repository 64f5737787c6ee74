//! Counters and histograms of a server, written in the Prometheus text format
//! (`GET /metrics`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// A histogram with fixed upper bounds (cumulative buckets when written).
#[derive(Debug)]
struct Histogram {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    /// The sum, as f64 bits.
    sum: AtomicU64,
}

impl Histogram {
    fn new(bounds: Vec<f64>) -> Self {
        Self {
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| v <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    fn write(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = f64::from_bits(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Batch figures since the server started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchStats {
    /// Backbone runs.
    pub batches: u64,
    /// Images run (a flipped image counts twice).
    pub images: u64,
    /// Runs that held images of more than one request.
    pub multi_request_batches: u64,
    /// Most requests in one run.
    pub max_requests: u64,
    /// Most images in one run.
    pub max_images: u64,
}

/// Everything `GET /metrics` reports.
#[derive(Debug)]
pub struct Metrics {
    /// (route, status) -> answers.
    responses: Mutex<BTreeMap<(&'static str, u16), u64>>,
    latency: Histogram,
    batch_images: Histogram,
    batch_requests: Histogram,
    inference: Histogram,
    images: AtomicU64,
    multi_request_batches: AtomicU64,
    max_requests: AtomicU64,
    max_images: AtomicU64,
    /// Images waiting for a worker now.
    pub(crate) queued_images: AtomicUsize,
}

impl Metrics {
    /// Empty metrics; batch-size buckets go up to `max_batch`.
    pub fn new(max_batch: usize) -> Self {
        let mut sizes = vec![1.0];
        while (*sizes.last().unwrap_or(&1.0) as usize) < max_batch.max(1) {
            let next = sizes.last().unwrap_or(&1.0) * 2.0;
            sizes.push(next);
        }
        Self {
            responses: Mutex::new(BTreeMap::new()),
            latency: Histogram::new(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            batch_images: Histogram::new(sizes.clone()),
            batch_requests: Histogram::new(sizes),
            inference: Histogram::new(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            images: AtomicU64::new(0),
            multi_request_batches: AtomicU64::new(0),
            max_requests: AtomicU64::new(0),
            max_images: AtomicU64::new(0),
            queued_images: AtomicUsize::new(0),
        }
    }

    /// Counts one answer of `route` with `status`, taking `elapsed` from arrival.
    pub fn record_response(&self, route: &'static str, status: u16, elapsed: Duration) {
        if let Ok(mut map) = self.responses.lock() {
            *map.entry((route, status)).or_insert(0) += 1;
        }
        self.latency.observe(elapsed.as_secs_f64());
    }

    /// Counts one backbone run of `images` images from `requests` requests.
    pub fn record_batch(&self, requests: usize, images: usize, elapsed: Duration) {
        self.batch_images.observe(images as f64);
        self.batch_requests.observe(requests as f64);
        self.inference.observe(elapsed.as_secs_f64());
        self.images.fetch_add(images as u64, Ordering::Relaxed);
        if requests > 1 {
            self.multi_request_batches.fetch_add(1, Ordering::Relaxed);
        }
        self.max_requests
            .fetch_max(requests as u64, Ordering::Relaxed);
        self.max_images.fetch_max(images as u64, Ordering::Relaxed);
    }

    /// Batch figures so far.
    pub fn batch_stats(&self) -> BatchStats {
        BatchStats {
            batches: self.batch_images.count.load(Ordering::Relaxed),
            images: self.images.load(Ordering::Relaxed),
            multi_request_batches: self.multi_request_batches.load(Ordering::Relaxed),
            max_requests: self.max_requests.load(Ordering::Relaxed),
            max_images: self.max_images.load(Ordering::Relaxed),
        }
    }

    /// Images waiting for a worker now.
    pub fn queued_images(&self) -> usize {
        self.queued_images.load(Ordering::Relaxed)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP plsc_serve_requests_total Answered requests by route and HTTP status.\n\
             # TYPE plsc_serve_requests_total counter\n",
        );
        let responses = self.responses.lock().map(|m| m.clone()).unwrap_or_default();
        for ((route, status), n) in &responses {
            let _ = writeln!(
                out,
                "plsc_serve_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP plsc_serve_errors_total Answers with a 4xx or 5xx status.\n\
             # TYPE plsc_serve_errors_total counter\n",
        );
        let errors: u64 = responses
            .iter()
            .filter(|((_, s), _)| *s >= 400)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "plsc_serve_errors_total {errors}");
        self.latency.write(
            &mut out,
            "plsc_serve_request_duration_seconds",
            "Time from a request's arrival to its answer.",
        );
        self.batch_images.write(
            &mut out,
            "plsc_serve_batch_images",
            "Images per backbone run (a flipped image counts twice).",
        );
        self.batch_requests.write(
            &mut out,
            "plsc_serve_batch_requests",
            "Requests whose images shared one backbone run.",
        );
        self.inference.write(
            &mut out,
            "plsc_serve_inference_duration_seconds",
            "Time of one backbone run.",
        );
        let _ = writeln!(
            out,
            "# HELP plsc_serve_images_total Images run through the backbone.\n\
             # TYPE plsc_serve_images_total counter\nplsc_serve_images_total {}",
            self.images.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP plsc_serve_queue_images Images waiting for an inference worker.\n\
             # TYPE plsc_serve_queue_images gauge\nplsc_serve_queue_images {}",
            self.queued_images()
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_cover_max_batch() {
        let m = Metrics::new(48);
        m.record_batch(1, 1, Duration::from_millis(1));
        m.record_batch(3, 5, Duration::from_millis(2));
        m.record_batch(2, 48, Duration::from_millis(3));
        let text = m.render();
        assert!(text.contains("plsc_serve_batch_images_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("plsc_serve_batch_images_bucket{le=\"8\"} 2\n"));
        assert!(text.contains("plsc_serve_batch_images_bucket{le=\"64\"} 3\n"));
        assert!(text.contains("plsc_serve_batch_images_sum 54\n"));
        assert!(text.contains("plsc_serve_batch_requests_bucket{le=\"1\"} 1\n"));
        assert!(text.contains("plsc_serve_images_total 54\n"));
        let stats = m.batch_stats();
        assert_eq!(
            stats,
            BatchStats {
                batches: 3,
                images: 54,
                multi_request_batches: 2,
                max_requests: 3,
                max_images: 48
            }
        );
    }

    #[test]
    fn responses_are_counted_by_route_and_status() {
        let m = Metrics::new(4);
        m.record_response("encode", 200, Duration::from_millis(3));
        m.record_response("encode", 200, Duration::from_millis(3));
        m.record_response("encode", 400, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("plsc_serve_requests_total{route=\"encode\",status=\"200\"} 2\n"));
        assert!(text.contains("plsc_serve_requests_total{route=\"encode\",status=\"400\"} 1\n"));
        assert!(text.contains("plsc_serve_errors_total 1\n"));
        assert!(text.contains("plsc_serve_request_duration_seconds_count 3\n"));
    }
}
