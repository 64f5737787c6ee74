//! `cargo xtask head-check`: run the sharded head on given tensors and write its loss and
//! gradients, so users can compare plsc-rs with their PyTorch head on identical numbers.
//! The step is plsc-core's (`plsc_core::check::check_head`), the files plsc-ckpt's
//! (`plsc_ckpt::head_check`); this command parses its arguments and wires them. See
//! docs/head-check.md.

use anyhow::ensure;
use clap::Args;
use plsc_ckpt::head_check::{CheckFloat, read_check_inputs, write_check_outputs};
use plsc_core::check::check_head;
use plsc_core::{HeadConfig, LossConfig, LossKind};
use std::path::PathBuf;

/// Run the head over N rank threads on `features`, `labels`, `weight` (and `bias`) from a
/// safetensors file; write `loss`, `grad_features`, `grad_weight` (and `grad_bias`).
#[derive(Args, Debug)]
pub struct HeadCheckArgs {
    /// Input safetensors: `features` [B, D], `labels` [B] (i64), `weight` [C, D], optional
    /// `bias` [C] (softmax); features/weight/bias all f32 or all f64.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors, in the input's float type.
    #[arg(long)]
    output: PathBuf,
    /// Rank threads; the batch rows are split over them (the first ranks take any extra row).
    #[arg(long, default_value_t = 1)]
    ranks: usize,
    /// Loss: softmax, arcface, cosface, sphereface, combined, each optionally `dist_`-prefixed
    /// (sharded head) as in PLSC.
    #[arg(long, default_value = "dist_arcface")]
    loss: String,
    /// Margin m1 (multiplicative angular); default from the loss preset.
    #[arg(long)]
    m1: Option<f64>,
    /// Margin m2 (additive angular); default from the loss preset.
    #[arg(long)]
    m2: Option<f64>,
    /// Margin m3 (additive cosine); default from the loss preset.
    #[arg(long)]
    m3: Option<f64>,
    /// Logit scale s; default from the loss preset.
    #[arg(long)]
    scale: Option<f64>,
    /// Class-tile width K (default: the memory budget decides).
    #[arg(long)]
    chunk: Option<usize>,
    /// Partial FC sampling ratio in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    sample_ratio: f64,
    /// Seed of the class sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn loss_config(args: &HeadCheckArgs) -> anyhow::Result<LossConfig> {
    let mut loss: LossConfig = args.loss.parse()?;
    match &mut loss.kind {
        LossKind::Margin(m) => {
            m.m1 = args.m1.unwrap_or(m.m1);
            m.m2 = args.m2.unwrap_or(m.m2);
            m.m3 = args.m3.unwrap_or(m.m3);
            m.scale = args.scale.unwrap_or(m.scale);
        }
        LossKind::Softmax => {
            ensure!(
                args.m1.is_none() && args.m2.is_none() && args.m3.is_none() && args.scale.is_none(),
                "softmax takes no margins or scale"
            );
        }
    }
    loss.validate()?;
    Ok(loss)
}

pub fn run(args: HeadCheckArgs) -> anyhow::Result<()> {
    ensure!(args.ranks >= 1, "--ranks must be at least 1");
    let file = read_check_inputs(&args.input)?;
    let loss = loss_config(&args)?;
    let config = HeadConfig::new(file.inputs.classes, file.inputs.dim)
        .with_loss(loss)
        .with_chunk_size(args.chunk)
        .with_sample_ratio(args.sample_ratio)
        .with_seed(args.seed);
    let out = match file.float {
        CheckFloat::F32 => check_head::<f32>(&file.inputs, &config, args.ranks)?,
        CheckFloat::F64 => check_head::<f64>(&file.inputs, &config, args.ranks)?,
    };
    write_check_outputs(&args.output, &out, &file)?;
    println!(
        "loss {:.10} ({} ranks, {}) -> {}",
        out.loss,
        args.ranks,
        loss,
        args.output.display()
    );
    Ok(())
}
