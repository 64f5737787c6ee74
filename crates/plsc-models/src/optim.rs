//! SGD with momentum and weight decay, with PyTorch's and Paddle's semantics.
//!
//! Per step, for parameter p with gradient g: `d = g + weight_decay * p`;
//! `v = d` on the first step, else `v = momentum * v + d` (dampening 0); `p -= lr * v`.
//! burn's `MomentumConfig` defaults to dampening 0.1, which would scale every gradient after
//! the first by 0.9: this config sets it to 0.

use burn::config::Config;
use burn::module::AutodiffModule;
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{Sgd, SgdConfig};
use burn::tensor::backend::AutodiffBackend;

/// SGD-momentum settings; the defaults are arcface_torch's and PLSC's (0.9, 5e-4).
#[derive(Config, Debug, PartialEq)]
pub struct SgdMomentumConfig {
    /// Momentum factor.
    #[config(default = 0.9)]
    pub momentum: f64,
    /// L2 penalty added to the gradient (`g + weight_decay * p`).
    #[config(default = 5e-4)]
    pub weight_decay: f64,
    /// Nesterov momentum.
    #[config(default = false)]
    pub nesterov: bool,
}

impl SgdMomentumConfig {
    /// The burn configuration: momentum with dampening 0, weight decay when positive, no
    /// per-tensor clipping (see [`crate::clip`] for the global norm).
    pub fn sgd_config(&self) -> SgdConfig {
        let momentum = (self.momentum != 0.0).then_some(MomentumConfig {
            momentum: self.momentum,
            dampening: 0.0,
            nesterov: self.nesterov,
        });
        let decay =
            (self.weight_decay != 0.0).then(|| WeightDecayConfig::new(self.weight_decay as f32));
        SgdConfig::new()
            .with_momentum(momentum)
            .with_weight_decay(decay)
    }

    /// An optimiser for module `M` on autodiff backend `B`; step it with
    /// `optim.step(lr, module, grads)`.
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> OptimizerAdaptor<Sgd<B::InnerBackend>, M, B> {
        self.sgd_config().init()
    }
}
