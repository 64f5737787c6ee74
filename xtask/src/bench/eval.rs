//! `cargo xtask bench eval`: the verification pipeline's parts on LFW-sized inputs: reading a
//! `.bin` pickle (MB/s), decoding its 112x112 JPEGs (images/s on the rayon pool), building
//! flipped NCHW batches (images/s), and the metrics (10 folds, 400 + 4000 thresholds) on
//! 6000 pairs of 512-d embeddings. Medians over the repeats.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use plsc_data::decode::ImageSpec;
use plsc_data::synth::{SynthOptions, synth_image};
use plsc_eval::{BinPairs, PairSet, VerifyConfig};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// Arguments of `cargo xtask bench eval`.
#[derive(clap::Args, Debug)]
pub struct EvalBenchArgs {
    /// Pairs in the pickle and metrics parts (LFW: 6000).
    #[arg(long, default_value_t = 6000)]
    pairs: usize,
    /// Embedding size in the metrics part.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Distinct synthetic 112x112 JPEGs (the pickle repeats them up to 2 x pairs images; the
    /// decode part decodes each once).
    #[arg(long, default_value_t = 1200)]
    images: usize,
    /// Timed repeats of each part (the median is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    pickle: PickleReport,
    decode: DecodeReport,
    batches: BatchReport,
    metrics: MetricsReport,
    machine: plsc_train::machine::MachineInfo,
}

#[derive(Serialize)]
struct PickleReport {
    images: usize,
    bytes: usize,
    median_ms: f64,
    mb_per_s: f64,
}

#[derive(Serialize)]
struct DecodeReport {
    images: usize,
    size: &'static str,
    threads: usize,
    median_ms: f64,
    images_per_s: f64,
}

#[derive(Serialize)]
struct BatchReport {
    images: usize,
    flipped: bool,
    median_ms: f64,
    images_per_s: f64,
}

#[derive(Serialize)]
struct MetricsReport {
    pairs: usize,
    dim: usize,
    median_ms: f64,
    accuracy: f64,
}

fn median_ms(repeats: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(super::stats::median(&times))
}

/// Runs `cargo xtask bench eval`.
pub fn run(args: EvalBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.pairs >= 10 && args.images >= 2 && args.dim > 0,
        "need at least 10 pairs, 2 images and a positive embedding size"
    );
    let images = args.images & !1;
    tracing::info!(images, "encoding synthetic JPEGs");
    let opts = SynthOptions::default();
    let jpegs: Vec<Vec<u8>> = (0..images as u64)
        .map(|i| synth_image(&opts, i / 10, i % 10))
        .collect::<Result<_, _>>()
        .context("synthesising test images")?;

    // Pickle: LFW-sized (2 x pairs images), the distinct JPEGs repeated.
    let issame: Vec<bool> = (0..args.pairs).map(|i| i % 2 == 0).collect();
    let all: Vec<Vec<u8>> = (0..2 * args.pairs)
        .map(|i| jpegs[i % jpegs.len()].clone())
        .collect();
    let data = plsc_eval::encode_bin(&all, &issame)?;
    let path = Path::new("bench.bin");
    let pickle_ms = median_ms(args.repeats, || {
        let read = plsc_eval::parse_bin(&data, path)?;
        anyhow::ensure!(read.images.len() == all.len(), "pickle lost images");
        Ok(())
    })?;

    // Decode: each distinct JPEG once, on the rayon pool.
    let pairs = BinPairs {
        images: jpegs,
        issame: (0..images / 2).map(|i| i % 2 == 0).collect(),
    };
    let mut set = None;
    let decode_ms = median_ms(args.repeats, || {
        set = Some(PairSet::decode(
            "bench",
            &pairs,
            &ImageSpec::default(),
            path,
        )?);
        Ok(())
    })?;
    let set = set.context("no decode run")?;

    // Flipped NCHW batches of up to 128 images.
    let batch = set.images().min(128);
    let batch_ms = median_ms(args.repeats, || {
        let b = set.batch_nchw(0..batch, true);
        anyhow::ensure!(b.len() == batch * 3 * 112 * 112, "short batch");
        Ok(())
    })?;

    // Metrics on correlated random embeddings.
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut rows = vec![0.0f32; 2 * args.pairs * args.dim];
    for (p, pair) in rows.chunks_exact_mut(2 * args.dim).enumerate() {
        let (a, b) = pair.split_at_mut(args.dim);
        for (x, y) in a.iter_mut().zip(b.iter_mut()) {
            *x = rng.random_range(-1.0..1.0);
            let noise: f32 = rng.random_range(-1.0..1.0);
            *y = if issame[p] { *x + 0.8 * noise } else { noise };
        }
    }
    let mut accuracy = 0.0;
    let metrics_ms = median_ms(args.repeats, || {
        let v = plsc_eval::verify_embeddings(
            &rows,
            args.dim,
            &issame,
            &VerifyConfig::default(),
            "bench",
        )?;
        accuracy = v.metrics.accuracy_mean;
        Ok(())
    })?;

    let report = Report {
        bench: "eval",
        pickle: PickleReport {
            images: all.len(),
            bytes: data.len(),
            median_ms: pickle_ms,
            mb_per_s: data.len() as f64 / 1e6 / (pickle_ms / 1e3),
        },
        decode: DecodeReport {
            images,
            size: "112x112 RGB JPEG",
            threads: rayon::current_num_threads(),
            median_ms: decode_ms,
            images_per_s: images as f64 / (decode_ms / 1e3),
        },
        batches: BatchReport {
            images: batch,
            flipped: true,
            median_ms: batch_ms,
            images_per_s: batch as f64 / (batch_ms / 1e3),
        },
        metrics: MetricsReport {
            pairs: args.pairs,
            dim: args.dim,
            median_ms: metrics_ms,
            accuracy,
        },
        machine: plsc_train::machine::machine_info(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
