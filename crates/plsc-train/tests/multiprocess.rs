//! The loop across processes: fed identical global batches, with r = 1 and a backbone without
//! batch statistics, 2 processes (TCP collectives through the rendezvous) give bit-identical
//! losses to 2 rank threads for 20 steps, and a 1-rank run the same losses within 1e-5
//! relative (only the order of the f32 gradient sums differs).
//!
//! The test starts two copies of its own binary as the ranks (`PLSC_TEST_RANK_CHILD` set): each
//! runs `train_rank` on its communicator and writes its losses as JSON.

mod common;

use std::path::Path;
use std::process::Command;

use common::{B, DIM, GlobalBatch, LinearNet, PIXELS, rank_slices, small_entry, synthetic};
use plsc_train::trainer::{Outputs, RunPlan, train, train_rank};
use plsc_train::{Entry, TrainOutcome};

const STEPS: u64 = 20;
const CHILD: &str = "PLSC_TEST_RANK_CHILD";

fn entry(ranks: usize) -> Entry {
    small_entry(ranks, 8, 10, STEPS).with_log_period(100)
}

fn batches() -> Vec<GlobalBatch> {
    synthetic(STEPS as usize, 8, PIXELS, 10, 0.5, 11)
}

fn plan() -> RunPlan {
    RunPlan {
        steps_per_epoch: STEPS,
        total_steps: STEPS,
        start_step: 0,
        data_steps_per_epoch: STEPS,
    }
}

fn threads(ranks: usize) -> TrainOutcome<LinearNet<B>> {
    let e = entry(ranks);
    let device = Default::default();
    let base = LinearNet::<B>::new(PIXELS, DIM, 7, &device);
    let b = batches();
    train::<B, _, _>(
        &e,
        &base,
        &device,
        plan(),
        |rank| Ok(rank_slices(&b, rank, e.ranks)),
        Outputs::default(),
    )
    .unwrap()
}

/// One rank of the multi-process run (in a child process).
fn child(out: &Path) {
    let rc = plsc_comm::backend::connect_from_env()
        .unwrap()
        .expect("launcher variables");
    let e = entry(rc.env.world_size);
    let device = Default::default();
    let model = LinearNet::<B>::new(PIXELS, DIM, 7, &device);
    let rank = rc.env.rank;
    let outcome = train_rank::<B, _, _>(
        &e,
        rc.comm.as_ref(),
        model,
        &device,
        plan(),
        rank_slices(&batches(), rank, e.ranks),
        Outputs::default(),
    )
    .unwrap();
    std::fs::write(out, serde_json::to_string(&outcome.losses).unwrap()).unwrap();
}

#[test]
fn two_processes_match_two_threads_and_one_rank() {
    if let Ok(out) = std::env::var(CHILD) {
        child(Path::new(&out));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|rank| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "two_processes_match_two_threads_and_one_rank",
                    "--nocapture",
                ])
                .env(CHILD, dir.path().join(format!("rank{rank}.json")))
                .env("RANK", rank.to_string())
                .env("LOCAL_RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("MASTER_ADDR", "127.0.0.1")
                .env("MASTER_PORT", port.to_string())
                .env("PLSC_COMM_BACKEND", "tcp")
                .env("PLSC_RENDEZVOUS_TIMEOUT_S", "60")
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, mut c) in children.into_iter().enumerate() {
        assert!(c.wait().unwrap().success(), "rank process {rank} failed");
    }
    let read = |rank: usize| -> Vec<f64> {
        let text = std::fs::read_to_string(dir.path().join(format!("rank{rank}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };
    let (p0, p1) = (read(0), read(1));
    let two = threads(2).losses;
    assert_eq!(p0.len(), STEPS as usize);
    assert_eq!(p0, p1, "both processes see the same global loss");
    assert_eq!(p0, two, "2 processes and 2 threads: bit for bit");
    let one = threads(1).losses;
    for (step, (a, b)) in one.iter().zip(&p0).enumerate() {
        let rel = (a - b).abs() / a.abs().max(1e-12);
        assert!(rel < 1e-5, "step {step}: 1 rank {a}, 2 processes {b}");
    }
}
