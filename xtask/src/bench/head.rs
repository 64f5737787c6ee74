//! `cargo xtask bench head`: one rank using all of this machine's threads, global batch B,
//! embedding D; for each case the median step time (forward + backward + sparse SGD update),
//! the GEMM rate of the path taken (6 B D C_s flops materialised, 8 B D C_s chunked), the rate of
//! a plain `[B, D] x [D, C]` matmul on the same kernel (and on burn-flex) in the same run, and
//! the head's work-buffer bytes beyond weight and momentum.

use super::stats::median;
use clap::Args;
use plsc_comm::ThreadGroup;
use plsc_core::{HeadConfig, HeadPath, LossConfig, ShardedHead, WeightUpdate};
use plsc_train::machine::{machine_info, status_kib};
use rand::{Rng, SeedableRng};
use serde::Serialize;
use std::time::Instant;

#[derive(Args)]
pub struct HeadArgs {
    /// Global batch size B.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Embedding size D.
    #[arg(long, default_value_t = 512)]
    dim: usize,
    /// Timed steps per case (after one warm-up step); the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Cases to run, as `classes:ratio:budget_mib` (budget `default` = the head's default).
    #[arg(long, value_delimiter = ',', default_values_t = [
        "100000:1:default".to_string(),
        "1000000:1:default".to_string(),
        "1000000:1:64".to_string(),
        "1000000:0.1:default".to_string(),
    ])]
    cases: Vec<String>,
    /// Loss name (any of the head's names).
    #[arg(long, default_value = "dist_arcface")]
    loss: String,
    /// `cpu`: the head's CPU kernel (`ShardedHead`). `cuda`: the burn path
    /// (`plsc_core::burn_path::burn_head_step`) on burn-cuda, GPU 0; needs xtask built with
    /// `--features cuda` (the memory budget of a case is not used there).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "cuda"])]
    backend: String,
    /// A Python with PyTorch (`pip install torch`): after each case, the PyTorch peer's head
    /// step (scripts/peers/arcface_torch_peer.py --mode head) on the same B, D, C and ratio and
    /// this process's threads; `peer` in the report gives its step time and our speed-up.
    #[arg(long)]
    peer_python: Option<std::path::PathBuf>,
    /// How the head stores weight and momentum: `f32`, `bf16` or `f16` (see docs/scale.md).
    /// A case that cannot fit this machine's available memory is refused before it starts.
    #[arg(long, default_value = "f32")]
    head_storage: String,
    /// Skip the plain-product yardsticks (they hold an f32 copy of the sampled rows: 2 GiB at
    /// 10M classes with r = 0.1). For the capacity cases:
    /// `--cases 10000000:0.1:default --head-storage bf16 --no-yardstick`.
    #[arg(long)]
    no_yardstick: bool,
    /// The capacity case of docs/scale.md: 10M classes, r = 0.1, bf16 storage, 20 steps, no
    /// yardsticks (sets --cases, --head-storage, --no-yardstick and --iters). It needs about
    /// 20 GiB of available memory and is refused up front without it.
    #[arg(long)]
    capacity: bool,
}

#[derive(Serialize)]
struct CaseReport {
    classes: usize,
    sample_ratio: f64,
    head_storage: String,
    /// Weight + momentum bytes per class (`2 D` values in the storage type).
    storage_bytes_per_class: usize,
    /// Peak anonymous resident memory of the process over the case (initialisation and steps).
    peak_rss_anon_bytes: Option<u64>,
    /// The capacity estimate the case was admitted with (`plsc_core::capacity`).
    estimated_head_bytes: u64,
    /// Seconds to create (initialise) the head.
    init_seconds: f64,
    memory_budget_bytes: usize,
    path: String,
    sampled_classes: usize,
    step_seconds_median: f64,
    step_seconds_all: Vec<f64>,
    gemm_flops_per_step: f64,
    achieved_gflops: f64,
    plain_matmul_gflops: Option<f64>,
    plain_matmul_gflops_burn_flex: Option<f64>,
    ratio_to_plain_matmul: Option<f64>,
    workspace_bytes: usize,
    rss_growth_during_steps_bytes: u64,
    forward_seconds_median: f64,
    backward_seconds_median: f64,
    other_seconds_median: f64,
    loss_first: f64,
    loss_last: f64,
}

/// Resident set size of this process, from /proc (0 where unavailable).
fn rss_bytes() -> u64 {
    status_kib(std::process::id(), "VmRSS:").map_or(0, |kib| kib * 1024)
}

fn run_case(args: &HeadArgs, spec: &str) -> anyhow::Result<CaseReport> {
    let parts: Vec<&str> = spec.split(':').collect();
    anyhow::ensure!(
        parts.len() == 3,
        "case `{spec}` must be classes:ratio:budget_mib"
    );
    let classes: usize = parts[0].parse()?;
    let ratio: f64 = parts[1].parse()?;
    let budget = if parts[2] == "default" {
        plsc_core::DEFAULT_MEMORY_BUDGET
    } else {
        parts[2].parse::<usize>()? << 20
    };
    let loss: LossConfig = args.loss.parse()?;
    let storage: plsc_core::HeadStorage = args.head_storage.parse()?;
    let config = HeadConfig::new(classes, args.dim)
        .with_loss(loss)
        .with_sample_ratio(ratio)
        .with_memory_budget(budget)
        .with_seed(1)
        .with_storage(storage);
    let estimated = plsc_core::capacity::host_bytes(&config, 1, &[0], args.batch)?;
    plsc_core::capacity::check_host_capacity(&config, 1, &[0], args.batch, None)?;
    let memory = plsc_train::memory::RssAnonSampler::start(plsc_train::memory::DEFAULT_PERIOD);
    tracing::info!(classes, ratio, budget, %storage, "initialising head");
    let init_started = Instant::now();
    let mut head = ShardedHead::<f32>::new(config, 0, 1)?;
    let init_seconds = init_started.elapsed().as_secs_f64();
    let comm = ThreadGroup::new(1).pop().expect("one communicator");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // A fresh batch every step, as in training (a repeated batch is learnt in a step or two).
    let batches: Vec<(Vec<f32>, Vec<i64>)> = (0..=args.iters)
        .map(|_| {
            let x = (0..args.batch * args.dim)
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            let y = (0..args.batch)
                .map(|_| rng.random_range(0..classes as i64))
                .collect();
            (x, y)
        })
        .collect();
    let mut times = Vec::new();
    let (mut fwd, mut bwd, mut other) = (Vec::new(), Vec::new(), Vec::new());
    let mut losses = Vec::new();
    let mut last = None;
    let rss_before = rss_bytes();
    let mut plain = None;
    let mut plain_times = Vec::new();
    for (step, (features, labels)) in batches.iter().enumerate() {
        let t = Instant::now();
        let out = head.step(
            &comm,
            features,
            labels,
            step as u64,
            WeightUpdate::Sgd { lr: 0.1 },
        )?;
        let dt = t.elapsed().as_secs_f64();
        // The yardstick runs right after each step, so both see the same load on a shared
        // machine; the first step and the first product warm up.
        if !args.no_yardstick {
            let mm = plain.get_or_insert_with(|| {
                plsc_core::cpu::yardstick::PlainMatmul::new(
                    args.batch,
                    args.dim,
                    out.sampled_classes,
                )
            });
            let mm_seconds = mm.time();
            if step > 0 {
                plain_times.push(mm_seconds);
            }
        }
        if step > 0 {
            times.push(dt);
            fwd.push(out.timings.forward);
            bwd.push(out.timings.backward);
            other.push(out.timings.other);
        }
        losses.push(out.loss);
        tracing::info!(classes, step, seconds = dt, loss = out.loss, "step");
        last = Some(out);
    }
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    let out = last.expect("at least one step");
    let step_median = median(&times);
    let peak_rss_anon_bytes = memory.map(|m| m.report().peak_bytes);
    let plain = plain.map(|p| p.gflops(median(&plain_times)));
    let burn_rate = (!args.no_yardstick).then(|| {
        let (b, d, c) = (args.batch, args.dim, out.sampled_classes);
        let seconds = plsc_core::cpu::yardstick::burn_matmul_seconds(b, d, c, args.iters.min(2));
        2.0 * (b * d * c) as f64 / median(&seconds) / 1e9
    });
    let achieved = out.gemm_flops / step_median / 1e9;
    Ok(CaseReport {
        classes,
        sample_ratio: ratio,
        head_storage: storage.name().into(),
        storage_bytes_per_class: 2 * args.dim * storage.bytes(),
        peak_rss_anon_bytes,
        estimated_head_bytes: estimated,
        init_seconds,
        memory_budget_bytes: budget,
        path: match out.path {
            HeadPath::Materialised => "materialised".into(),
            HeadPath::Chunked { tile } => format!("chunked (tile {tile})"),
        },
        sampled_classes: out.sampled_classes,
        step_seconds_median: step_median,
        step_seconds_all: times,
        gemm_flops_per_step: out.gemm_flops,
        achieved_gflops: achieved,
        plain_matmul_gflops: plain,
        plain_matmul_gflops_burn_flex: burn_rate,
        ratio_to_plain_matmul: plain.map(|p| achieved / p),
        workspace_bytes: out.workspace_bytes,
        rss_growth_during_steps_bytes: rss_growth,
        forward_seconds_median: median(&fwd),
        backward_seconds_median: median(&bwd),
        other_seconds_median: median(&other),
        loss_first: losses[0],
        loss_last: *losses.last().unwrap_or(&f64::NAN),
    })
}

pub fn run(mut args: HeadArgs) -> anyhow::Result<()> {
    if args.capacity {
        args.cases = vec!["10000000:0.1:default".into()];
        args.head_storage = "bf16".into();
        args.no_yardstick = true;
        args.iters = 20;
    }
    if args.backend == "cuda" {
        anyhow::ensure!(
            args.head_storage == "f32",
            "--backend cuda times burn_path's step on f32 weights; 16-bit storage on a GPU runs \
             in training (`train --device cuda --head-storage bf16`)"
        );
        return cuda::run(&args);
    }
    let peer = args
        .peer_python
        .as_deref()
        .map(super::peer::Peer::new)
        .transpose()?;
    let (mut cases, mut peer_cases) = (Vec::new(), Vec::new());
    for spec in &args.cases {
        let case = run_case(&args, spec)?;
        if let Some(peer) = &peer {
            let peer_args = super::peer::head_args(
                args.batch,
                args.dim,
                case.classes,
                case.sample_ratio,
                args.iters,
                rayon::current_num_threads(),
            );
            let run = peer.run(&peer_args)?;
            peer_cases.push(serde_json::json!({
                "classes": case.classes,
                "sample_ratio": case.sample_ratio,
                "peer_step_seconds_median": run.step_seconds_median,
                "peer_step_seconds_all": run.step_seconds_all,
                "step_seconds_median": case.step_seconds_median,
                "speedup_over_peer": run.step_seconds_median / case.step_seconds_median,
                "peer_torch": run.torch,
                "peer_command": peer.command_line(&peer_args),
            }));
        }
        cases.push(case);
    }
    let report = serde_json::json!({
        "bench": "head",
        "batch": args.batch,
        "dim": args.dim,
        "loss": args.loss,
        "ranks": 1,
        "threads": rayon::current_num_threads(),
        "cpu_gemm": plsc_core::cpu::gemm::backend_name(),
        "cases": cases,
        "peer": peer.map(|_| peer_cases),
        "machine": machine_info(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `--backend cuda`: the burn path of the head on burn-cuda (one rank, GPU 0).
#[cfg(feature = "cuda")]
mod cuda {
    use super::{HeadArgs, median};
    use burn::backend::Cuda;
    use burn::tensor::backend::Backend;
    use burn::tensor::{Distribution, Tensor};
    use plsc_comm::ThreadGroup;
    use plsc_core::burn_path::burn_head_step;
    use plsc_core::{ClassShard, HeadConfig, LossConfig};
    use plsc_train::machine::machine_info;
    use rand::{Rng, SeedableRng};
    use std::time::Instant;

    fn sync(device: &<Cuda as burn::tensor::backend::BackendTypes>::Device) -> anyhow::Result<()> {
        <Cuda as Backend>::sync(device).map_err(|e| anyhow::anyhow!("burn-cuda: {e:?}"))
    }

    pub fn run(args: &HeadArgs) -> anyhow::Result<()> {
        let device = Default::default();
        let comm = ThreadGroup::new(1).pop().expect("one communicator");
        let loss: LossConfig = args.loss.parse()?;
        let mut cases = Vec::new();
        for spec in &args.cases {
            let parts: Vec<&str> = spec.split(':').collect();
            anyhow::ensure!(
                parts.len() == 3,
                "case `{spec}` must be classes:ratio:budget_mib"
            );
            let (classes, ratio): (usize, f64) = (parts[0].parse()?, parts[1].parse()?);
            let config = HeadConfig::new(classes, args.dim)
                .with_loss(loss)
                .with_sample_ratio(ratio)
                .with_seed(1);
            let shard = ClassShard::for_rank(classes, 1, 0)?;
            let weight = Tensor::<Cuda, 2>::random(
                [classes, args.dim],
                Distribution::Normal(0.0, 0.01),
                &device,
            );
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let (mut times, mut losses) = (Vec::new(), Vec::new());
            for step in 0..=args.iters {
                let x = Tensor::<Cuda, 2>::random(
                    [args.batch, args.dim],
                    Distribution::Uniform(-1.0, 1.0),
                    &device,
                );
                let labels: Vec<i64> = (0..args.batch)
                    .map(|_| rng.random_range(0..classes as i64))
                    .collect();
                sync(&device)?;
                let t = Instant::now();
                let out = burn_head_step(
                    &comm,
                    &config,
                    shard,
                    weight.clone(),
                    None,
                    x,
                    &labels,
                    step as u64,
                )?;
                sync(&device)?;
                let dt = t.elapsed().as_secs_f64();
                // The first step compiles the kernels (NVRTC) and warms the allocator.
                if step > 0 {
                    times.push(dt);
                }
                losses.push(out.loss);
                tracing::info!(classes, step, seconds = dt, loss = out.loss, "cuda step");
            }
            let step_median = median(&times);
            // Forward logits, recomputed logits, dW and dX: 8 B D K, with K the sampled
            // classes (at least the batch's positives; estimated as ratio x C).
            let k = (classes as f64 * ratio).max(args.batch.min(classes) as f64);
            let flops = 8.0 * (args.batch * args.dim) as f64 * k;
            cases.push(serde_json::json!({
                "classes": classes,
                "sample_ratio": ratio,
                "step_seconds_median": step_median,
                "step_seconds_all": times,
                "gemm_flops_per_step_estimate": flops,
                "achieved_gflops": flops / step_median / 1e9,
                "loss_first": losses[0],
                "loss_last": losses.last().copied().unwrap_or(f64::NAN),
            }));
        }
        let report = serde_json::json!({
            "bench": "head",
            "backend": "cuda",
            "path": "burn_path::burn_head_step (one chunk)",
            "batch": args.batch,
            "dim": args.dim,
            "loss": args.loss,
            "ranks": 1,
            "cases": cases,
            "machine": machine_info(),
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        Ok(())
    }
}

#[cfg(not(feature = "cuda"))]
mod cuda {
    pub fn run(_: &super::HeadArgs) -> anyhow::Result<()> {
        anyhow::bail!("`bench head --backend cuda` needs xtask built with `--features cuda`")
    }
}
