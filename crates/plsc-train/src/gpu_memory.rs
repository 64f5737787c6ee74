//! Peak GPU memory of this process as the driver reports it: `nvidia-smi` (NVML) polled on a
//! thread while the work runs. The driver's figure includes the CUDA context and whatever
//! the allocator holds, the same way it counts PyTorch's, so the two compare.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running probe; [`PeakProbe::stop`] ends it and returns the peak.
pub struct PeakProbe {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Option<f64>>>,
}

/// This process's used GPU memory in MiB, summed over GPUs (`None` when nvidia-smi does not
/// answer or does not list this process).
pub fn used_mib() -> Option<f64> {
    let pid = std::process::id().to_string();
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut total = None;
    for line in text.lines() {
        let mut parts = line.split(',').map(str::trim);
        if parts.next() == Some(pid.as_str())
            && let Some(mib) = parts.next().and_then(|v| v.parse::<f64>().ok())
        {
            *total.get_or_insert(0.0) += mib;
        }
    }
    total
}

impl PeakProbe {
    /// Starts polling every 100 ms.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak: Option<f64> = None;
            while !flag.load(Ordering::Relaxed) {
                if let Some(m) = used_mib() {
                    peak = Some(peak.map_or(m, |p| p.max(m)));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Some(m) = used_mib() {
                peak = Some(peak.map_or(m, |p| p.max(m)));
            }
            peak
        });
        Self {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops polling; the peak in MiB, if the driver ever answered.
    pub fn stop(mut self) -> Option<f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().and_then(|h| h.join().ok().flatten())
    }
}
