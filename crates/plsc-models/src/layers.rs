//! PyTorch state names for the burn layers the backbones use, and their constructors with
//! arcface_torch's initialisation.

use burn::module::Initializer;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PRelu, PReluConfig, PaddingConfig2d};
use burn::tensor::backend::Backend;

use crate::error::Result;
use crate::norm::BatchNorm;
use crate::state::{StateReader, StateWriter, TensorKind, TorchState, join};

/// A bias-free convolution, weights drawn from N(0, `std`^2).
pub(crate) fn conv<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    std: f64,
    device: &B::Device,
) -> Conv2d<B> {
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(
            padding, padding, padding, padding,
        ))
        .with_groups(groups)
        .with_bias(false)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

/// PyTorch's `kaiming_normal_(mode='fan_out', nonlinearity='relu')` standard deviation for a
/// weight whose first dimension is `out` and whose receptive field has `kernel_area` elements
/// (PyTorch does not divide the fan-out by the groups).
pub(crate) fn kaiming_fan_out_std(out: usize, kernel_area: usize) -> f64 {
    (2.0 / (out * kernel_area) as f64).sqrt()
}

/// Per-channel PReLU with PyTorch's initial slope 0.25.
pub(crate) fn prelu_layer<B: Backend>(channels: usize, device: &B::Device) -> PRelu<B> {
    PReluConfig::new()
        .with_num_parameters(channels)
        .with_alpha(0.25)
        .init(device)
}

/// A linear layer with PyTorch's default initialisation (U(-1/sqrt(in), 1/sqrt(in)) for
/// weight and bias), or N(0, `std`^2) weights when `std` is given.
pub(crate) fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: Option<f64>,
    device: &B::Device,
) -> Linear<B> {
    let config = LinearConfig::new(d_in, d_out).with_bias(bias);
    let config = match std {
        Some(std) => config.with_initializer(Initializer::Normal { mean: 0.0, std }),
        None => config,
    };
    config.init(device)
}

impl<B: Backend> TorchState<B> for Conv2d<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        w.param(join(prefix, "weight"), TensorKind::Param, &self.weight);
        if let Some(bias) = &self.bias {
            w.param(join(prefix, "bias"), TensorKind::Param, bias);
        }
    }

    fn load_state(mut self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        self.weight = r.param(join(prefix, "weight"), self.weight)?;
        if let Some(bias) = self.bias.take() {
            self.bias = Some(r.param(join(prefix, "bias"), bias)?);
        }
        Ok(self)
    }
}

impl<B: Backend> TorchState<B> for PRelu<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        w.param(join(prefix, "weight"), TensorKind::Param, &self.alpha);
    }

    fn load_state(mut self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        self.alpha = r.param(join(prefix, "weight"), self.alpha)?;
        Ok(self)
    }
}

impl<B: Backend> TorchState<B> for Linear<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        w.linear_weight(join(prefix, "weight"), &self.weight);
        if let Some(bias) = &self.bias {
            w.param(join(prefix, "bias"), TensorKind::Param, bias);
        }
    }

    fn load_state(mut self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        self.weight = r.linear_weight(join(prefix, "weight"), self.weight)?;
        if let Some(bias) = self.bias.take() {
            self.bias = Some(r.param(join(prefix, "bias"), bias)?);
        }
        Ok(self)
    }
}

impl<B: Backend> TorchState<B> for BatchNorm<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        let kind = if self.fixed_scale {
            TensorKind::FrozenParam
        } else {
            TensorKind::Param
        };
        w.param(join(prefix, "weight"), kind, &self.weight);
        w.param(join(prefix, "bias"), TensorKind::Param, &self.bias);
        w.buffer(join(prefix, "running_mean"), &self.running_mean);
        w.buffer(join(prefix, "running_var"), &self.running_var);
    }

    fn load_state(mut self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        self.weight = r.param(join(prefix, "weight"), self.weight)?;
        self.bias = r.param(join(prefix, "bias"), self.bias)?;
        self.running_mean = r.buffer(join(prefix, "running_mean"), self.running_mean)?;
        self.running_var = r.buffer(join(prefix, "running_var"), self.running_var)?;
        Ok(self)
    }
}
