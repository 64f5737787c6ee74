//! Training-mode BatchNorm as one operation on the CPU training backend (`Autodiff<Flex>`).
//!
//! [`crate::norm::BatchNorm`] is written with burn's tensor operations (reshapes, repeats, sums,
//! products: about a dozen passes over the activations forward and more backward, each a new
//! autodiff node). Here the forward is one statistics pass and one output pass per channel, and
//! the backward one reduction pass and one output pass, with PyTorch's formulas:
//!
//! - forward: `mean`, biased `var` over every dim but 1; `x_hat = (x - mean) / sqrt(var + eps)`;
//!   `y = weight * x_hat + bias`;
//! - backward: `dbias = sum(dy)`, `dweight = sum(dy * x_hat)`,
//!   `dx = weight / sqrt(var + eps) * (dy - mean(dy) - x_hat * mean(dy * x_hat))`.
//!
//! Sums run in f64 per channel, channels on rayon's threads, each channel's sum in one fixed
//! order: the result is bit-identical for any thread count. [`batch_norm`] takes this path only
//! when the backend is exactly `Autodiff<Flex>` and the data f32; other backends keep the
//! composed operations.

use std::any::Any;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};
use rayon::prelude::*;

use crate::flex_conv::{contiguous, f32_slice};

type CpuAutodiff = Autodiff<Flex>;

/// The output and the batch statistics of a training-mode BatchNorm.
pub struct BatchNormOutput<B: Backend, const D: usize> {
    /// Normalised, scaled and shifted input.
    pub output: Tensor<B, D>,
    /// Per-channel batch mean (no gradient).
    pub mean: Tensor<B, 1>,
    /// Per-channel biased batch variance (no gradient).
    pub var: Tensor<B, 1>,
}

/// Moves `t` into a `U` when `T` and `U` are the same type.
fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// Training-mode BatchNorm of `x` `[N, C, ...]` over every dim but 1, as one autodiff
/// operation, when `B` is `Autodiff<Flex>` and `x` is f32; `None` otherwise (the caller uses
/// the composed operations). `weight` is detached by the caller when it is frozen.
pub fn batch_norm<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 1>,
    bias: &Tensor<B, 1>,
    epsilon: f64,
) -> Option<BatchNormOutput<B, D>> {
    if x.dtype() != DType::F32 || D < 2 {
        return None;
    }
    let x = cast::<Tensor<B, D>, Tensor<CpuAutodiff, D>>(x.clone()).ok()?;
    let weight = cast::<Tensor<B, 1>, Tensor<CpuAutodiff, 1>>(weight.clone()).ok()?;
    let bias = cast::<Tensor<B, 1>, Tensor<CpuAutodiff, 1>>(bias.clone()).ok()?;
    let out = batch_norm_flex(x, weight, bias, epsilon);
    Some(BatchNormOutput {
        output: cast(out.output).ok()?,
        mean: cast(out.mean).ok()?,
        var: cast(out.var).ok()?,
    })
}

/// What the backward keeps: `x_hat`, `weight / sqrt(var + eps)` per channel, the layout.
#[derive(Clone, Debug)]
struct State {
    x_hat: Arc<Vec<f32>>,
    gain: Arc<Vec<f64>>,
    dims: Vec<usize>,
}

impl State {
    fn layout(&self) -> (usize, usize, usize) {
        let (n, c) = (self.dims[0], self.dims[1]);
        (n, c, self.dims[2..].iter().product())
    }
}

#[derive(Debug)]
struct BatchNormOp;

impl Backward<Flex, 3> for BatchNormOp {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight, node_bias] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let state = ops.state;
        let dy = contiguous(&grad);
        let device = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(grad)).device();
        let dy = f32_slice(&dy);
        let (n, c, rest) = state.layout();
        // Per channel: sum(dy), sum(dy * x_hat), in f64, each in one fixed order.
        let sums: Vec<(f64, f64)> = (0..c)
            .into_par_iter()
            .map(|ch| {
                let (mut s, mut sx) = (0.0f64, 0.0f64);
                for i in 0..n {
                    let at = (i * c + ch) * rest;
                    for (d, h) in dy[at..at + rest].iter().zip(&state.x_hat[at..at + rest]) {
                        s += *d as f64;
                        sx += *d as f64 * *h as f64;
                    }
                }
                (s, sx)
            })
            .collect();
        let to_tensor = |v: Vec<f32>, dims: &[usize]| {
            Flex::float_from_data(TensorData::new(v, dims.to_vec()), &device)
        };
        if let Some(node) = node_x {
            let count = (n * rest) as f64;
            let mut dx = vec![0.0f32; dy.len()];
            dx.par_chunks_mut(rest)
                .zip(dy.par_chunks(rest))
                .zip(state.x_hat.par_chunks(rest))
                .enumerate()
                .for_each(|(row, ((dx, dy), xh))| {
                    let ch = row % c;
                    let (s, sx) = sums[ch];
                    let (mean_dy, mean_dy_xh) = ((s / count) as f32, (sx / count) as f32);
                    let gain = state.gain[ch] as f32;
                    for ((o, d), h) in dx.iter_mut().zip(dy).zip(xh) {
                        *o = gain * (d - mean_dy - h * mean_dy_xh);
                    }
                });
            grads.register::<Flex>(node.id, to_tensor(dx, &state.dims));
        }
        if let Some(node) = node_weight {
            let dw = sums.iter().map(|&(_, sx)| sx as f32).collect();
            grads.register::<Flex>(node.id, to_tensor(dw, &[c]));
        }
        if let Some(node) = node_bias {
            let db = sums.iter().map(|&(s, _)| s as f32).collect();
            grads.register::<Flex>(node.id, to_tensor(db, &[c]));
        }
    }
}

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().expect("f32 (checked)")
}

fn batch_norm_flex<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    weight: Tensor<CpuAutodiff, 1>,
    bias: Tensor<CpuAutodiff, 1>,
    epsilon: f64,
) -> BatchNormOutput<CpuAutodiff, D> {
    let dims = x.dims();
    let device = x.device();
    let (n, c) = (dims[0], dims[1]);
    let rest: usize = dims[2..].iter().product();
    let count = (n * rest) as f64;
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let bias = bias.into_primitive().tensor();
    let xc = contiguous(&x.primitive);
    let xv = f32_slice(&xc);
    let wv = values(Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(
        weight.primitive.clone(),
    )));
    let bv = values(Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(
        bias.primitive.clone(),
    )));
    // Per channel: mean, then the biased variance around it (two passes, f64).
    let stats: Vec<(f64, f64)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let rows = (0..n).map(|i| &xv[(i * c + ch) * rest..][..rest]);
            let mean = rows.clone().flatten().map(|&v| v as f64).sum::<f64>() / count;
            let var = rows
                .flatten()
                .map(|&v| (v as f64 - mean) * (v as f64 - mean))
                .sum::<f64>()
                / count;
            (mean, var)
        })
        .collect();
    let inv_std: Vec<f64> = stats
        .iter()
        .map(|&(_, var)| 1.0 / (var + epsilon).sqrt())
        .collect();
    let mut x_hat = vec![0.0f32; xv.len()];
    let mut y = vec![0.0f32; xv.len()];
    x_hat
        .par_chunks_mut(rest)
        .zip(y.par_chunks_mut(rest))
        .zip(xv.par_chunks(rest))
        .enumerate()
        .for_each(|(row, ((h, y), x))| {
            let ch = row % c;
            let (mean, inv) = (stats[ch].0 as f32, inv_std[ch] as f32);
            let (w, b) = (wv[ch], bv[ch]);
            for ((h, y), x) in h.iter_mut().zip(y.iter_mut()).zip(x) {
                *h = (x - mean) * inv;
                *y = w * *h + b;
            }
        });
    let gain: Vec<f64> = inv_std
        .iter()
        .zip(&wv)
        .map(|(i, &w)| i * w as f64)
        .collect();
    let y = Tensor::<Flex, D>::from_data(TensorData::new(y, dims.to_vec()), &device);
    let y = y.into_primitive().tensor();
    let state = State {
        x_hat: Arc::new(x_hat),
        gain: Arc::new(gain),
        dims: dims.to_vec(),
    };
    let out = match BatchNormOp
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone(), bias.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    let stat = |f: fn(&(f64, f64)) -> f64| {
        let v: Vec<f32> = stats.iter().map(|s| f(s) as f32).collect();
        Tensor::<CpuAutodiff, 1>::from_inner(Tensor::from_data(TensorData::new(v, [c]), &device))
    };
    BatchNormOutput {
        output: Tensor::from_primitive(TensorPrimitive::Float(out)),
        mean: stat(|s| s.0),
        var: stat(|s| s.1),
    }
}
