//! `cargo xtask head-check`: run the sharded head on given tensors and write its loss and
//! gradients, so users can compare plsc-rs with their PyTorch head on identical numbers.
//! The step itself is plsc-core's (`plsc_core::check::check_head`); this command reads and
//! writes the files. See docs/head-check.md.

use anyhow::{Context, bail, ensure};
use clap::Args;
use plsc_core::check::{CheckInputs, CheckOutputs, check_head};
use plsc_core::{HeadConfig, LossConfig, LossKind};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// The file's tensors, and the float type they were written in.
struct Inputs {
    dtype: Dtype,
    check: CheckInputs,
}

fn floats(view: &TensorView<'_>, name: &str, file: &Path) -> anyhow::Result<Vec<f64>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect()),
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()),
        other => bail!(
            "{}: tensor `{name}` is {other:?}; expected F32 or F64",
            file.display()
        ),
    }
}

fn read_inputs(path: &Path) -> anyhow::Result<Inputs> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let get = |name: &str| {
        st.tensor(name)
            .with_context(|| format!("{}: missing tensor `{name}`", path.display()))
    };
    let (f, l, w) = (get("features")?, get("labels")?, get("weight")?);
    ensure!(
        f.shape().len() == 2,
        "{}: `features` must be [B, D], got {:?}",
        path.display(),
        f.shape()
    );
    ensure!(
        w.shape().len() == 2,
        "{}: `weight` must be [C, D], got {:?}",
        path.display(),
        w.shape()
    );
    let (rows, dim, classes) = (f.shape()[0], f.shape()[1], w.shape()[0]);
    ensure!(
        w.shape()[1] == dim,
        "{}: `weight` is {:?} but `features` has D = {dim}",
        path.display(),
        w.shape()
    );
    ensure!(
        l.shape() == [rows],
        "{}: `labels` must be [{rows}], got {:?}",
        path.display(),
        l.shape()
    );
    ensure!(
        l.dtype() == Dtype::I64,
        "{}: `labels` must be I64, got {:?}",
        path.display(),
        l.dtype()
    );
    ensure!(
        f.dtype() == w.dtype(),
        "{}: `features` is {:?} but `weight` is {:?}",
        path.display(),
        f.dtype(),
        w.dtype()
    );
    let labels = l
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
        .collect();
    let bias = match st.tensor("bias") {
        Ok(b) => {
            ensure!(
                b.shape() == [classes],
                "{}: `bias` must be [{classes}], got {:?}",
                path.display(),
                b.shape()
            );
            Some(floats(&b, "bias", path)?)
        }
        Err(_) => None,
    };
    Ok(Inputs {
        dtype: f.dtype(),
        check: CheckInputs {
            rows,
            dim,
            classes,
            features: floats(&f, "features", path)?,
            labels,
            weight: floats(&w, "weight", path)?,
            bias,
        },
    })
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

fn encode(values: &[f64], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F32 => values
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

fn write_outputs(path: &Path, out: &CheckOutputs, inp: &Inputs) -> anyhow::Result<()> {
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>)> = vec![
        ("loss".into(), encode(&[out.loss], inp.dtype), vec![]),
        (
            "grad_features".into(),
            encode(&out.grad_features, inp.dtype),
            vec![inp.check.rows, inp.check.dim],
        ),
        (
            "grad_weight".into(),
            encode(&out.grad_weight, inp.dtype),
            vec![inp.check.classes, inp.check.dim],
        ),
    ];
    if let Some(gb) = &out.grad_bias {
        tensors.push((
            "grad_bias".into(),
            encode(gb, inp.dtype),
            vec![inp.check.classes],
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, data, shape)| Ok((n.clone(), TensorView::new(inp.dtype, shape.clone(), data)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

pub fn run(args: HeadCheckArgs) -> anyhow::Result<()> {
    ensure!(args.ranks >= 1, "--ranks must be at least 1");
    let inp = read_inputs(&args.input)?;
    let loss = loss_config(&args)?;
    let config = HeadConfig::new(inp.check.classes, inp.check.dim)
        .with_loss(loss)
        .with_chunk_size(args.chunk)
        .with_sample_ratio(args.sample_ratio)
        .with_seed(args.seed);
    let out = match inp.dtype {
        Dtype::F32 => check_head::<f32>(&inp.check, &config, args.ranks)?,
        _ => check_head::<f64>(&inp.check, &config, args.ranks)?,
    };
    write_outputs(&args.output, &out, &inp)?;
    println!(
        "loss {:.10} ({} ranks, {}) -> {}",
        out.loss,
        args.ranks,
        loss,
        args.output.display()
    );
    Ok(())
}
