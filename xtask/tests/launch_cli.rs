//! `xtask launch` end to end with the hidden `launch-probe` children: the rank environment and
//! the `[rank r]` prefixes; a failing rank stops the others (SIGTERM, then SIGKILL for a rank
//! that ignores it) and launch exits non-zero; SIGTERM to launch stops every rank. Every run is
//! under a hang guard: launch must end on its own long before it.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Far above the bounded time launch needs in these tests (children sleep 10 minutes).
const HANG_LIMIT: Duration = Duration::from_secs(60);

fn launch(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.arg("launch").args(args).env("RUST_LOG", "info");
    cmd
}

/// Waits for the child's output, failing the test if it does not end within [`HANG_LIMIT`].
fn finish(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG_LIMIT) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: plain kill of the launch process we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("launch did not end within {HANG_LIMIT:?}: it hung");
        }
    }
}

fn run(args: &[&str]) -> Output {
    finish(
        launch(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Pids the probes printed (`... pid N`).
fn probe_pids(stdout: &str) -> Vec<i32> {
    stdout
        .lines()
        .filter_map(|l| {
            l.rsplit_once(" pid ")
                .map(|(_, p)| p.trim().parse().unwrap())
        })
        .collect()
}

fn is_alive(pid: i32) -> bool {
    // A zombie is not alive: read its state from /proc.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn every_rank_gets_its_environment_and_a_prefix() {
    let out = run(&[
        "--nproc-per-node",
        "3",
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--master-addr",
        "10.1.2.3",
        "--master-port",
        "4242",
        "--",
        "launch-probe",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for local in 0..3 {
        let rank = 3 + local;
        let want = format!(
            "[rank {rank}] probe rank {rank} of 6 local {local} backend tcp master 10.1.2.3:4242 pid"
        );
        assert!(stdout.contains(&want), "missing {want:?} in\n{stdout}");
        assert!(
            stderr.contains(&format!("[rank {rank}] probe stderr line")),
            "{stderr}"
        );
    }
}

#[test]
fn a_failing_rank_stops_the_others_and_launch_fails() {
    let out = run(&[
        "--nproc-per-node",
        "3",
        "--grace-s",
        "5",
        "--",
        "launch-probe",
        "--fail-rank",
        "1",
        "--exit-code",
        "7",
        "--sleep-ms",
        "600000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("rank 1 failed (exit status 7)"), "{stderr}");
    let pids = probe_pids(&stdout);
    assert_eq!(pids.len(), 3, "{stdout}");
    for pid in pids {
        assert!(!is_alive(pid), "probe {pid} still runs after launch ended");
    }
}

#[test]
fn a_rank_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let out = run(&[
        "--nproc-per-node",
        "2",
        "--grace-s",
        "1",
        "--",
        "launch-probe",
        "--fail-rank",
        "0",
        "--fail-after-ms",
        "500",
        "--ignore-term",
        "--sleep-ms",
        "600000",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("killing [\"rank 1\"]"), "{stderr}");
    for pid in probe_pids(&stdout) {
        assert!(!is_alive(pid), "probe {pid} survived");
    }
}

/// Starts launch with `n` probes that sleep, and reads its output until every rank has printed
/// its pid: (launch, its stdout kept open, each rank's (rank, pid)).
fn spawn_sleeping_ranks(n: usize) -> (Child, BufReader<ChildStdout>, Vec<(usize, i32)>) {
    let mut child = launch(&[
        "--nproc-per-node",
        &n.to_string(),
        "--",
        "launch-probe",
        "--sleep-ms",
        "600000",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut ranks = Vec::new();
    let mut line = String::new();
    while ranks.len() < n {
        line.clear();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "launch ended early"
        );
        if let Some(pid) = probe_pids(&line).first() {
            let rank: usize = line["[rank ".len()..]
                .split(']')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            ranks.push((rank, *pid));
        }
    }
    (child, reader, ranks)
}

#[test]
fn sigterm_to_launch_stops_every_rank() {
    // Wait until both ranks are up (their first line), then signal launch.
    let (child, _stdout, ranks) = spawn_sleeping_ranks(2);
    // SAFETY: plain kill of the launch process we started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("signal 15"), "{stderr}");
    for (_, pid) in ranks {
        assert!(!is_alive(pid), "probe {pid} still runs");
    }
}

#[test]
fn bad_layouts_are_refused() {
    let out = run(&[
        "--nproc-per-node",
        "2",
        "--nnodes",
        "2",
        "--node-rank",
        "2",
        "--",
        "launch-probe",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--node-rank 2"));
    let out = run(&["--nproc-per-node", "0", "--", "launch-probe"]);
    assert!(!out.status.success());
}

#[test]
fn launch_probe_is_hidden_from_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("launch"), "{help}");
    assert!(!help.contains("launch-probe"), "{help}");
}

#[test]
fn three_tcp_processes_pass_the_collective_suite() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let out = run(&[
        "--nproc-per-node",
        "3",
        "--master-port",
        &port,
        "--",
        "launch-probe",
        "--suite",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for r in 0..3 {
        let want = format!("[rank {r}] suite ok: rank {r} of 3: 264 results");
        assert!(stdout.contains(&want), "missing {want:?} in\n{stdout}");
    }
}

#[test]
fn a_rank_killed_from_outside_stops_the_others() {
    let (child, _stdout, ranks) = spawn_sleeping_ranks(3);
    let victim = ranks.iter().find(|(r, _)| *r == 2).unwrap().1;
    // SAFETY: plain kill of a probe process this test's launch started.
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rank 2 failed (signal 9)"), "{stderr}");
    for (_, pid) in ranks {
        assert!(!is_alive(pid), "probe {pid} still runs");
    }
}

/// Needs Open MPI: `cargo test -p xtask --features mpi --test launch_cli` (`.ci/run`).
#[cfg(feature = "mpi")]
#[test]
fn two_mpi_processes_pass_the_collective_suite() {
    let out = run(&[
        "--nproc-per-node",
        "2",
        "--backend",
        "mpi",
        "--",
        "launch-probe",
        "--suite",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for r in 0..2 {
        let want = format!("suite ok: rank {r} of 2: 264 results");
        assert!(stdout.contains(&want), "missing {want:?} in\n{stdout}");
    }
}
