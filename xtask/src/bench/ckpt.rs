//! `cargo xtask bench ckpt`: checkpoint save and load MB/s, and the peak anonymous memory of
//! resharding a large head offline.
//!
//! - save / load: a head of `--io-classes x --dim` (weight and momentum) at `--from` ranks,
//!   saved with plsc-ckpt's single-process `save` (streamed write, sha256 on the way, fsync,
//!   manifest, rename) and loaded back shard by shard (checksum verification included);
//!   medians of `--repeats` runs. MB/s counts the bytes of the head files.
//! - reshard: a `--classes x --dim` head (default 1,000,000 x 512, weight + momentum: 4 GB)
//!   saved at `--from` ranks, one shard in memory at a time, then resharded to `--to` ranks
//!   by a child process (`xtask reshard`) whose `RssAnon` (anonymous resident memory: the
//!   memory-mapped source pages and the written file pages do not count) is sampled from
//!   `/proc/<pid>/status` every 5 ms; `VmHWM` (peak RSS including file pages) is read too.
//!   Goal: peak RssAnon below one `--from`-rank shard's weight (250,000 x 512 x 4 B = 512 MB).
//!
//! Free disk is checked with `df` first; the scratch folder is removed at the end.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use plsc_ckpt::{
    Checkpoint, CheckpointMeta, HeadShardRef, PendingCheckpoint, SaveOptions, TrainingState,
};
use plsc_core::{ClassShard, HeadConfig, RowStore};
use serde::Serialize;

use super::stats::median;
use plsc_train::machine::{free_bytes, status_kib};

/// Arguments of `cargo xtask bench ckpt`.
#[derive(clap::Args, Debug)]
pub struct CkptArgs {
    /// Classes of the head resharded by the memory benchmark.
    #[arg(long, default_value_t = 1_000_000)]
    classes: usize,
    /// Embedding size.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Ranks that write the checkpoints.
    #[arg(long, default_value_t = 4)]
    from: usize,
    /// Ranks to reshard to.
    #[arg(long, default_value_t = 3)]
    to: usize,
    /// Classes of the head of the save / load benchmark.
    #[arg(long, default_value_t = 250_000)]
    io_classes: usize,
    /// Timed save and load runs (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Scratch folder (created, then removed) [default: the system temp folder].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the reshard part.
    #[arg(long)]
    no_reshard: bool,
}

#[derive(Serialize)]
struct IoReport {
    classes: usize,
    dim: usize,
    ranks: usize,
    head_bytes: u64,
    repeats: usize,
    save_seconds_median: f64,
    save_mb_per_s_median: f64,
    load_seconds_median: f64,
    load_mb_per_s_median: f64,
}

#[derive(Serialize)]
struct ReshardReport {
    classes: usize,
    dim: usize,
    from_ranks: usize,
    to_ranks: usize,
    head_bytes: u64,
    write_source_seconds: f64,
    reshard_seconds: f64,
    reshard_mb_per_s: f64,
    peak_rss_anon_mib: f64,
    peak_rss_total_mib: f64,
    rss_anon_goal_mib: f64,
    rss_anon_under_goal: bool,
}

#[derive(Serialize)]
struct Report {
    save_load: IoReport,
    reshard: Option<ReshardReport>,
    machine: plsc_train::machine::MachineInfo,
}

pub fn run(args: CkptArgs) -> anyhow::Result<()> {
    ensure!(args.repeats >= 1, "--repeats must be at least 1");
    super::run_in_scratch(args.dir.clone(), "ckpt", |scratch| run_in(&args, scratch))
}

fn run_in(args: &CkptArgs, scratch: &Path) -> anyhow::Result<Report> {
    let io_bytes = head_bytes(args.io_classes, args.dim);
    let big_bytes = if args.no_reshard {
        0
    } else {
        head_bytes(args.classes, args.dim)
    };
    // Save/load keeps two checkpoints at most; reshard holds the source and the output.
    let need = 2 * io_bytes + 2 * big_bytes + (256 << 20);
    let free = free_bytes(scratch).ok_or_else(|| {
        anyhow::anyhow!("df did not report the free space of {}", scratch.display())
    })?;
    if free < need {
        bail!(
            "{} has {:.1} GiB free; the benchmark needs {:.1} GiB; use --classes, --io-classes or --dir",
            scratch.display(),
            free as f64 / (1u64 << 30) as f64,
            need as f64 / (1u64 << 30) as f64
        );
    }
    let save_load = bench_io(args, scratch)?;
    let reshard = if args.no_reshard {
        None
    } else {
        Some(bench_reshard(args, scratch)?)
    };
    Ok(Report {
        save_load,
        reshard,
        machine: plsc_train::machine::machine_info(),
    })
}

/// Bytes of weight + momentum of a `classes x dim` f32 head.
fn head_bytes(classes: usize, dim: usize) -> u64 {
    2 * 4 * classes as u64 * dim as u64
}

fn meta(classes: usize, dim: usize, ranks: usize, step: u64) -> CheckpointMeta {
    CheckpointMeta {
        head: HeadConfig::new(classes, dim),
        world_size: ranks,
        model: None,
        training: TrainingState {
            step,
            ..TrainingState::default()
        },
    }
}

/// Deterministic, cheap, non-constant rows for a shard (weight, momentum).
fn shard_values(shard: ClassShard, dim: usize) -> (RowStore<f32>, RowStore<f32>) {
    let n = shard.len * dim;
    let first = (shard.start * dim) as u64;
    let pattern = |salt: u64| -> Vec<f32> {
        (0..n as u64)
            .map(|i| {
                let x = (first + i)
                    .wrapping_add(salt)
                    .wrapping_mul(0x9E37_79B9_7F4A_7C15);
                ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect()
    };
    (RowStore::Full(pattern(1)), RowStore::Full(pattern(2)))
}

/// Writes a head-only checkpoint one shard at a time (at most one shard in memory).
fn write_checkpoint(
    root: &Path,
    classes: usize,
    dim: usize,
    ranks: usize,
    step: u64,
) -> anyhow::Result<PathBuf> {
    let meta = meta(classes, dim, ranks, step);
    let mut pending = PendingCheckpoint::begin(root, meta)?;
    for shard in ClassShard::balanced_split(classes, ranks)? {
        let (w, m) = shard_values(shard, dim);
        pending.write_head_shard(HeadShardRef {
            shard,
            weight: &w,
            momentum: &m,
            bias: None,
            bias_momentum: None,
        })?;
    }
    Ok(pending.commit(SaveOptions { keep_last: 1 })?)
}

fn bench_io(args: &CkptArgs, scratch: &Path) -> anyhow::Result<IoReport> {
    let (classes, dim, ranks) = (args.io_classes, args.dim, args.from);
    let root = scratch.join("io");
    let shards = ClassShard::balanced_split(classes, ranks)?;
    let values: Vec<(RowStore<f32>, RowStore<f32>)> =
        shards.iter().map(|s| shard_values(*s, dim)).collect();
    let refs: Vec<HeadShardRef<'_>> = shards
        .iter()
        .zip(&values)
        .map(|(s, (w, m))| HeadShardRef {
            shard: *s,
            weight: w,
            momentum: m,
            bias: None,
            bias_momentum: None,
        })
        .collect();
    let bytes = head_bytes(classes, dim);
    let mut save_s = Vec::new();
    let mut load_s = Vec::new();
    for rep in 0..args.repeats {
        let t = Instant::now();
        let dir = plsc_ckpt::save(
            &root,
            &meta(classes, dim, ranks, rep as u64 + 1),
            None,
            &refs,
            SaveOptions { keep_last: 1 },
        )?;
        save_s.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let ckpt = Checkpoint::open(&dir)?;
        for (r, shard) in shards.iter().enumerate() {
            let rows = ckpt.load_head_shard(ranks, r)?;
            ensure!(
                rows.weight.len() == shard.len * dim,
                "loaded shard {r} has {} values",
                rows.weight.len()
            );
        }
        load_s.push(t.elapsed().as_secs_f64());
    }
    let (save, load) = (median(&save_s), median(&load_s));
    Ok(IoReport {
        classes,
        dim,
        ranks,
        head_bytes: bytes,
        repeats: args.repeats,
        save_seconds_median: save,
        save_mb_per_s_median: bytes as f64 / 1e6 / save,
        load_seconds_median: load,
        load_mb_per_s_median: bytes as f64 / 1e6 / load,
    })
}

fn bench_reshard(args: &CkptArgs, scratch: &Path) -> anyhow::Result<ReshardReport> {
    let src_root = scratch.join("src");
    let t = Instant::now();
    let src = write_checkpoint(&src_root, args.classes, args.dim, args.from, 1)?;
    let write_source_seconds = t.elapsed().as_secs_f64();
    tracing::info!(
        "wrote the {}-rank source checkpoint ({:.2} GB) in {write_source_seconds:.1} s",
        args.from,
        head_bytes(args.classes, args.dim) as f64 / 1e9
    );
    let exe = std::env::current_exe()?;
    let t = Instant::now();
    let mut child = Command::new(exe)
        .arg("reshard")
        .arg("--ckpt")
        .arg(&src)
        .arg("--ranks")
        .arg(args.to.to_string())
        .arg("--out")
        .arg(scratch.join("dst"))
        .stdout(Stdio::null())
        .spawn()
        .context("starting the reshard child")?;
    let pid = child.id();
    let mut peak_anon = 0u64;
    let mut peak_total = 0u64;
    let status = loop {
        if let Some(a) = status_kib(pid, "RssAnon:") {
            peak_anon = peak_anon.max(a);
        }
        if let Some(h) = status_kib(pid, "VmHWM:") {
            peak_total = peak_total.max(h);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let seconds = t.elapsed().as_secs_f64();
    ensure!(status.success(), "the reshard child failed: {status}");
    let bytes = head_bytes(args.classes, args.dim);
    // One source shard's weight rows: the goal the issue sets.
    let first = ClassShard::for_rank(args.classes, args.from, 0)?;
    let goal = (first.len * args.dim * 4) as f64 / (1u64 << 20) as f64;
    let anon = peak_anon as f64 / 1024.0;
    Ok(ReshardReport {
        classes: args.classes,
        dim: args.dim,
        from_ranks: args.from,
        to_ranks: args.to,
        head_bytes: bytes,
        write_source_seconds,
        reshard_seconds: seconds,
        reshard_mb_per_s: bytes as f64 / 1e6 / seconds,
        peak_rss_anon_mib: anon,
        peak_rss_total_mib: peak_total as f64 / 1024.0,
        rss_anon_goal_mib: goal,
        rss_anon_under_goal: anon < goal,
    })
}
