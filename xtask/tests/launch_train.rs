//! `xtask train` as one process per rank: 2 processes launched by `xtask launch` (TCP
//! collectives) and 2 rank threads of one process train to the same bits: the loss of every
//! step, and the final checkpoint's backbone and head shards byte for byte. Both add gradients
//! in rank order, and each rank reads the same part of the data, so there is nothing to
//! tolerate (tolerance 0). With `PLSC_TEST_MPI=1` and a build with the feature `mpi`, the same
//! comparison runs under `mpirun -np 2` (`.ci/run` does this).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_dir, step_dir, write_tiny_job};

const STEPS: u64 = 20;

fn write_config(dir: &Path) -> PathBuf {
    write_tiny_job(
        dir,
        &format!("train_batch_size = 8\ntrain_steps = {STEPS}\nseed = 5\n"),
    )
}

fn check(mut cmd: Command, what: &str) {
    let out = cmd.env("RUST_LOG", "warn").output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn train_args(config: &Path, save_dir: &Path) -> Vec<String> {
    vec![
        "train".into(),
        "--config".into(),
        config.display().to_string(),
        "--model-save-dir".into(),
        save_dir.display().to_string(),
        "--no-progress".into(),
    ]
}

/// The loss of every step, as written (JSON numbers print f64 exactly).
fn losses(run: &Path) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["loss"].as_f64().unwrap())
        .collect()
}

fn assert_same_run(threads: &Path, processes: &Path, what: &str) {
    let (a, b) = (run_dir(threads), run_dir(processes));
    let (la, lb) = (losses(&a), losses(&b));
    assert_eq!(la.len(), STEPS as usize);
    assert_eq!(la, lb, "{what}: losses of the {STEPS} steps");
    for file in [
        "backbone.safetensors",
        "head.rank0.safetensors",
        "head.rank1.safetensors",
    ] {
        let x = std::fs::read(step_dir(&a, STEPS).join(file)).unwrap();
        let y = std::fs::read(step_dir(&b, STEPS).join(file)).unwrap();
        assert!(x == y, "{what}: {file} differs from the thread run's");
    }
}

#[test]
fn two_processes_train_like_two_threads() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let xtask = env!("CARGO_BIN_EXE_xtask");

    let threads = dir.path().join("threads");
    let mut cmd = Command::new(xtask);
    cmd.args(train_args(&config, &threads));
    check(cmd, "the thread run");

    let tcp = dir.path().join("tcp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(xtask);
    cmd.args(["launch", "--nproc-per-node", "2", "--master-port"])
        .arg(port.to_string())
        .arg("--")
        .args(train_args(&config, &tcp));
    check(cmd, "the 2-process TCP run");
    assert_same_run(&threads, &tcp, "2 processes over TCP");

    if std::env::var("PLSC_TEST_MPI").is_ok_and(|v| v == "1") {
        let mpi = dir.path().join("mpi");
        let mut cmd = Command::new("mpirun");
        cmd.args(["--allow-run-as-root", "--oversubscribe", "-np", "2"])
            .args(["-x", "PLSC_COMM_BACKEND=mpi", xtask])
            .args(train_args(&config, &mpi));
        check(cmd, "the 2-process MPI run");
        assert_same_run(&threads, &mpi, "2 processes over MPI");
    }
}
