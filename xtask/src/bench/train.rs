//! `cargo xtask bench train`: training steps of the whole loop (rank threads, backbone, sharded
//! head, gradient all-reduce) on synthetic batches, with each step's time split into data,
//! backbone (forward, backward, update), head (its collectives included) and the backbone's
//! gradient communication. Medians over the steps after the first (warm-up) one.
//!
//! `--peer-python PYTHON` also runs the PyTorch peer (`scripts/peers/arcface_torch_peer.py`,
//! arcface_torch's IResNet and PartialFC_V2 in one process with this process's thread count) on
//! the same model, loss, input and global batch, alternating with our steps for `--rounds`
//! rounds, and reports the ratio of images/s in each round and their median.
//!
//! `--device cuda` runs the same loop on one GPU (burn-cuda, the head on the device) and adds
//! the peak GPU memory the driver reports for this process (`nvidia-smi`, polled while the
//! steps run); needs xtask built with `--features cuda`.

use super::peer::{Peer, PeerRun};
use super::stats::median;
use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use plsc_train::machine::machine_info;
use plsc_train::trainer::{LocalBatch, Outputs, RunPlan, StepTiming, train};
use plsc_train::{CpuBackend, Entry};
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Args)]
pub struct TrainArgs {
    /// Backbone name.
    #[arg(long, default_value = "iresnet_tiny")]
    model: String,
    /// Images per rank per step.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Rank threads.
    #[arg(long, default_value_t = 2)]
    ranks: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 10)]
    steps: u64,
    /// Classes of the head.
    #[arg(long, default_value_t = 10_000)]
    classes: usize,
    /// Embedding size.
    #[arg(long, default_value_t = 512)]
    embedding_size: usize,
    /// Input side (default: 28 for iresnet_tiny, 112 otherwise).
    #[arg(long)]
    input_size: Option<usize>,
    /// Input channels (default: 1 for iresnet_tiny, 3 otherwise).
    #[arg(long)]
    channels: Option<usize>,
    /// Loss.
    #[arg(long, default_value = "dist_arcface")]
    loss: String,
    /// Partial FC sampling ratio.
    #[arg(long, default_value_t = 1.0)]
    sample_ratio: f64,
    /// Mixed precision (the head's products in f16, dynamic loss scaling).
    #[arg(long)]
    mixed_precision: bool,
    /// `cpu` (rank threads, the head's CPU kernel) or `cuda` / `cuda:N` (one GPU: --ranks must
    /// be 1; xtask built with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// ArcFace scale `s` (default: the loss's own, 64); the shipped job uses 32.
    #[arg(long)]
    scale: Option<f64>,
    /// A Python with PyTorch (`pip install torch`): also run the PyTorch peer
    /// (scripts/peers/arcface_torch_peer.py) on the same recipe and report the ratio. CPU only.
    #[arg(long)]
    peer_python: Option<std::path::PathBuf>,
    /// Rounds of (our steps, the peer's steps), alternating, so both see the same load; the
    /// report gives each round's ratio and their median.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
}

/// The peer's side of the report.
#[derive(Serialize)]
struct PeerReport {
    command: String,
    torch: String,
    threads: usize,
    images_per_second_per_round: Vec<f64>,
    images_per_second_median: f64,
    /// Our images/s over the peer's, each round (same load).
    ratio_per_round: Vec<f64>,
    ratio_median: f64,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    model: String,
    loss: String,
    ranks: usize,
    batch_per_rank: usize,
    global_batch: usize,
    classes: usize,
    embedding_size: usize,
    input: [usize; 3],
    device: String,
    sample_ratio: f64,
    mixed_precision: bool,
    timed_steps: usize,
    rounds: usize,
    images_per_second_per_round: Vec<f64>,
    /// Peak GPU memory of this process as the driver reports it (MiB; GPU runs only).
    gpu_peak_memory_mib: Option<f64>,
    step_seconds_median: f64,
    global_images_per_second: f64,
    data_seconds_median: f64,
    backbone_seconds_median: f64,
    head_seconds_median: f64,
    comm_seconds_median: f64,
    /// The PyTorch peer on the same recipe (`--peer-python`).
    peer: Option<PeerReport>,
    note: &'static str,
    machine: plsc_train::machine::MachineInfo,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.steps == 0 || args.batch == 0 || args.ranks == 0 || args.rounds == 0 {
        bail!("--steps, --batch, --ranks and --rounds must be positive");
    }
    let tiny = args.model == "iresnet_tiny";
    let side = args.input_size.unwrap_or(if tiny { 28 } else { 112 });
    let channels = args.channels.unwrap_or(if tiny { 1 } else { 3 });
    let mut entry = Entry::new()
        .with_num_classes(args.classes)
        .with_embedding_size(args.embedding_size)
        .with_loss(&args.loss)
        .with_model(&args.model)
        .with_input_size(side)
        .with_in_channels(channels)
        .with_train_batch_size(args.batch)
        .with_ranks(args.ranks)
        .with_train_steps(args.steps + 1)
        .with_with_test(false)
        .with_sample_ratio(args.sample_ratio)
        .with_mixed_precision(args.mixed_precision)
        .with_device(&args.device)
        .with_log_period(u64::MAX);
    entry.scale = args.scale;
    entry.validate()?;
    let cpu = matches!(entry.device()?, plsc_train::device::Device::Cpu);
    let peer = match &args.peer_python {
        Some(python) if cpu => Some(Peer::new(python)?),
        Some(_) => {
            bail!("--peer-python runs on the CPU only (the GPU peer is in scripts/gpu-check.sh)")
        }
        None => None,
    };
    let peer_args = peer_args(&entry, &args)?;
    let step_total = |t: &StepTiming| t.data_s + t.backbone_s + t.head_s + t.comm_s;
    let (mut timed, mut ours_per_round, mut peer_runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut gpu_peak = None;
    for round in 0..args.rounds {
        tracing::info!(round, "our steps");
        let steps = match entry.device()? {
            plsc_train::device::Device::Cpu => {
                timed_steps::<CpuBackend>(&entry, &args, &Default::default())?
            }
            plsc_train::device::Device::Cuda(index) => {
                let (steps, peak) = cuda::run(&entry, &args, index.unwrap_or(0))?;
                gpu_peak = match (gpu_peak, peak) {
                    (Some(a), Some(b)) => Some(f64::max(a, b)),
                    (a, b) => a.or(b),
                };
                steps
            }
        };
        let round_steps = &steps[1..];
        let round_step = median(&round_steps.iter().map(step_total).collect::<Vec<_>>());
        ours_per_round.push(entry.global_batch() as f64 / round_step);
        timed.extend_from_slice(round_steps);
        if let Some(peer) = &peer {
            tracing::info!(round, "the peer's steps");
            peer_runs.push(peer.run(&peer_args)?);
        }
    }
    let step = median(&timed.iter().map(step_total).collect::<Vec<_>>());
    let peer = peer.map(|p| peer_report(&p, &peer_args, &peer_runs, &ours_per_round));
    let report = Report {
        bench: "train",
        model: args.model,
        loss: args.loss,
        ranks: args.ranks,
        batch_per_rank: args.batch,
        global_batch: entry.global_batch(),
        classes: args.classes,
        embedding_size: args.embedding_size,
        input: [channels, side, side],
        device: args.device,
        sample_ratio: args.sample_ratio,
        mixed_precision: args.mixed_precision,
        timed_steps: timed.len(),
        rounds: args.rounds,
        images_per_second_per_round: ours_per_round,
        gpu_peak_memory_mib: gpu_peak,
        step_seconds_median: step,
        global_images_per_second: entry.global_batch() as f64 / step,
        data_seconds_median: median(&timed.iter().map(|t| t.data_s).collect::<Vec<_>>()),
        backbone_seconds_median: median(&timed.iter().map(|t| t.backbone_s).collect::<Vec<_>>()),
        head_seconds_median: median(&timed.iter().map(|t| t.head_s).collect::<Vec<_>>()),
        comm_seconds_median: median(&timed.iter().map(|t| t.comm_s).collect::<Vec<_>>()),
        peer,
        note: "rank 0's step split; data = waiting for pre-made batches, backbone = forward + backward + clip + SGD, head = the sharded head's step with its collectives, comm = backbone gradient flatten + all-reduce; on a GPU the kernels run asynchronously, so the split shows where the host waited, and only the step total is the time of a step",
        machine: machine_info(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// The peer's arguments for `entry`'s recipe: the same model, input, embedding, classes,
/// ArcFace margin and scale, sample ratio and global batch, in one process on this process's
/// threads, one warm-up step and `--steps` timed ones.
fn peer_args(entry: &Entry, args: &TrainArgs) -> anyhow::Result<Vec<String>> {
    let loss = entry.loss_config()?;
    let plsc_core::LossKind::Margin(margin) = loss.kind else {
        bail!(
            "the PyTorch peer trains ArcFace only; --loss {} has no peer",
            args.loss
        );
    };
    if margin.m1 != 1.0 || margin.m3 != 0.0 {
        bail!(
            "the PyTorch peer trains ArcFace only (m1 = 1, m3 = 0); --loss {} has no peer",
            args.loss
        );
    }
    let mut v = vec![
        "--mode=train".to_string(),
        "--device=cpu".to_string(),
        "--warmup=1".to_string(),
        format!("--threads={}", rayon::current_num_threads()),
        format!("--model={}", entry.model),
        format!("--channels={}", entry.in_channels),
        format!("--input-size={}", entry.input_size),
        format!("--embedding-size={}", entry.embedding_size),
        format!("--classes={}", entry.num_classes),
        format!("--scale={}", margin.scale),
        format!("--margin={}", margin.m2),
        format!("--sample-ratio={}", entry.sample_ratio),
        format!("--batch={}", entry.global_batch()),
        format!("--steps={}", args.steps),
    ];
    if entry.mixed_precision {
        v.push("--amp".into());
    }
    Ok(v)
}

fn peer_report(peer: &Peer, args: &[String], runs: &[PeerRun], ours: &[f64]) -> PeerReport {
    let ips: Vec<f64> = runs
        .iter()
        .map(|r| r.images_per_second.unwrap_or(f64::NAN))
        .collect();
    let ratio: Vec<f64> = ours.iter().zip(&ips).map(|(o, p)| o / p).collect();
    PeerReport {
        command: peer.command_line(args),
        torch: runs.first().map(|r| r.torch.clone()).unwrap_or_default(),
        threads: runs.first().map_or(0, |r| r.threads),
        images_per_second_median: median(&ips),
        images_per_second_per_round: ips,
        ratio_median: median(&ratio),
        ratio_per_round: ratio,
    }
}

/// Runs `steps + 1` training steps of `entry` on backend `B` with synthetic batches (two
/// distinct ones per rank, alternating); every step's time split.
fn timed_steps<B: AutodiffBackend>(
    entry: &Entry,
    args: &TrainArgs,
    device: &B::Device,
) -> anyhow::Result<Vec<StepTiming>> {
    let (side, channels) = (entry.input_size, entry.in_channels);
    let backbone = plsc_train::job::build_backbone::<B>(entry, device)?;
    let pixels = args.batch * channels * side * side;
    let classes = args.classes as i64;
    let total = args.steps + 1;
    let outcome = train::<B, _, _>(
        entry,
        &backbone,
        device,
        RunPlan {
            steps_per_epoch: total,
            total_steps: total,
            start_step: 0,
            data_steps_per_epoch: total,
        },
        |rank| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(rank as u64);
            let two: Vec<LocalBatch> = (0..2)
                .map(|_| LocalBatch {
                    images: (0..pixels)
                        .map(|_| rng.random_range(-1.0f32..1.0))
                        .collect(),
                    labels: (0..args.batch)
                        .map(|_| rng.random_range(0..classes))
                        .collect(),
                })
                .collect();
            Ok(Box::new(
                (0..total as usize).map(move |i| Ok(two[i % 2].clone())),
            ))
        },
        Outputs::default(),
    )?;
    Ok(outcome.steps)
}

#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    /// The steps on GPU `index`, and the peak memory the driver reported meanwhile (MiB).
    pub fn run(
        entry: &Entry,
        args: &TrainArgs,
        index: usize,
    ) -> anyhow::Result<(Vec<StepTiming>, Option<f64>)> {
        type Gpu = burn::backend::Autodiff<burn::backend::Cuda>;
        plsc_models::device::check_cuda(index)?;
        let device = burn::backend::cuda::CudaDevice::new(index);
        let probe = plsc_train::gpu_memory::PeakProbe::start();
        let steps = timed_steps::<Gpu>(entry, args, &device)?;
        Ok((steps, probe.stop()))
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    pub fn run(
        _entry: &Entry,
        _args: &TrainArgs,
        _index: usize,
    ) -> anyhow::Result<(Vec<StepTiming>, Option<f64>)> {
        bail!("`bench train --device cuda` needs xtask built with `--features cuda`")
    }
}
