//! `cargo xtask serve` and `cargo xtask encode`: the embedding server of plsc-serve and its
//! client on the command line.
//!
//! - `serve --model MODEL_DIR`: loads an export (`cargo xtask export`, or a training run's
//!   `runs/<time>/model/`) and serves `POST /v1/encode`, PLSC's
//!   `POST /FaceClassifyService/inference`, `GET /healthz`, `GET /v1/model`, `GET /metrics`
//!   until SIGINT or SIGTERM, answering the requests in flight before it exits.
//! - `encode --server ADDR IMAGE...`: one JSON line per image, `{"image": path, "embedding": [...]}`.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use clap::Args;
use plsc_serve::{Client, EncodeOptions, ServeConfig};

/// Arguments of `cargo xtask serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Exported model directory (model.json + backbone.safetensors).
    #[arg(long, value_name = "MODEL_DIR")]
    model: PathBuf,
    /// Address to listen on (only there; 0.0.0.0 listens on every interface).
    #[arg(long, default_value = "127.0.0.1")]
    addr: IpAddr,
    /// Port to listen on (0 picks a free one: the line `listening on ADDR` on stdout names it).
    #[arg(long, default_value_t = 8010)]
    port: u16,
    /// Most images per backbone run; 1 turns batching off.
    #[arg(long, default_value_t = 64)]
    max_batch: usize,
    /// Longest wait, in milliseconds, for more requests to join a batch after its first.
    #[arg(long, default_value_t = 5.0)]
    max_wait_ms: f64,
    /// Inference threads, each with its own copy of the model.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Largest request body in MiB (413 above).
    #[arg(long, default_value_t = 32)]
    max_body_mib: usize,
    /// Most images per request (413 above).
    #[arg(long, default_value_t = 256)]
    max_images: usize,
    /// Longest time per request in seconds (504 after).
    #[arg(long, default_value_t = 30.0)]
    timeout_s: f64,
    /// Most images waiting for a worker (503 with Retry-After above).
    #[arg(long, default_value_t = 1024)]
    max_queue: usize,
    /// Where the backbone runs: `cpu`, or `cuda` / `cuda:N` (a GPU; the command line built
    /// with `--features cuda`). Decoding stays on the CPU.
    #[arg(long, default_value = "cpu")]
    device: String,
}

/// Runs `cargo xtask serve`.
pub fn run_serve(args: ServeArgs) -> Result<()> {
    ensure!(
        args.max_wait_ms.is_finite() && args.max_wait_ms >= 0.0,
        "--max-wait-ms must be 0 or more"
    );
    ensure!(
        args.timeout_s.is_finite() && args.timeout_s > 0.0,
        "--timeout-s must be more than 0"
    );
    let config = ServeConfig {
        max_batch: args.max_batch,
        max_wait: Duration::from_secs_f64(args.max_wait_ms / 1e3),
        workers: args.workers,
        max_body_bytes: args.max_body_mib << 20,
        max_images_per_request: args.max_images,
        request_timeout: Duration::from_secs_f64(args.timeout_s),
        max_queue_images: args.max_queue,
        device: args.device.parse()?,
        ..ServeConfig::default()
    };
    let addr = SocketAddr::new(args.addr, args.port);
    plsc_serve::serve_blocking(&args.model, config, addr, |bound| {
        // The one line on stdout: scripts (and the CLI test) read the port from it.
        println!("listening on {bound}");
        let _ = std::io::stdout().flush();
    })
    .with_context(|| format!("serving {} on {addr}", args.model.display()))
}

/// Arguments of `cargo xtask encode`.
#[derive(Args, Debug)]
pub struct EncodeArgs {
    /// Server address `host:port`; repeat or separate with commas for several (used in turn,
    /// with a retry on the next when one fails).
    #[arg(long, value_name = "ADDR", value_delimiter = ',', required = true)]
    server: Vec<String>,
    /// The flip test: the sum of each image's and its mirror image's embedding.
    #[arg(long)]
    flip: bool,
    /// Unit-length embeddings.
    #[arg(long)]
    normalize: bool,
    /// Timeout per request in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout_s: f64,
    /// Images (JPEG, PNG, PNM; aligned face crops for face models).
    #[arg(value_name = "IMAGE", required = true)]
    images: Vec<PathBuf>,
}

/// Runs `cargo xtask encode`: reads the images, sends them in requests within the server's
/// limits, prints one JSON line per image.
pub fn run_encode(args: EncodeArgs) -> Result<()> {
    ensure!(
        args.timeout_s.is_finite() && args.timeout_s > 0.0,
        "--timeout-s must be more than 0"
    );
    let client = Client::connect_all(args.server.iter().cloned())?
        .with_timeout(Duration::from_secs_f64(args.timeout_s));
    let limits = client
        .model()
        .with_context(|| format!("asking {} for its model", args.server.join(", ")))?
        .limits;
    let options = EncodeOptions {
        flip: args.flip,
        normalize: args.normalize,
    };
    // Base64 grows the bytes by 4/3; keep requests well inside the body limit.
    let max_bytes = limits.max_body_bytes / 2;
    let mut stdout = std::io::stdout().lock();
    let mut start = 0;
    while start < args.images.len() {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while start + batch.len() < args.images.len() && batch.len() < limits.max_images_per_request
        {
            let path = &args.images[start + batch.len()];
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            if !batch.is_empty() && bytes + data.len() > max_bytes {
                break;
            }
            bytes += data.len();
            batch.push(data);
        }
        let paths = &args.images[start..start + batch.len()];
        let embeddings = client.encode_with(&batch, options).map_err(|e| match &e {
            plsc_serve::ServeError::Server { index: Some(i), .. } => {
                anyhow::anyhow!("{}: {e}", paths[*i].display())
            }
            _ => anyhow::Error::new(e),
        })?;
        for (path, embedding) in paths.iter().zip(embeddings) {
            let line = serde_json::json!({
                "image": path.display().to_string(),
                "embedding": embedding,
            });
            writeln!(stdout, "{line}")?;
        }
        start += batch.len();
    }
    Ok(())
}
