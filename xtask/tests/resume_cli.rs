//! `xtask train --resume` after a SIGKILL: a training process killed at a random moment
//! resumes from its newest valid checkpoint and ends with the same weights, byte for byte, as a
//! run that was never interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const STEPS: u64 = 12;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Two rank threads, iresnet_tiny on the shipped Fashion-MNIST parts, a checkpoint every 2
/// steps, all kept.
fn write_config(dir: &Path) -> PathBuf {
    let data = repo_root().join("datasets/fashion_mnist/train");
    let text = format!(
        r#"num_classes = 8
embedding_size = 32
loss = "dist_arcface"
scale = 32.0
model = "iresnet_tiny"
input_size = 28
in_channels = 1
ranks = 2
train_batch_size = 16
train_steps = {STEPS}
lr = 0.4
lr_policy = "poly"
warmup_epochs = 0.0
dataset_dir = "{}"
with_test = false
log_period = 1
checkpoint_period = 2
keep_last = 0
seed = 3
"#,
        data.display()
    );
    let path = dir.join("job.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(config: &Path, save_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--model-save-dir")
        .arg(save_dir)
        .arg("--no-progress")
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

fn run_to_end(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "training failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The only run directory under `save_dir`.
fn run_dir(save_dir: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(save_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "one run directory in {}", save_dir.display());
    runs[0].clone()
}

fn step_dir(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:09}"))
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());

    // The reference: never interrupted.
    let whole = dir.path().join("whole");
    run_to_end(train(&config, &whole, &[]));

    // The victim: killed right after a random checkpoint (2, 4 or 6), plus up to 80 ms.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    let kill_after = 2 * (1 + nanos % 3);
    let extra_ms = nanos / 7 % 80;
    eprintln!("killing after checkpoint {kill_after} + {extra_ms} ms");
    let killed = dir.path().join("killed");
    let mut child = train(&config, &killed, &[]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let seen = std::fs::read_dir(&killed)
            .ok()
            .and_then(|mut runs| runs.next())
            .and_then(|r| r.ok())
            .is_some_and(|r| {
                step_dir(&r.path(), kill_after)
                    .join("manifest.json")
                    .is_file()
            });
        if seen {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before checkpoint {kill_after}");
        }
        assert!(Instant::now() < deadline, "no checkpoint {kill_after}");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(extra_ms));
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the victim was killed, not finished");
    let victim = run_dir(&killed);
    assert!(
        !step_dir(&victim, STEPS).exists(),
        "killed before the last checkpoint"
    );

    // Resume: the same run directory continues.
    run_to_end(train(&config, &killed, &["--resume"]));
    assert_eq!(run_dir(&killed), victim);

    let (a, b) = (step_dir(&run_dir(&whole), STEPS), step_dir(&victim, STEPS));
    for file in [
        "backbone.safetensors",
        "head.rank0.safetensors",
        "head.rank1.safetensors",
    ] {
        let (x, y) = (
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
        );
        assert!(x == y, "{file} differs after resuming (tolerance: none)");
    }

    // The continued metrics hold every step once.
    let text = std::fs::read_to_string(victim.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=STEPS).collect::<Vec<_>>());
}
