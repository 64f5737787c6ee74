//! Training across processes: the shipped Fashion-MNIST job on 2 TCP processes (6 steps) or 2 MPI
//! processes (20 steps, feature `mpi`) started by `xtask launch` gives, step by step, the same
//! losses bit for bit as on 2 rank threads in one process (every collective folds in rank order
//! on every backend).

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (step, loss) of every train record of the one run under `dir`.
fn losses(dir: &Path) -> Vec<(u64, f64)> {
    let runs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    std::fs::read_to_string(runs[0].join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == "train")
        .map(|r| (r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()))
        .collect()
}

fn run(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(workspace())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xtask {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Trains `steps` steps under `launch` with `launch_args` and on 2 rank threads; compares the
/// losses of every step.
fn processes_train_like_threads(steps: u64, launch_args: &[&str]) {
    let procs = tempfile::tempdir().unwrap();
    let threads = tempfile::tempdir().unwrap();
    let steps_arg = steps.to_string();
    let train = |dir: &Path| -> Vec<String> {
        [
            "train",
            "--steps",
            &steps_arg,
            "--log-period",
            "1",
            "--with-test",
            "false",
            "--no-progress",
            "--model-save-dir",
            dir.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let mut launch: Vec<String> = ["launch", "--nproc-per-node", "2"]
        .iter()
        .chain(launch_args)
        .map(|s| s.to_string())
        .collect();
    launch.push("--".to_string());
    launch.extend(train(procs.path()));
    run(&launch.iter().map(String::as_str).collect::<Vec<_>>());
    let mut one = train(threads.path());
    one.extend(["--ranks".to_string(), "2".to_string()]);
    run(&one.iter().map(String::as_str).collect::<Vec<_>>());

    let (a, b) = (losses(procs.path()), losses(threads.path()));
    assert_eq!(
        a.iter().map(|x| x.0).collect::<Vec<_>>(),
        (1..=steps).collect::<Vec<_>>(),
        "{a:?}"
    );
    assert_eq!(a.len(), b.len());
    for ((step, la), (_, lb)) in a.iter().zip(&b) {
        assert_eq!(
            la.to_bits(),
            lb.to_bits(),
            "step {step}: {la} on processes, {lb} on threads"
        );
    }
}

#[test]
fn two_tcp_processes_train_like_two_rank_threads() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    processes_train_like_threads(6, &["--master-port", &port]);
}

/// 20 steps on MPI (`.ci/run` runs it): `cargo test -p xtask --features mpi --test launch_train`.
#[cfg(feature = "mpi")]
#[test]
fn two_mpi_processes_train_like_two_rank_threads() {
    processes_train_like_threads(20, &["--backend", "mpi"]);
}
