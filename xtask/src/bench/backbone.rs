//! `cargo xtask bench backbone`: images per second of a registered backbone on burn-flex,
//! forward alone in eval mode (`Flex`) and forward + backward in training mode
//! (`Autodiff<Flex>`, the gradient injected at the embedding as the head would). Median of
//! `--iters` timed runs after one warm-up run, for each model in `--model`. `--profile` adds,
//! for IResNets, the step's time per operation kind ([`super::backbone_profile`]).

use super::stats::median;
use anyhow::Context;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use clap::Args;
use plsc_models::grad::backbone_gradients;
use plsc_models::{Backbone, BackboneConfig};
use plsc_train::machine::machine_info;
use serde::Serialize;
use std::time::Instant;

#[derive(Args)]
pub struct BackboneArgs {
    /// Registered backbone names (`iresnet18`, `iresnet34`, `iresnet50`, `iresnet100`, `mbf`,
    /// `iresnet_tiny`), comma separated.
    #[arg(long, value_delimiter = ',', default_values_t = ["iresnet50".to_string(), "iresnet_tiny".to_string()])]
    model: Vec<String>,
    /// Images per batch.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Input side in pixels.
    #[arg(long, default_value_t = 112)]
    input_size: usize,
    /// Timed runs per measurement (after one warm-up run); the median is reported.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Input channels (default: the model's, 3; the shipped job's iresnet_tiny takes 1).
    #[arg(long)]
    channels: Option<usize>,
    /// Also time every layer alone and report the forward + backward time per operation kind
    /// (IResNets only).
    #[arg(long)]
    profile: bool,
}

#[derive(Serialize)]
struct ModelReport {
    model: String,
    parameters: usize,
    batch: usize,
    input: [usize; 3],
    forward_seconds_median: f64,
    forward_seconds_all: Vec<f64>,
    forward_images_per_second: f64,
    forward_backward_seconds_median: f64,
    forward_backward_seconds_all: Vec<f64>,
    forward_backward_images_per_second: f64,
    /// Time per operation kind (`--profile`).
    profile: Option<super::backbone_profile::Profile>,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    backend: &'static str,
    iters: usize,
    models: Vec<ModelReport>,
    machine: plsc_train::machine::MachineInfo,
}

/// Runs `f` once to warm up, then `iters` times; seconds of each timed run.
fn time(iters: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Vec<f64>> {
    f()?;
    (0..iters)
        .map(|_| {
            let t = Instant::now();
            f()?;
            Ok(t.elapsed().as_secs_f64())
        })
        .collect()
}

fn bench_model(name: &str, args: &BackboneArgs) -> anyhow::Result<ModelReport> {
    let dev = Default::default();
    let mut config = BackboneConfig::new(name.to_string()).with_input_size(args.input_size);
    if let Some(channels) = args.channels {
        config = config.with_in_channels(channels);
    }
    let shape = [
        args.batch,
        config.in_channels,
        args.input_size,
        args.input_size,
    ];
    tracing::info!(model = name, batch = args.batch, "benchmarking backbone");

    let eval: Backbone<Flex> = config
        .init(&dev)
        .with_context(|| format!("building {name}"))?;
    let x = Tensor::<Flex, 4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
    let forward = time(args.iters, || {
        // Reading the result back waits for the whole computation.
        let y = eval.try_forward(x.clone())?;
        let _ = y.into_data();
        Ok(())
    })?;

    let train: Backbone<Autodiff<Flex>> = config.init(&dev)?;
    let xa = Tensor::<Autodiff<Flex>, 4>::from_inner(x.clone());
    let dy = Tensor::<Flex, 2>::random(
        [args.batch, config.embedding_size],
        Distribution::Normal(0.0, 1e-3),
        &dev,
    );
    let forward_backward = time(args.iters, || {
        let y = train.try_forward(xa.clone())?;
        let grads = backbone_gradients(&train, y, dy.clone())?;
        anyhow::ensure!(!grads.is_empty(), "no gradients");
        Ok(())
    })?;

    let profile = match (&train.net, args.profile) {
        (plsc_models::Network::IResNet(net), true) => Some(super::backbone_profile::profile(
            net,
            args.batch,
            config.in_channels,
            args.input_size,
            args.iters,
        )),
        _ => None,
    };
    let f = median(&forward);
    let fb = median(&forward_backward);
    Ok(ModelReport {
        model: name.to_string(),
        parameters: eval.param_count(),
        batch: args.batch,
        input: [config.in_channels, args.input_size, args.input_size],
        forward_seconds_median: f,
        forward_seconds_all: forward,
        forward_images_per_second: args.batch as f64 / f,
        forward_backward_seconds_median: fb,
        forward_backward_seconds_all: forward_backward,
        forward_backward_images_per_second: args.batch as f64 / fb,
        profile,
    })
}

pub fn run(args: BackboneArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.iters >= 1, "--iters must be at least 1");
    anyhow::ensure!(args.batch >= 1, "--batch must be at least 1");
    let models = args
        .model
        .iter()
        .map(|m| bench_model(m, &args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let report = Report {
        bench: "backbone",
        backend: "burn-flex (CPU), Autodiff<Flex> for backward",
        iters: args.iters,
        models,
        machine: machine_info(),
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
