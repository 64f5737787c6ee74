//! `xtask train --resume` after a SIGKILL: a training process killed at a random moment
//! resumes from its newest valid checkpoint and ends with the same weights, byte for byte, as a
//! run that was never interrupted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{run_dir, step_dir, write_tiny_job};

const STEPS: u64 = 12;

/// A checkpoint every 2 steps, all kept.
fn write_config(dir: &Path) -> PathBuf {
    write_tiny_job(
        dir,
        &format!(
            "train_batch_size = 16\ntrain_steps = {STEPS}\nwarmup_epochs = 0.0\n\
             checkpoint_period = 2\nkeep_last = 0\nseed = 3\n"
        ),
    )
}

fn train(config: &Path, save_dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = common::train_command(config, save_dir, extra);
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
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

/// Resuming a bf16 run with f32 head storage is refused with the named error before the
/// continued run is touched: its config.toml and metrics stay as they were, byte for byte.
#[test]
fn resuming_into_another_head_storage_is_refused_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_tiny_job(
        dir.path(),
        "train_batch_size = 16\ntrain_steps = 2\nwarmup_epochs = 0.0\ncheckpoint_period = 2\n\
         head_storage = \"bf16\"\n",
    );
    let save = dir.path().join("runs");
    run_to_end(train(&config, &save, &[]));
    let run = run_dir(&save);
    assert!(step_dir(&run, 2).join("manifest.json").is_file());
    let files = ["config.toml", "metrics.jsonl", "summary.json"];
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();

    let out = train(&config, &save, &["--resume", "--head-storage", "f32"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bf16") && err.contains("f32") && err.contains("--head-storage"),
        "{err}"
    );
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(run.join(f)).unwrap())
        .collect();
    assert!(
        before == after,
        "the refused resume changed the run's files"
    );
    assert_eq!(run_dir(&save), run, "no new run directory");
}
