//! `cargo xtask bench train`: training steps of the whole loop (rank threads, backbone, sharded
//! head, gradient all-reduce) on synthetic batches, with each step's time split into data,
//! backbone (forward, backward, update), head (its collectives included) and the backbone's
//! gradient communication. Medians over the steps after the first (warm-up) one.
//!
//! `--device cuda` runs the same loop on one GPU (burn-cuda, the head on the device) and adds
//! the peak GPU memory the driver reports for this process (`nvidia-smi`, polled while the
//! steps run); needs xtask built with `--features cuda`.

use super::stats::median;
use crate::machine::machine_info;
use anyhow::bail;
use burn::tensor::backend::AutodiffBackend;
use clap::Args;
use plsc_train::trainer::{LocalBatch, Outputs, Plan, StepTiming, train};
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
    /// Peak GPU memory of this process as the driver reports it (MiB; GPU runs only).
    gpu_peak_memory_mib: Option<f64>,
    step_seconds_median: f64,
    global_images_per_second: f64,
    data_seconds_median: f64,
    backbone_seconds_median: f64,
    head_seconds_median: f64,
    comm_seconds_median: f64,
    note: &'static str,
    machine: crate::machine::MachineInfo,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if args.steps == 0 || args.batch == 0 || args.ranks == 0 {
        bail!("--steps, --batch and --ranks must be positive");
    }
    let tiny = args.model == "iresnet_tiny";
    let side = args.input_size.unwrap_or(if tiny { 28 } else { 112 });
    let channels = args.channels.unwrap_or(if tiny { 1 } else { 3 });
    let entry = Entry::new()
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
    entry.validate()?;
    let (steps, gpu_peak) = match entry.device()? {
        plsc_train::device::Device::Cpu => (
            timed_steps::<CpuBackend>(&entry, &args, &Default::default())?,
            None,
        ),
        plsc_train::device::Device::Cuda(index) => cuda::run(&entry, &args, index.unwrap_or(0))?,
    };
    let timed: Vec<StepTiming> = steps[1..].to_vec();
    let step = median(
        &timed
            .iter()
            .map(|t| t.data_s + t.backbone_s + t.head_s + t.comm_s)
            .collect::<Vec<_>>(),
    );
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
        gpu_peak_memory_mib: gpu_peak,
        step_seconds_median: step,
        global_images_per_second: entry.global_batch() as f64 / step,
        data_seconds_median: median(&timed.iter().map(|t| t.data_s).collect::<Vec<_>>()),
        backbone_seconds_median: median(&timed.iter().map(|t| t.backbone_s).collect::<Vec<_>>()),
        head_seconds_median: median(&timed.iter().map(|t| t.head_s).collect::<Vec<_>>()),
        comm_seconds_median: median(&timed.iter().map(|t| t.comm_s).collect::<Vec<_>>()),
        note: "rank 0's step split; data = waiting for pre-made batches, backbone = forward + backward + clip + SGD, head = the sharded head's step with its collectives, comm = backbone gradient flatten + all-reduce; on a GPU the kernels run asynchronously, so the split shows where the host waited, and only the step total is the time of a step",
        machine: machine_info(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
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
        Plan {
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
        let probe = crate::bench::gpu_memory::PeakProbe::start();
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
