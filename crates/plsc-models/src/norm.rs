//! Batch normalisation with PyTorch's semantics (`nn.BatchNorm1d` / `nn.BatchNorm2d`).
//!
//! burn's own `BatchNorm` updates the running variance with the biased batch variance; PyTorch
//! (and so every arcface_torch checkpoint) uses the unbiased one, and names the affine
//! parameters `weight`/`bias`. This module matches PyTorch: normalise with the biased batch
//! variance, update `running_var` with the unbiased one, `momentum` 0.1, `eps` 1e-5.
//!
//! Training mode is burn's convention: batch statistics (and running-statistics updates) when
//! the backend tracks gradients (`Autodiff<B>`), running statistics otherwise (`model.valid()`).
//!
//! A scale fixed at 1 (arcface_torch's `features` BatchNorm1d, `weight.requires_grad = False`)
//! is a `weight` [`Param`] whose `require_grad` is false: it stays in the state (so
//! `features.weight` round-trips), gets no gradient, and no optimiser touches it.

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Tensor, backend::Backend};

use crate::ops::per_channel;

/// PyTorch BatchNorm: `y = (x - mean) / sqrt(var + eps) * weight + bias` over dim 1.
#[derive(Module, Debug)]
pub struct BatchNorm<B: Backend> {
    /// Scale (PyTorch `weight`), `[C]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift (PyTorch `bias`), `[C]`.
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean, `[C]` (a buffer: no gradient).
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, `[C]` (a buffer: no gradient).
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Weight of the new batch statistic in the running update (PyTorch `momentum`).
    pub momentum: f64,
    /// Added to the variance before the square root.
    pub epsilon: f64,
    /// Whether `weight` is frozen (used detached in the forward, so it never gets a gradient
    /// whatever its `require_grad` flag says).
    pub fixed_scale: bool,
}

/// arcface_torch's BatchNorm epsilon.
pub const BN_EPS: f64 = 1e-5;
/// PyTorch's BatchNorm momentum.
pub const BN_MOMENTUM: f64 = 0.1;

impl<B: Backend> BatchNorm<B> {
    /// A BatchNorm over `channels` with weight 1, bias 0, running mean 0 and variance 1.
    /// `fixed_scale` freezes the weight at 1 (no gradient).
    pub fn new(channels: usize, fixed_scale: bool, device: &B::Device) -> Self {
        let weight = Param::from_tensor(Tensor::ones([channels], device));
        let weight = if fixed_scale {
            weight.set_require_grad(false)
        } else {
            weight
        };
        Self {
            weight,
            bias: Param::from_tensor(Tensor::zeros([channels], device)),
            running_mean: RunningState::new(Tensor::zeros([channels], device)),
            running_var: RunningState::new(Tensor::ones([channels], device)),
            momentum: BN_MOMENTUM,
            epsilon: BN_EPS,
            fixed_scale,
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.bias.lazy_shape().dims::<1>()[0]
    }

    /// Normalises `x` of shape `[N, C, ...]`; batch statistics under autodiff, running ones
    /// otherwise.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if B::ad_enabled(&x.device()) {
            self.forward_train(x)
        } else {
            self.forward_eval(x)
        }
    }

    /// The current running mean (pending updates applied; `running_mean.value()` alone may
    /// lag one update behind).
    pub fn running_mean(&self) -> Tensor<B, 1> {
        self.running_mean.value_sync()
    }

    /// The current running variance (unbiased), pending updates applied.
    pub fn running_var(&self) -> Tensor<B, 1> {
        self.running_var.value_sync()
    }

    /// The scale as used in the forward: detached when fixed.
    fn scale(&self) -> Tensor<B, 1> {
        if self.fixed_scale {
            self.weight.val().detach()
        } else {
            self.weight.val()
        }
    }

    fn forward_eval<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let device = x.device();
        let mean = self.running_mean.value_sync().to_device(&device);
        let var = self.running_var.value_sync().to_device(&device);
        let scale = self.scale() / var.add_scalar(self.epsilon).sqrt();
        let shift = self.bias.val() - mean * scale.clone();
        per_channel(x, Some(scale), Some(shift))
    }

    fn forward_train<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // One fused operation on the CPU training backend (`Autodiff<Flex>`, f32).
        if let Some(out) =
            crate::flex_norm::batch_norm(&x, &self.scale(), &self.bias.val(), self.epsilon)
        {
            let count = x.dims()[..].iter().product::<usize>() / x.dims()[1];
            self.update_running(out.mean, out.var, count);
            return out.output;
        }
        self.forward_train_composed(x)
    }

    /// Training-mode forward with burn's tensor operations, on any backend (the reference the
    /// fused CPU operation, [`crate::flex_norm`], is tested against).
    pub fn forward_train_composed<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let dims = x.dims();
        let channels = dims[1];
        let count: usize = dims
            .iter()
            .enumerate()
            .filter(|(d, _)| *d != 1)
            .map(|(_, n)| n)
            .product();
        // Per-channel mean over every dim but 1, as a [C] vector; summed as [N*C, rest] rows
        // (the backward of a sum over dims 0, 2, 3 broadcasts on burn-flex's slow path).
        let n = dims[0];
        let rest = count / n;
        let reduce = |t: Tensor<B, D>| -> Tensor<B, 1> {
            let rows: Tensor<B, 2> = t.reshape([n * channels, rest]);
            rows.sum_dim(1)
                .reshape([n, channels])
                .sum_dim(0)
                .reshape([channels])
                .div_scalar(count as f64)
        };
        let mean = reduce(x.clone());
        let centered = per_channel(x, None, Some(mean.clone().neg()));
        let var = reduce(centered.clone().square());

        self.update_running(mean, var.clone(), count);

        let scale = self.scale() / var.add_scalar(self.epsilon).sqrt();
        per_channel(centered, Some(scale), Some(self.bias.val()))
    }

    /// Running statistics, PyTorch style: the unbiased variance of the `count` values per
    /// channel, momentum on the new value. `mean` and `var` (biased) are the batch's.
    fn update_running(&self, mean: Tensor<B, 1>, var: Tensor<B, 1>, count: usize) {
        let device = mean.device();
        let unbias = if count > 1 {
            count as f64 / (count as f64 - 1.0)
        } else {
            1.0
        };
        let batch_mean = mean.detach();
        let batch_var = var.detach().mul_scalar(unbias);
        let running_mean = self.running_mean.value_sync().to_device(&device);
        let running_var = self.running_var.value_sync().to_device(&device);
        self.running_mean.update(
            (running_mean.mul_scalar(1.0 - self.momentum) + batch_mean.mul_scalar(self.momentum))
                .detach(),
        );
        self.running_var.update(
            (running_var.mul_scalar(1.0 - self.momentum) + batch_var.mul_scalar(self.momentum))
                .detach(),
        );
    }

    /// A copy whose running statistics live in new storage (see [`crate::Backbone::fresh_replica`]).
    pub fn fresh_replica(&self) -> Self {
        Self {
            weight: self.weight.clone(),
            bias: self.bias.clone(),
            running_mean: RunningState::from_record(self.running_mean.clone().into_record()),
            running_var: RunningState::from_record(self.running_var.clone().into_record()),
            momentum: self.momentum,
            epsilon: self.epsilon,
            fixed_scale: self.fixed_scale,
        }
    }
}
