//! Helpers of the training command-line tests: a small job on the shipped data, and where a
//! run put its files.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
