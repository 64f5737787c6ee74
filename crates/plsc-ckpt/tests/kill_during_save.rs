//! The atomic-save guarantee under SIGKILL: this test binary runs itself as a child that
//! saves checkpoints in a loop (`--child DIR`), kills it at a random moment, and checks that
//! the newest valid checkpoint is complete and exact, that a partial directory is ignored,
//! and that the next save removes it. Its own `main` (`harness = false`), so that the child
//! is this very binary.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use plsc_ckpt::{
    BackboneRef, Checkpoint, HeadShardRef, SaveOptions, latest_valid, list_checkpoints, save,
};
use plsc_core::{ClassShard, HeadConfig, RowStore, ShardedHead};
use rand::{Rng, SeedableRng};

const WORLD: usize = 4;
const KEEP: usize = 3;
const ROUNDS: usize = 10;

fn config() -> HeadConfig {
    arcface(40_000, 64)
}

/// The rows as saved at `step` (weight, momentum per rank): fixed random rows plus `step`, so
/// every file of a checkpoint must come from the same save. Cheap, so that the child spends
/// nearly all its time inside `save`.
fn rows_at(
    base: &[ShardedHead<f32>],
    step: u64,
) -> Vec<(ClassShard, RowStore<f32>, RowStore<f32>)> {
    base.iter()
        .map(|b| {
            let w = b
                .weight()
                .to_vec()
                .iter()
                .map(|v| v + step as f32)
                .collect();
            let m = b
                .velocity()
                .to_vec()
                .iter()
                .map(|v| v - step as f32)
                .collect();
            (b.shard(), RowStore::Full(w), RowStore::Full(m))
        })
        .collect()
}

fn save_step(dir: &Path, base: &[ShardedHead<f32>], step: u64) {
    let rows = rows_at(base, step);
    let shards: Vec<_> = rows
        .iter()
        .map(|(shard, w, m)| HeadShardRef {
            shard: *shard,
            weight: w,
            momentum: m,
            bias: None,
            bias_momentum: None,
        })
        .collect();
    let (tensors, momentum) = backbone(step);
    save(
        dir,
        &meta(&config(), WORLD, step, true),
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions { keep_last: KEEP },
    )
    .unwrap();
}

/// The child: continues after the newest checkpoint and saves forever.
fn child(dir: &Path) -> ! {
    let base = random_heads(&config(), WORLD, 11);
    let mut step = list_checkpoints(dir)
        .unwrap()
        .first()
        .map_or(1, |c| c.0 + 1);
    loop {
        save_step(dir, &base, step);
        step += 1;
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect()
}

/// The checkpoint holds exactly what was saved at its step, at 4 and at 3 ranks.
fn check_exact(c: &Checkpoint, base: &[ShardedHead<f32>]) {
    c.verify().unwrap();
    let step = c.step();
    let rows = rows_at(base, step);
    let want: [Vec<f32>; 2] = [
        rows.iter().flat_map(|r| r.1.to_vec()).collect(),
        rows.iter().flat_map(|r| r.2.to_vec()).collect(),
    ];
    for m in [WORLD, 3] {
        let mut w = Vec::new();
        let mut v = Vec::new();
        for r in 0..m {
            let rows = c.load_head_shard(m, r).unwrap();
            w.extend(rows.weight.to_vec_f32());
            v.extend(rows.momentum.to_vec_f32());
        }
        assert_eq!(
            bits(&w),
            bits(&want[0]),
            "step {step}: weight rows at {m} ranks"
        );
        assert_eq!(
            bits(&v),
            bits(&want[1]),
            "step {step}: momentum rows at {m} ranks"
        );
    }
    let (tensors, momentum) = backbone(step);
    let b = c.load_backbone().unwrap();
    assert_eq!(
        (b.tensors, b.momentum),
        (tensors, momentum),
        "step {step}: backbone"
    );
    assert_eq!(
        c.manifest().training,
        meta(&config(), WORLD, step, true).training
    );
}

fn parent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill_during_save: seed {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let base = random_heads(&config(), WORLD, 11);
    let exe = std::env::current_exe().unwrap();
    let mut partial_seen = 0;
    for round in 0..ROUNDS {
        let before = list_checkpoints(dir).unwrap().first().map_or(0, |c| c.0);
        let mut proc = Command::new(&exe)
            .arg("--child")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for one checkpoint of this child, then kill it at a random moment.
        let t0 = Instant::now();
        while list_checkpoints(dir).unwrap().first().map_or(0, |c| c.0) <= before {
            assert!(proc.try_wait().unwrap().is_none(), "the child exited");
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "the child saved nothing"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        proc.kill().unwrap(); // SIGKILL
        proc.wait().unwrap();

        let left = leftovers(dir);
        partial_seen += usize::from(!left.is_empty());
        let c = latest_valid(dir)
            .unwrap()
            .expect("a valid checkpoint survives the kill");
        println!(
            "round {round}: killed after step {}, partial: {left:?}",
            c.step()
        );
        check_exact(&c, &base);
        assert!(list_checkpoints(dir).unwrap().len() <= KEEP + 1);
    }
    // Killing a process that spends most of its time saving lands mid-save almost always;
    // at least once in the rounds is what makes this test meaningful.
    assert!(
        partial_seen > 0,
        "no kill landed during a save in {ROUNDS} rounds"
    );

    // The next save removes the partial directory and prunes.
    let next = list_checkpoints(dir).unwrap()[0].0 + 1;
    save_step(dir, &base, next);
    assert!(leftovers(dir).is_empty(), "{:?}", leftovers(dir));
    let steps: Vec<u64> = list_checkpoints(dir).unwrap().iter().map(|c| c.0).collect();
    assert_eq!(steps.len(), KEEP);
    assert_eq!(steps[0], next);
    check_exact(&latest_valid(dir).unwrap().unwrap(), &base);
    println!("kill_during_save: ok ({partial_seen} of {ROUNDS} kills left a partial checkpoint)");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        child(Path::new(&args[i + 1]));
    }
    if args.iter().any(|a| a == "--list") {
        println!("kill_during_save: test");
        return;
    }
    parent();
}
