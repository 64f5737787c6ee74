//! `cargo xtask bench data`: shuffle-and-split throughput and peak anonymous memory on a
//! generated input (default 2 GiB), and decode+augment images/s for 112x112 JPEGs.
//!
//! Shuffle-split runs as a child process (`xtask data shuffle-split`) whose `RssAnon`
//! (anonymous resident memory; pages of the memory-mapped input do not count) is sampled
//! from `/proc/<pid>/status` every 10 ms; `VmHWM` (peak RSS including file pages) is read
//! at the end. The input was just written, so it is read from the page cache.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use plsc_data::decode::ImageSpec;
use plsc_data::format::encode_line;
use plsc_data::shuffle::Remainder;
use plsc_data::stream::{BatchStream, Position, StreamConfig};
use plsc_data::synth::{SynthFormat, SynthOptions, synth, synth_image};
use plsc_data::writer::WriteOptions;
use serde::Serialize;

use super::stats::{median, parse_size};
use plsc_train::machine::{free_bytes, status_kib};

/// Arguments of `cargo xtask bench data`.
#[derive(clap::Args, Debug)]
pub struct DataArgs {
    /// Size of the generated shuffle-split input; suffixes MiB and GiB accepted.
    #[arg(long, default_value = "2GiB", value_parser = parse_size)]
    size: u64,
    /// Parts of the split.
    #[arg(long, default_value_t = 8)]
    parts: usize,
    /// Scratch folder (created, then removed) [default: the system temp folder].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// JPEG images (112x112) in the decode benchmark's data set.
    #[arg(long, default_value_t = 1024)]
    images: u64,
    /// Batch size of the decode benchmark.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Timed passes over the decode data set (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the shuffle-split part.
    #[arg(long)]
    no_split: bool,
}

#[derive(Serialize)]
struct SplitReport {
    input_bytes: u64,
    lines: u64,
    parts: usize,
    seconds: f64,
    index_seconds: f64,
    write_seconds: f64,
    mb_per_s: f64,
    peak_rss_anon_mib: f64,
    peak_rss_total_mib: f64,
    rss_anon_goal_mib: f64,
    rss_anon_under_goal: bool,
    generate_seconds: f64,
}

#[derive(Serialize)]
struct DecodeReport {
    images: u64,
    batch: usize,
    size: u32,
    jpeg_bytes_mean: f64,
    threads: usize,
    pass_seconds_median: f64,
    images_per_s_median: f64,
    single_thread_images_per_s: f64,
}

#[derive(Serialize)]
struct Report {
    shuffle_split: Option<SplitReport>,
    decode_augment: DecodeReport,
    machine: plsc_train::machine::MachineInfo,
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    super::run_in_scratch(args.dir.clone(), "data", |scratch| run_in(&args, scratch))
}

fn run_in(args: &DataArgs, scratch: &Path) -> anyhow::Result<Report> {
    let shuffle_split = if args.no_split {
        None
    } else {
        Some(bench_split(args, scratch)?)
    };
    let decode_augment = bench_decode(args, scratch)?;
    Ok(Report {
        shuffle_split,
        decode_augment,
        machine: plsc_train::machine::machine_info(),
    })
}

fn bench_split(args: &DataArgs, scratch: &Path) -> anyhow::Result<SplitReport> {
    let need = args.size * 2 + (256 << 20);
    let free = free_bytes(scratch).ok_or_else(|| {
        anyhow::anyhow!("df did not report the free space of {}", scratch.display())
    })?;
    if free < need {
        bail!(
            "{} has {:.1} GiB free; the benchmark needs {:.1} GiB (input + output); \
             use --size or --dir",
            scratch.display(),
            free as f64 / (1u64 << 30) as f64,
            need as f64 / (1u64 << 30) as f64
        );
    }
    // Input: lines of real 112x112 JPEGs (a pool of 256, labels varied), in 4 files.
    let t0 = Instant::now();
    let opts = SynthOptions {
        classes: 64,
        per_class: 4,
        size: 112,
        ..SynthOptions::default()
    };
    let pool: Vec<Vec<u8>> = (0..256u64)
        .map(|i| synth_image(&opts, i / 4, i % 4))
        .collect::<Result<_, _>>()?;
    let input_dir = scratch.join("input");
    std::fs::create_dir_all(&input_dir)?;
    let files = 4u64;
    let mut names = Vec::new();
    let mut lines = 0u64;
    let mut line = Vec::new();
    for f in 0..files {
        let name = format!("part-{f:05}.txt");
        let path = input_dir.join(&name);
        let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut written = 0u64;
        while written < args.size / files {
            line.clear();
            encode_line(
                &pool[(lines % 256) as usize],
                (lines % 100_000) as i64,
                &mut line,
            );
            w.write_all(&line)?;
            written += line.len() as u64;
            lines += 1;
        }
        w.flush()?;
        names.push(name);
    }
    std::fs::write(input_dir.join("file_list.txt"), names.join("\n") + "\n")?;
    let generate_seconds = t0.elapsed().as_secs_f64();
    tracing::info!(
        "generated {lines} lines ({:.2} GiB) in {generate_seconds:.1} s",
        args.size as f64 / (1u64 << 30) as f64
    );

    let exe = std::env::current_exe()?;
    let output = scratch.join("output");
    let mut child = Command::new(exe)
        .args([
            "data",
            "shuffle-split",
            "--json",
            "--no-progress",
            "--seed",
            "1",
        ])
        .arg("--parts")
        .arg(args.parts.to_string())
        .arg("--input")
        .arg(input_dir.join("file_list.txt"))
        .arg("--output")
        .arg(&output)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the shuffle-split child")?;
    let pid = child.id();
    let mut peak_anon = 0u64;
    let mut peak_total = 0u64;
    loop {
        if let Some(a) = status_kib(pid, "RssAnon:") {
            peak_anon = peak_anon.max(a);
        }
        if let Some(h) = status_kib(pid, "VmHWM:") {
            peak_total = peak_total.max(h);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "shuffle-split child failed");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let seconds = summary["seconds"].as_f64().context("seconds")?;
    let input_bytes = summary["input_bytes"].as_u64().context("input_bytes")?;
    let goal = 512.0;
    let anon_mib = peak_anon as f64 / 1024.0;
    Ok(SplitReport {
        input_bytes,
        lines: summary["lines"].as_u64().context("lines")?,
        parts: args.parts,
        seconds,
        index_seconds: summary["index_seconds"].as_f64().context("index_seconds")?,
        write_seconds: summary["write_seconds"].as_f64().context("write_seconds")?,
        mb_per_s: input_bytes as f64 / 1e6 / seconds,
        peak_rss_anon_mib: anon_mib,
        peak_rss_total_mib: peak_total as f64 / 1024.0,
        rss_anon_goal_mib: goal,
        rss_anon_under_goal: anon_mib < goal,
        generate_seconds,
    })
}

fn decode_pass(stream: &BatchStream, epoch: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    for b in stream.iter(Position { epoch, step: 0 }, Some(epoch + 1)) {
        let b = b?;
        std::hint::black_box(&b.images);
    }
    Ok(t.elapsed().as_secs_f64())
}

fn bench_decode(args: &DataArgs, scratch: &Path) -> anyhow::Result<DecodeReport> {
    let per_class = 8;
    let classes = args.images.div_ceil(per_class);
    let dir = scratch.join("jpeg");
    let opts = SynthOptions {
        classes,
        per_class,
        size: 112,
        channels: 3,
        format: SynthFormat::Jpeg,
        quality: 90,
        seed: 1,
    };
    let s = synth(
        &opts,
        &WriteOptions {
            output: dir.clone(),
            parts: None,
            seed: 0,
            remainder: Remainder::Pad,
            skip_bad: false,
            progress: false,
        },
    )?;
    let images = s.samples;
    let jpeg_bytes_mean = s.bytes as f64 * 3.0 / 4.0 / images as f64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let make = |t: usize| {
        BatchStream::from_file_list(
            &dir.join("file_list.txt"),
            StreamConfig {
                batch_size: args.batch,
                spec: ImageSpec::default(),
                threads: Some(t),
                prefetch: 2,
                ..StreamConfig::default()
            },
        )
    };
    let stream = make(threads)?;
    let per_pass = stream.steps_per_epoch() * args.batch as u64;
    decode_pass(&stream, 0)?; // warm-up
    let times: Vec<f64> = (1..=args.repeats as u64)
        .map(|e| decode_pass(&stream, e))
        .collect::<anyhow::Result<_>>()?;
    let median = median(&times);
    let single = make(1)?;
    let t1 = decode_pass(&single, 0)?;
    Ok(DecodeReport {
        images: per_pass,
        batch: args.batch,
        size: 112,
        jpeg_bytes_mean,
        threads,
        pass_seconds_median: median,
        images_per_s_median: per_pass as f64 / median,
        single_thread_images_per_s: per_pass as f64 / t1,
    })
}
