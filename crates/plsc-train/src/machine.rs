//! What machine a run or a benchmark ran on (the `machine` field of every benchmark's JSON),
//! and the `/proc` figures the benchmarks read: free disk, a process's memory fields.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// CPU model, core and thread counts, memory and OS of this machine.
#[derive(Debug, Serialize)]
pub struct MachineInfo {
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub rayon_threads: usize,
    pub memory_gib: f64,
    pub os: String,
    pub arch: String,
}

/// Reads the machine description from `/proc` where available.
pub fn machine_info() -> MachineInfo {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu_model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory_bytes = plsc_core::capacity::meminfo_bytes("MemTotal:").unwrap_or(0);
    MachineInfo {
        cpu_model,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rayon_threads: rayon_threads(),
        memory_gib: memory_bytes as f64 / f64::from(1u32 << 30),
        os: std::env::consts::OS.into(),
        arch: std::env::consts::ARCH.into(),
    }
}

fn rayon_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Free bytes on the file system holding `dir`, from `df` (`None` when `df` does not answer
/// with a number).
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["-k", "--output=avail"])
        .arg(dir)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text.lines().nth(1).and_then(|l| l.trim().parse().ok())?;
    Some(kib * 1024)
}

/// Reads a `kB` field (`VmRSS:`, `RssAnon:`, ...) of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    plsc_core::capacity::kib_field(&s, field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_is_described() {
        let m = machine_info();
        assert!(m.logical_cpus >= 1 && m.rayon_threads >= 1);
        if cfg!(target_os = "linux") {
            assert!(m.memory_gib > 0.0 && m.cpu_model != "unknown", "{m:?}");
            assert!(status_kib(std::process::id(), "VmRSS:").is_some_and(|k| k > 0));
            assert!(free_bytes(Path::new("/")).is_some_and(|b| b > 0));
        }
        assert_eq!(status_kib(std::process::id(), "NoSuchField:"), None);
    }
}
