//! Helpers of the command-line tests: a small job on the shipped data, the `train` command
//! line, where a run put its files, and a `serve` process on a free port.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Writes `dir/job.toml`: 2 rank threads, iresnet_tiny with 32-d embeddings and dist_arcface
/// on the shipped Fashion-MNIST parts, no verification, a log record every step; `extra`
/// holds the keys that differ between tests (batch, steps, checkpoints, seed).
pub fn write_tiny_job(dir: &Path, extra: &str) -> PathBuf {
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("datasets/fashion_mnist/train");
    let text = format!(
        r#"num_classes = 8
embedding_size = 32
loss = "dist_arcface"
scale = 32.0
model = "iresnet_tiny"
input_size = 28
in_channels = 1
ranks = 2
lr = 0.4
lr_policy = "poly"
dataset_dir = "{}"
with_test = false
log_period = 1
{extra}"#,
        data.display()
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The only run directory under `save_dir`.
pub fn run_dir(save_dir: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(save_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "one run directory in {}", save_dir.display());
    runs[0].clone()
}

/// The checkpoint of step `step` in run directory `run`.
pub fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:09}"))
}

/// `xtask train --config config --model-save-dir save_dir --no-progress EXTRA...`, logging
/// warnings only; callers add their own standard streams.
pub fn train_command(config: &Path, save_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--model-save-dir")
        .arg(save_dir)
        .arg("--no-progress")
        .args(extra)
        .env("RUST_LOG", "warn");
    cmd
}

/// `xtask serve --model MODEL --port 0 --max-wait-ms 2`, with the address its first line
/// names; the process is killed when this is dropped (a failing test leaves no server).
pub struct ServeProcess {
    /// The server process.
    pub child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
}

impl ServeProcess {
    pub fn start(model: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0", "--max-wait-ms", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        match line.trim().strip_prefix("listening on ") {
            Some(addr) => Self {
                addr: addr.to_string(),
                child,
            },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("unexpected first line `{line}`")
            }
        }
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
