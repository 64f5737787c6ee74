//! The PyTorch peer (`scripts/peers/arcface_torch_peer.py`, arcface_torch's IResNet and
//! PartialFC_V2): `bench train --peer-python PYTHON` and `bench head --peer-python PYTHON` run it
//! with that interpreter, between their own measurements, and read the one JSON object it
//! prints. The peer needs PyTorch (`pip install torch`), which the project does not install.

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The peer script, from the repository root.
pub const SCRIPT: &str = "scripts/peers/arcface_torch_peer.py";

/// What the peer reports of one run (both modes).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PeerRun {
    /// Median seconds of a timed step.
    pub step_seconds_median: f64,
    /// Every timed step's seconds.
    pub step_seconds_all: Vec<f64>,
    /// Images per second (train mode only).
    #[serde(default)]
    pub images_per_second: Option<f64>,
    /// PyTorch's CPU threads.
    pub threads: usize,
    /// PyTorch's version.
    pub torch: String,
}

/// A Python interpreter with PyTorch, and the peer script.
pub struct Peer {
    python: PathBuf,
    script: PathBuf,
}

impl Peer {
    /// Checks that `python` runs and imports torch; names the fix when it does not.
    pub fn new(python: &Path) -> anyhow::Result<Self> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(SCRIPT);
        anyhow::ensure!(
            script.is_file(),
            "the peer script {} is missing",
            script.display()
        );
        let probe = Command::new(python)
            .args(["-c", "import torch"])
            .output()
            .with_context(|| format!("running --peer-python {}", python.display()))?;
        if !probe.status.success() {
            bail!(
                "--peer-python {} cannot import torch ({}); install it in that environment with \
                 `{} -m pip install torch`",
                python.display(),
                String::from_utf8_lossy(&probe.stderr).trim(),
                python.display()
            );
        }
        Ok(Self {
            python: python.to_path_buf(),
            script,
        })
    }

    /// Runs the peer with `args` (after the script) and parses its report.
    pub fn run(&self, args: &[String]) -> anyhow::Result<PeerRun> {
        tracing::info!(args = args.join(" "), "running the PyTorch peer");
        let out = Command::new(&self.python)
            .arg(&self.script)
            .args(args)
            .output()
            .with_context(|| format!("running {}", self.script.display()))?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            bail!(
                "the peer {} {} failed ({}):\n{}",
                self.script.display(),
                args.join(" "),
                out.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading the report of {}", self.script.display()))
    }

    /// The command line a reader can paste to rerun the peer alone.
    pub fn command_line(&self, args: &[String]) -> String {
        format!("{} {} {}", self.python.display(), SCRIPT, args.join(" "))
    }
}

/// The peer's arguments for the head alone (`bench head`): CPU, `threads` threads.
pub fn head_args(
    batch: usize,
    dim: usize,
    classes: usize,
    sample_ratio: f64,
    steps: usize,
    threads: usize,
) -> Vec<String> {
    ["--mode", "head", "--device", "cpu", "--warmup", "1"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("--threads={threads}"),
            format!("--batch={batch}"),
            format!("--embedding-size={dim}"),
            format!("--classes={classes}"),
            format!("--sample-ratio={sample_ratio}"),
            format!("--steps={steps}"),
        ])
        .collect()
}
