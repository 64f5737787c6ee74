//! Gradient clipping by the global norm over all parameters (PyTorch's
//! `clip_grad_norm_`), which arcface_torch applies to the backbone with max norm 5.
//!
//! burn-optim's `GradientClipping::Norm` clips each tensor by its own norm; this clips all of
//! them by one factor: `total = sqrt(sum over tensors of sum(g^2))`, and if
//! `total > max_norm` every gradient is multiplied by `max_norm / (total + 1e-6)`.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{ElementConversion, Tensor, backend::AutodiffBackend};

/// PyTorch's guard added to the norm in the clipping factor.
pub const CLIP_EPS: f64 = 1e-6;

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    seen: HashSet<ParamId>,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let s = g.square().sum();
            self.total = Some(match self.total.take() {
                Some(t) => t + s,
                None => s,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// The L2 norm of all of `module`'s parameter gradients taken together (0 when none).
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut v = SquaredNorm::<B> {
        grads,
        seen: HashSet::new(),
        total: None,
    };
    module.visit(&mut v);
    match v.total {
        Some(t) => t.into_scalar().elem::<f64>().sqrt(),
        None => 0.0,
    }
}

/// Scales `grads` so that their global norm is at most `max_norm`; returns the norm before
/// clipping. A non-finite norm leaves the gradients as they are (the caller decides, e.g. a
/// loss scaler skips the step).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let total = global_grad_norm(module, grads);
    let factor = max_norm / (total + CLIP_EPS);
    if total.is_finite() && factor < 1.0 {
        let mut v = Scale::<B> {
            grads,
            seen: HashSet::new(),
            factor,
            _b: std::marker::PhantomData,
        };
        module.visit(&mut v);
    }
    total
}
