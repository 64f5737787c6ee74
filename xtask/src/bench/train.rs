//! `cargo xtask bench train`: training steps of the whole loop (rank threads, backbone, sharded
//! head, gradient all-reduce) on synthetic batches, with each step's time split into data,
//! backbone (forward, backward, update), head (its collectives included) and the backbone's
//! gradient communication. Medians over the steps after the first (warm-up) one.

use crate::machine::machine_info;
use anyhow::bail;
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
    timed_steps: usize,
    step_seconds_median: f64,
    global_images_per_second: f64,
    data_seconds_median: f64,
    backbone_seconds_median: f64,
    head_seconds_median: f64,
    comm_seconds_median: f64,
    note: &'static str,
    machine: crate::machine::MachineInfo,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
        .with_log_period(u64::MAX);
    entry.validate()?;
    let device = Default::default();
    let backbone = plsc_train::job::build_backbone(&entry, &device)?;
    let pixels = args.batch * channels * side * side;
    let classes = args.classes as i64;
    let total = args.steps + 1;
    let outcome = train::<CpuBackend, _, _>(
        &entry,
        &backbone,
        &device,
        Plan {
            steps_per_epoch: total,
            total_steps: total,
            start_step: 0,
            data_steps_per_epoch: total,
        },
        |rank| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(rank as u64);
            let batches: Vec<_> = (0..total)
                .map(|_| {
                    Ok(LocalBatch {
                        images: (0..pixels)
                            .map(|_| rng.random_range(-1.0f32..1.0))
                            .collect(),
                        labels: (0..args.batch)
                            .map(|_| rng.random_range(0..classes))
                            .collect(),
                    })
                })
                .collect();
            Ok(Box::new(batches.into_iter()))
        },
        Outputs::default(),
    )?;
    let timed: Vec<StepTiming> = outcome.steps[1..].to_vec();
    let step = median(
        timed
            .iter()
            .map(|t| t.data_s + t.backbone_s + t.head_s + t.comm_s)
            .collect(),
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
        timed_steps: timed.len(),
        step_seconds_median: step,
        global_images_per_second: entry.global_batch() as f64 / step,
        data_seconds_median: median(timed.iter().map(|t| t.data_s).collect()),
        backbone_seconds_median: median(timed.iter().map(|t| t.backbone_s).collect()),
        head_seconds_median: median(timed.iter().map(|t| t.head_s).collect()),
        comm_seconds_median: median(timed.iter().map(|t| t.comm_s).collect()),
        note: "rank 0's step split; data = waiting for pre-made batches, backbone = forward + backward + clip + SGD, head = the sharded head's step with its collectives, comm = backbone gradient flatten + all-reduce",
        machine: machine_info(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
