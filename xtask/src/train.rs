//! `cargo xtask train`: a training run from an [`Entry`]: the shipped Fashion-MNIST job by
//! default, or `--config FILE` (TOML or JSON), with flags that override single settings.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use plsc_train::{Entry, LrPolicy};

/// The shipped job's settings.
pub const DEFAULT_CONFIG: &str = "datasets/fashion_mnist/train.toml";

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Settings file (TOML or JSON, every key optional; see `docs` in plsc-train's `Entry`).
    /// Without it, the shipped Fashion-MNIST job (datasets/fashion_mnist/train.toml) runs.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the settings (after overrides) as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Class count.
    #[arg(long)]
    num_classes: Option<usize>,
    /// Embedding size.
    #[arg(long)]
    embedding_size: Option<usize>,
    /// Loss: softmax, arcface, cosface, sphereface, combined, each optionally `dist_` (sharded).
    #[arg(long)]
    loss: Option<String>,
    /// Margins and scale `m1,m2,m3,s` of cos(m1*theta + m2) - m3.
    #[arg(long, value_delimiter = ',', num_args = 4)]
    margins: Option<Vec<f64>>,
    /// Backbone (iresnet18/34/50/100, mbf, iresnet_tiny).
    #[arg(long)]
    model: Option<String>,
    /// Images per rank per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Epochs.
    #[arg(long)]
    epochs: Option<u64>,
    /// Steps (instead of epochs).
    #[arg(long)]
    steps: Option<u64>,
    /// Base learning rate, for a global batch of `lr_reference_batch` (512).
    #[arg(long)]
    lr: Option<f64>,
    /// `piecewise` or `poly`.
    #[arg(long)]
    lr_policy: Option<LrPolicy>,
    /// Piecewise boundaries in steps, comma separated.
    #[arg(long, value_delimiter = ',')]
    lr_steps: Option<Vec<u64>>,
    /// Warmup epochs.
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Training data folder (with file_list.txt).
    #[arg(long)]
    dataset_dir: Option<PathBuf>,
    /// Verification sets (.bin names or paths), comma separated.
    #[arg(long, value_delimiter = ',')]
    val_targets: Option<Vec<String>>,
    /// Verify every N steps (0: at the end only).
    #[arg(long)]
    test_period: Option<u64>,
    /// Log every N steps.
    #[arg(long)]
    log_period: Option<u64>,
    /// Training top-1/top-5 accuracy.
    #[arg(long)]
    calc_acc: Option<bool>,
    /// Parent folder of the run directory.
    #[arg(long)]
    model_save_dir: Option<PathBuf>,
    /// Verify during and after training.
    #[arg(long)]
    with_test: Option<bool>,
    /// Mixed precision with dynamic loss scaling.
    #[arg(long)]
    mixed_precision: Option<bool>,
    /// Partial FC sampling ratio.
    #[arg(long)]
    sample_ratio: Option<f64>,
    /// Seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Ranks: rank threads on the CPU; under `launch`, the number of processes (it must equal
    /// the launcher's world size: --nproc-per-node x --nnodes).
    #[arg(long)]
    ranks: Option<usize>,
    /// Where to train: `cpu` (default: rank threads, the head's CPU kernel), `cuda` (one GPU per
    /// process: GPU LOCAL_RANK under `launch`, else GPU 0) or `cuda:N`. CUDA needs the command
    /// line built with it: `cargo run -p xtask --features cuda,nccl -- train --device cuda`.
    #[arg(long)]
    device: Option<String>,
    /// Where the head's shard lives: `auto` (host on the CPU, device on a GPU), `host` or
    /// `device` (on the CPU: the generic tensor path a GPU runs, for comparisons).
    #[arg(long)]
    head_placement: Option<String>,
    /// How the head stores its weight and momentum: `f32` (default), `bf16` or `f16` (2 bytes
    /// per value instead of 4, updates stochastically rounded: for millions of classes; see
    /// docs/scale.md). A checkpoint resumes only into its own storage.
    #[arg(long)]
    head_storage: Option<String>,
    /// Root of the checkpoints (default: the run directory's `checkpoints/`).
    #[arg(long)]
    checkpoint_dir: Option<PathBuf>,
    /// Save a checkpoint every N steps (0: only at the end).
    #[arg(long)]
    checkpoint_period: Option<u64>,
    /// Keep the newest K checkpoints (0: all).
    #[arg(long)]
    keep_last: Option<usize>,
    /// Continue from the newest valid checkpoint: under --checkpoint-dir, else of the newest
    /// run in --model-save-dir (that run directory continues). Step, lr schedule, loss scale,
    /// data position, weights and momentum come back; with none yet, training starts afresh.
    #[arg(long, conflicts_with = "pretrained")]
    resume: bool,
    /// With --resume: when every checkpoint is damaged (renamed to step-<n>.damaged and kept),
    /// start from step 0 instead of failing.
    #[arg(long, requires = "resume")]
    restart: bool,
    /// Fine-tune from the weights of a checkpoint (a step-<n> directory or a root of them) on
    /// any rank count; the head only with --pretrained-head.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// With --pretrained: load the head rows too (same class count and embedding size).
    #[arg(long, requires = "pretrained")]
    pretrained_head: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl TrainArgs {
    /// The settings: the file (or the shipped job), then the flags.
    pub fn entry(&self) -> anyhow::Result<Entry> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let mut e = Entry::from_file(&path).with_context(|| {
            if self.config.is_none() {
                "the shipped job's settings (run from the repository root)".to_string()
            } else {
                format!("--config {}", path.display())
            }
        })?;
        macro_rules! set {
            ($($flag:ident => $field:ident),*) => {$(
                if let Some(v) = &self.$flag { e.$field = v.clone().into(); }
            )*};
        }
        set!(num_classes => num_classes, embedding_size => embedding_size, loss => loss,
             model => model, batch_size => train_batch_size, epochs => train_epochs,
             lr => lr, lr_policy => lr_policy, lr_steps => lr_steps,
             warmup_epochs => warmup_epochs, dataset_dir => dataset_dir,
             val_targets => val_targets, test_period => test_period, log_period => log_period,
             calc_acc => calc_acc, model_save_dir => model_save_dir, with_test => with_test,
             mixed_precision => mixed_precision, sample_ratio => sample_ratio, seed => seed,
             ranks => ranks, checkpoint_period => checkpoint_period, keep_last => keep_last);
        if let Some(dir) = &self.checkpoint_dir {
            e.checkpoint_dir = Some(dir.clone());
        }
        if let Some(d) = &self.device {
            e.device = d.clone();
        }
        if let Some(p) = &self.head_placement {
            e.head_placement = p.parse()?;
        }
        if let Some(s) = &self.head_storage {
            e.head_storage = s.parse()?;
        }
        if self.resume {
            e.resume = true;
        }
        if self.restart {
            e.restart = true;
        }
        if let Some(dir) = &self.pretrained {
            e.pretrained = Some(dir.clone());
            e.pretrained_head = self.pretrained_head;
        }
        if let Some(s) = self.steps {
            e.train_steps = Some(s);
        }
        if let Some(m) = &self.margins {
            e = e.with_margins(m[0], m[1], m[2], m[3]);
        }
        e.validate()?;
        Ok(e)
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let entry = args.entry()?;
    if args.print_config {
        print!("{}", entry.to_toml()?);
        return Ok(());
    }
    // Under `cargo xtask launch` (or torchrun-, Paddle- or mpirun-style variables) this process
    // is one rank of a multi-process run; otherwise the ranks are threads of this process.
    // Under `cargo xtask launch` (or torchrun-, Paddle- or mpirun-style variables) this process
    // is one rank of a multi-process run; otherwise the ranks are threads of this process (CPU)
    // or this process is the one rank (one GPU). A GPU process connects NCCL itself.
    let gpu = matches!(entry.device()?, plsc_train::device::Device::Cuda(_));
    let launched = if gpu {
        plsc_comm::env::RankEnv::from_env()?.map(|env| {
            let progress = !args.no_progress && env.rank == 0;
            plsc_train::job::run_launched(&entry, &env, progress)
        })
    } else {
        plsc_comm::backend::connect_from_env()?.map(|rc| {
            let progress = !args.no_progress && rc.env.rank == 0;
            plsc_train::run_process(&entry, rc.comm.as_ref(), progress)
        })
    };
    let s = match launched {
        Some(result) => match result? {
            Some(s) => s,
            None => return Ok(()),
        },
        None => plsc_train::run(&entry, !args.no_progress)?,
    };
    let show = |p: &std::path::Path| plsc_train::job::display_path(p);
    println!("run directory   {}", show(&s.run_dir));
    println!("  settings      {}", show(&s.config));
    println!(
        "  metrics       {}  (JSON lines: train and eval records)",
        show(&s.metrics)
    );
    println!(
        "  backbone      {}  (safetensors, arcface_torch names)",
        show(&s.backbone)
    );
    println!(
        "  checkpoint    {}  (plsc-ckpt: manifest + head shards + backbone)",
        show(&s.checkpoints.join(plsc_ckpt::step_dir_name(s.steps)))
    );
    println!(
        "  model         {}  (exported: model.json + weights, for `xtask eval --model` and serving)",
        show(&s.model)
    );
    println!("  summary       {}", show(&s.run_dir.join("summary.json")));
    match crate::plot::plot_run(&s.run_dir, &s.run_dir) {
        Ok(p) => println!(
            "  plots         {}  ({} PNG: loss, lr, accuracy, ROC per evaluation; `cargo xtask plot`)",
            show(&s.run_dir.join("*.png")),
            p.len()
        ),
        Err(e) => tracing::warn!("plots not drawn: {e:#}"),
    }
    println!(
        "trained {} steps ({} per epoch, global batch {}, lr {:.4}): loss {:.3} -> {:.3}, {:.1} images/s, {} skipped",
        s.steps,
        s.steps_per_epoch,
        s.global_batch,
        s.scaled_lr,
        s.first_loss,
        s.last_loss,
        s.images_per_sec,
        s.skipped_steps
    );
    for e in &s.final_eval {
        println!(
            "verification {}: accuracy {:.4} +- {:.4}, TAR {:.4} @ FAR {}, XNorm {:.3}",
            e.target, e.accuracy, e.accuracy_std, e.tar, e.far, e.xnorm
        );
    }
    Ok(())
}
