//! What machine a benchmark ran on, for the `machine` field of every benchmark's JSON.

use anyhow::{Context, ensure};
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
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    MachineInfo {
        cpu_model,
        logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        rayon_threads: rayon_threads(),
        memory_gib: memory_kib / (1024.0 * 1024.0),
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

/// Free bytes on the file system holding `dir`, from `df`.
pub fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let out = Command::new("df")
        .args(["-k", "--output=avail"])
        .arg(dir)
        .output()
        .context("running df")?;
    ensure!(out.status.success(), "df failed on {}", dir.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("parsing df output")?;
    Ok(kib * 1024)
}

/// Reads a `kB` field (`VmRSS:`, `RssAnon:`, ...) of `/proc/<pid>/status`.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
