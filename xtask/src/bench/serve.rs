//! `cargo xtask bench serve`: requests per second and latency of the embedding server on
//! loopback, single-image requests, at concurrency 1 and 16 (by default), with dynamic
//! batching on (`--max-batch`, `--max-wait-ms`) and off (batches of one, no wait). The model
//! is a seeded `iresnet_tiny` written to a scratch folder; the server runs in this process on
//! 127.0.0.1 with an ephemeral port; clients are threads with their own connection. Every
//! cell is bounded by `--requests` and `--seconds`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use burn::backend::Flex;
use clap::Args;
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use plsc_models::{Backbone, BackboneConfig};
use plsc_serve::{Client, RunningServer, ServeConfig, ServeModel, write_model_dir};
use serde::Serialize;

use plsc_train::machine::machine_info;

#[derive(Args)]
pub struct ServeBenchArgs {
    /// Registered backbone to serve (seeded weights).
    #[arg(long, default_value = "iresnet_tiny")]
    model: String,
    /// Input side in pixels (the request images have this size: no resize).
    #[arg(long, default_value_t = 112)]
    input_size: usize,
    /// Embedding size.
    #[arg(long, default_value_t = 512)]
    embedding_size: usize,
    /// Concurrent clients, comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16])]
    concurrency: Vec<usize>,
    /// Timed requests per cell (after a warm-up of one request per client).
    #[arg(long, default_value_t = 400)]
    requests: usize,
    /// Longest time per cell in seconds; a cell stops early when it is reached.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Most images per backbone run with batching on.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Wait for more requests with batching on, in milliseconds.
    #[arg(long, default_value_t = 5.0)]
    max_wait_ms: f64,
    /// Inference threads of the server.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Scratch folder parent (default: the temp dir).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct Cell {
    batching: bool,
    max_batch: usize,
    max_wait_ms: f64,
    concurrency: usize,
    requests: usize,
    seconds: f64,
    requests_per_second: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    backbone_runs: u64,
    mean_images_per_run: f64,
    max_requests_per_run: u64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    transport: &'static str,
    model: String,
    parameters: usize,
    input: [usize; 3],
    embedding_size: usize,
    image_bytes: usize,
    images_per_request: usize,
    workers: usize,
    cells: Vec<Cell>,
    machine: plsc_train::machine::MachineInfo,
}

pub fn run(args: ServeBenchArgs) -> anyhow::Result<()> {
    ensure!(args.requests >= 1, "--requests must be at least 1");
    ensure!(
        args.concurrency.iter().all(|&c| c >= 1),
        "--concurrency values must be at least 1"
    );
    ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be more than 0"
    );
    super::run_in_scratch(args.dir.clone(), "serve", |scratch| run_in(&args, scratch))
}

fn run_in(args: &ServeBenchArgs, scratch: &Path) -> anyhow::Result<Report> {
    let model_dir = scratch.join("model");
    let backbone: Backbone<Flex> = BackboneConfig::new(args.model.clone())
        .with_input_size(args.input_size)
        .with_embedding_size(args.embedding_size)
        .init_seeded(1, &Default::default())
        .with_context(|| format!("building {}", args.model))?;
    write_model_dir(
        &backbone,
        &args.model,
        vec![127.5; 3],
        vec![128.0; 3],
        0,
        &model_dir,
    )?;
    let side = args.input_size as u32;
    let img = RgbImage::from_fn(side, side, |x, y| {
        Rgb([
            (x * 255 / side) as u8,
            (y * 255 / side) as u8,
            ((x ^ y) & 0xff) as u8,
        ])
    });
    let mut jpeg = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img).write_to(&mut jpeg, ImageFormat::Jpeg)?;
    let jpeg = jpeg.into_inner();

    let mut cells = Vec::new();
    for batching in [true, false] {
        for &concurrency in &args.concurrency {
            let config = ServeConfig {
                max_batch: if batching { args.max_batch } else { 1 },
                max_wait: if batching {
                    Duration::from_secs_f64(args.max_wait_ms / 1e3)
                } else {
                    Duration::ZERO
                },
                workers: args.workers,
                max_queue_images: 1024.max(concurrency),
                ..ServeConfig::default()
            };
            let model = ServeModel::load(&model_dir)?;
            let cell = run_cell(args, model, config, concurrency, &jpeg)?;
            tracing::info!(
                batching,
                concurrency,
                rps = cell.requests_per_second,
                p50_ms = cell.latency_ms_p50,
                "cell done"
            );
            cells.push(cell);
        }
    }
    Ok(Report {
        bench: "serve",
        transport: "HTTP/1.1 on 127.0.0.1, server and clients in one process",
        model: args.model.clone(),
        parameters: backbone.param_count(),
        input: [3, args.input_size, args.input_size],
        embedding_size: args.embedding_size,
        image_bytes: jpeg.len(),
        images_per_request: 1,
        workers: args.workers,
        cells,
        machine: machine_info(),
    })
}

fn run_cell(
    args: &ServeBenchArgs,
    model: ServeModel,
    config: ServeConfig,
    concurrency: usize,
    jpeg: &[u8],
) -> anyhow::Result<Cell> {
    let (max_batch, max_wait_ms) = (config.max_batch, config.max_wait.as_secs_f64() * 1e3);
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let server = RunningServer::start(model, config, loopback)?;
    let addr = server.local_addr().to_string();
    // Requests are handed out from one counter so that the cell stops at `--requests`; the
    // clock starts when every client has made its warm-up request.
    let next = std::sync::atomic::AtomicUsize::new(0);
    let limit = Duration::from_secs_f64(args.seconds);
    let ready = std::sync::Barrier::new(concurrency);
    let runs: Vec<(Instant, Instant, Vec<f64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                let (addr, next, ready) = (addr.clone(), &next, &ready);
                s.spawn(move || -> anyhow::Result<(Instant, Instant, Vec<f64>)> {
                    let client = Client::connect(addr)?;
                    let warm = client.encode(&[jpeg]);
                    ready.wait();
                    warm?;
                    let start = Instant::now();
                    let mut times = Vec::new();
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < args.requests
                        && start.elapsed() < limit
                    {
                        let t = Instant::now();
                        let e = client.encode(&[jpeg])?;
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                        ensure!(e.len() == 1, "one embedding per request");
                    }
                    Ok((start, Instant::now(), times))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            })
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let first = runs.iter().map(|r| r.0).min().context("no client ran")?;
    let last = runs.iter().map(|r| r.1).max().context("no client ran")?;
    let seconds = (last - first).as_secs_f64();
    let latencies: Vec<Vec<f64>> = runs.into_iter().map(|r| r.2).collect();
    let stats = server.handle().batch_stats();
    server.shutdown()?;
    let mut all: Vec<f64> = latencies.into_iter().flatten().collect();
    ensure!(!all.is_empty(), "no request finished in time");
    all.sort_by(f64::total_cmp);
    let quantile = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    Ok(Cell {
        batching: max_batch > 1,
        max_batch,
        max_wait_ms,
        concurrency,
        requests: all.len(),
        seconds,
        requests_per_second: all.len() as f64 / seconds,
        latency_ms_p50: quantile(0.5),
        latency_ms_p99: quantile(0.99),
        latency_ms_max: all[all.len() - 1],
        backbone_runs: stats.batches,
        mean_images_per_run: stats.images as f64 / stats.batches.max(1) as f64,
        max_requests_per_run: stats.max_requests,
    })
}
