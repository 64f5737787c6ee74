//! SGD with momentum and weight decay, with PyTorch's and Paddle's semantics, and its state
//! (the velocity of every parameter) readable and writable for checkpoints.
//!
//! Per step, for parameter p with gradient g:
//!
//! ```text
//! d = g + weight_decay * p
//! v = d                          (first step of p)
//! v = momentum * v + d           (later steps; dampening 0)
//! p = p - lr * v                 (or p - lr * (momentum * v + d) with Nesterov)
//! ```
//!
//! Without Nesterov this is the rule of the head's optimiser, plsc-core's `sgd` module
//! (`v <- momentum v + (g + weight_decay w)`, `w <- w - lr v`, on the sampled rows there): one
//! documented rule for the backbone and the head. The crate map keeps plsc-models from
//! depending on plsc-core, so the two share the rule rather than the code;
//! `follows_the_head_optimisers_rule` checks this one against it step by step.
//!
//! burn's `MomentumConfig` defaults to dampening 0.1 (which would scale every gradient after
//! the first by 0.9) and keeps its velocity private; [`SgdMomentum`] is the same arithmetic with
//! dampening 0 and a public [`VelocityState`], so that [`velocity_module`] and
//! [`velocity_record`] can move the velocities in and out of a checkpoint.

use burn::config::Config;
use burn::module::{AutodiffModule, ModuleMapper, ModuleVisitor, Param};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::record::AdaptorRecord;
use burn::optim::{Optimizer, SimpleOptimizer};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

/// SGD-momentum settings; the defaults are arcface_torch's and PLSC's (0.9, 5e-4).
#[derive(Config, Debug, PartialEq)]
pub struct SgdMomentumConfig {
    /// Momentum factor (0: plain SGD, no velocity kept).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// L2 penalty added to the gradient (`g + weight_decay * p`).
    #[config(default = 5e-4)]
    pub weight_decay: f64,
    /// Nesterov momentum.
    #[config(default = false)]
    pub nesterov: bool,
}

/// The optimiser of a module `M` on autodiff backend `B`.
pub type SgdMomentumOptimizer<M, B> = OptimizerAdaptor<SgdMomentum, M, B>;

/// The optimiser's per-parameter records, keyed by parameter id (what `to_record` returns).
pub type VelocityRecords<M, B> = <SgdMomentumOptimizer<M, B> as Optimizer<M, B>>::Record;

impl SgdMomentumConfig {
    /// The update rule.
    pub fn build(&self) -> SgdMomentum {
        SgdMomentum {
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        }
    }

    /// An optimiser for module `M` on autodiff backend `B`; step it with
    /// `optim.step(lr, module, grads)`. No per-tensor clipping (see [`crate::clip`] for the
    /// global norm).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(&self) -> SgdMomentumOptimizer<M, B> {
        OptimizerAdaptor::from(self.build())
    }
}

/// The SGD-momentum update rule of the module docs, one tensor at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdMomentum {
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
}

/// The state of one parameter: its velocity `v` (same shape as the parameter).
#[derive(Record, Clone)]
pub struct VelocityState<B: Backend, const D: usize> {
    /// `v` of the module docs.
    pub velocity: Tensor<B, D>,
}

impl<B: Backend> SimpleOptimizer<B> for SgdMomentum {
    type State<const D: usize> = VelocityState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: f64,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        // d = g + weight_decay * p (the penalty in f32, as burn's WeightDecay keeps it)
        let d = if self.weight_decay != 0.0 {
            tensor
                .clone()
                .mul_scalar(self.weight_decay as f32)
                .add(grad)
        } else {
            grad
        };
        if self.momentum == 0.0 {
            return (tensor - d.mul_scalar(lr), None);
        }
        let velocity = match state {
            Some(s) => s.velocity.mul_scalar(self.momentum).add(d.clone()),
            None => d.clone(),
        };
        let direction = if self.nesterov {
            velocity.clone().mul_scalar(self.momentum).add(d)
        } else {
            velocity.clone()
        };
        (
            tensor - direction.mul_scalar(lr),
            Some(VelocityState { velocity }),
        )
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &B::Device) -> Self::State<D> {
        VelocityState {
            velocity: state.velocity.to_device(device),
        }
    }
}

/// A copy of `model` whose every trainable float parameter holds its velocity from `records`
/// (zeros for a parameter without one yet, before its first step); buffers and frozen
/// parameters keep their values, and `model` is left unchanged. Save it with
/// the model's own naming (e.g. `state_tensors`) to store the optimiser's state under the
/// parameters' names.
pub fn velocity_module<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    records: &VelocityRecords<M, B>,
) -> M {
    model.clone().map(&mut ToVelocity::<M, B> { records })
}

struct ToVelocity<'a, M: AutodiffModule<B>, B: AutodiffBackend> {
    records: &'a VelocityRecords<M, B>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> ModuleMapper<B> for ToVelocity<'_, M, B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        if !tensor.is_require_grad() {
            // A buffer (BatchNorm running statistics) or a frozen parameter: left as it is.
            // A module's clone shares its `RunningState`s, and burn writes what a mapper
            // returns for one back into the shared storage: replacing it here would change the
            // statistics of the model the velocities are read from.
            return Param::from_mapped_value(id, tensor, mapper);
        }
        let value = match self.records.get(&id) {
            Some(rec) => {
                let state: VelocityState<B::InnerBackend, D> = rec.clone().into_state();
                Tensor::from_inner(state.velocity.to_device(&tensor.device()))
            }
            None => tensor.zeros_like(),
        };
        Param::from_mapped_value(id, value.detach(), mapper)
    }
}

/// The optimiser records that give every float parameter of `model` the value of the same
/// parameter in `velocities` (a module of the same structure, e.g. [`velocity_module`]'s
/// output saved and loaded again). Parameters are matched by position in visiting order, so
/// ids need not agree; an all-zero velocity is recorded as "no state yet".
pub fn velocity_record<B: AutodiffBackend, M: AutodiffModule<B>>(
    model: &M,
    velocities: &M,
) -> VelocityRecords<M, B> {
    let mut values = CollectValues::default();
    velocities.visit(&mut values);
    let mut build = BuildRecords::<M, B> {
        values: values.values.into_iter(),
        records: Default::default(),
    };
    model.visit(&mut build);
    build.records
}

#[derive(Default)]
struct CollectValues {
    values: Vec<TensorData>,
}

impl<B: Backend> ModuleVisitor<B> for CollectValues {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.values.push(param.val().into_data());
    }
}

struct BuildRecords<M: AutodiffModule<B>, B: AutodiffBackend> {
    values: std::vec::IntoIter<TensorData>,
    records: VelocityRecords<M, B>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> ModuleVisitor<B> for BuildRecords<M, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(data) = self.values.next() else {
            return;
        };
        let all_zero = data
            .as_slice::<f32>()
            .map(|s| s.iter().all(|&v| v == 0.0))
            .unwrap_or(false);
        if all_zero {
            return;
        }
        let velocity = Tensor::<B::InnerBackend, D>::from_data(data, &param.val().device());
        self.records.insert(
            param.id,
            AdaptorRecord::from_state(VelocityState { velocity }),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::module::Module;
    use burn::optim::{GradientsParams, Optimizer};

    type AB = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Pair<B: Backend> {
        a: Param<Tensor<B, 1>>,
        b: Param<Tensor<B, 2>>,
    }

    fn pair(a: [f32; 2], b: [f32; 2]) -> Pair<AB> {
        let dev = Default::default();
        Pair {
            a: Param::from_tensor(Tensor::from_floats(a, &dev)),
            b: Param::from_tensor(Tensor::<AB, 1>::from_floats(b, &dev).reshape([1, 2])),
        }
    }

    /// loss = sum(w_a * a) + sum(w_b * b): the gradient of a is w_a, of b is w_b.
    fn step(
        optim: &mut SgdMomentumOptimizer<Pair<AB>, AB>,
        m: Pair<AB>,
        lr: f64,
        wa: [f32; 2],
        wb: [f32; 2],
    ) -> Pair<AB> {
        let dev = Default::default();
        let loss = (m.a.val() * Tensor::<AB, 1>::from_floats(wa, &dev)).sum()
            + (m.b.val() * Tensor::<AB, 1>::from_floats(wb, &dev).reshape([1, 2])).sum();
        let grads = GradientsParams::from_grads::<AB, Pair<AB>>(loss.backward(), &m);
        optim.step(lr, m, grads)
    }

    fn values(t: Tensor<AB, 1>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn two_steps_match_the_formula_computed_by_hand() {
        // momentum 0.5, weight decay 0.1, lr 0.1; p0 = 1, g = 2 both steps:
        // d1 = 2 + 0.1 = 2.1, v1 = 2.1, p1 = 1 - 0.21 = 0.79
        // d2 = 2 + 0.079 = 2.079, v2 = 0.5 * 2.1 + 2.079 = 3.129, p2 = 0.79 - 0.3129 = 0.4771
        let cfg = SgdMomentumConfig::new()
            .with_momentum(0.5)
            .with_weight_decay(0.1);
        let mut optim = cfg.init::<AB, Pair<AB>>();
        let m = pair([1.0, 1.0], [1.0, 1.0]);
        let m = step(&mut optim, m, 0.1, [2.0, 2.0], [2.0, 2.0]);
        let m = step(&mut optim, m, 0.1, [2.0, 2.0], [2.0, 2.0]);
        for v in values(m.a.val()) {
            assert!((v - 0.4771).abs() < 1e-6, "{v}");
        }
        let vel = velocity_module(&m, &optim.to_record());
        for v in values(vel.a.val()) {
            assert!((v - 3.129).abs() < 1e-6, "{v}");
        }
    }

    /// The rule of plsc-core's head optimiser (`plsc_core::sgd`, module docs), written out:
    /// `v <- momentum * v + (g + weight_decay * w)`, `w <- w - lr * v`, from `v = 0`. The
    /// backbone's optimiser must follow it step for step (the map keeps plsc-models from
    /// depending on plsc-core, so the two share the rule, not the code).
    #[test]
    fn follows_the_head_optimisers_rule() {
        let (momentum, weight_decay) = (0.9, 5e-4);
        let cfg = SgdMomentumConfig::new()
            .with_momentum(momentum)
            .with_weight_decay(weight_decay);
        let mut optim = cfg.init::<AB, Pair<AB>>();
        let mut m = pair([1.5, -0.25], [0.75, -2.0]);
        let (mut w, mut v) = ([1.5f64, -0.25], [0.0f64; 2]);
        let steps = [(0.1, [0.5, -1.0]), (0.05, [2.0, 0.25]), (0.2, [-1.5, 3.0])];
        for (lr, g) in steps {
            m = step(&mut optim, m, lr, g, [1.0, 1.0]);
            for j in 0..2 {
                v[j] = momentum * v[j] + (f64::from(g[j]) + weight_decay * w[j]);
                w[j] -= lr * v[j];
            }
            let got = values(m.a.val());
            for j in 0..2 {
                assert!(
                    (f64::from(got[j]) - w[j]).abs() < 1e-6,
                    "lr {lr}: weight {j} is {}, the rule gives {}",
                    got[j],
                    w[j]
                );
            }
        }
        let vel = values(velocity_module(&m, &optim.to_record()).a.val());
        for j in 0..2 {
            assert!((f64::from(vel[j]) - v[j]).abs() < 1e-6, "velocity {j}");
        }
    }

    #[test]
    fn velocities_round_trip_into_a_fresh_optimiser_and_model() {
        let cfg = SgdMomentumConfig::new().with_momentum(0.9);
        let mut optim = cfg.init::<AB, Pair<AB>>();
        let m = pair([1.0, -1.0], [0.5, 2.0]);
        let m = step(&mut optim, m, 0.05, [1.0, 3.0], [-2.0, 0.5]);
        let saved = velocity_module(&m, &optim.to_record());

        // A continued run, and a run restored from (weights, velocities) into new ids.
        let continued = step(&mut optim, m.clone(), 0.05, [0.5, 0.5], [1.0, -1.0]);
        let restored_model: Pair<AB> = Module::<AB>::load_record(
            pair([0.0, 0.0], [0.0, 0.0]),
            Module::<AB>::into_record(m.clone()),
        );
        let mut restored = cfg
            .init::<AB, Pair<AB>>()
            .load_record(velocity_record::<AB, Pair<AB>>(&restored_model, &saved));
        let resumed = step(&mut restored, restored_model, 0.05, [0.5, 0.5], [1.0, -1.0]);
        assert_eq!(values(continued.a.val()), values(resumed.a.val()));
        assert_eq!(
            values(continued.b.val().reshape([2])),
            values(resumed.b.val().reshape([2]))
        );
        // Without the velocities the next step differs (the test can fail).
        let mut fresh = cfg.init::<AB, Pair<AB>>();
        let cold = step(&mut fresh, m, 0.05, [0.5, 0.5], [1.0, -1.0]);
        assert_ne!(values(continued.a.val()), values(cold.a.val()));
    }

    /// Reading the velocities must not touch the model: a clone shares BatchNorm's running
    /// statistics with it (the bug this guards against zeroed them at every checkpoint).
    #[test]
    fn reading_velocities_leaves_the_running_statistics_alone() {
        let device = Default::default();
        let model = crate::BackboneConfig::new("iresnet_tiny".into())
            .with_embedding_size(8)
            .with_in_channels(1)
            .with_input_size(28)
            .init_seeded::<AB>(1, &device)
            .unwrap();
        let x = Tensor::<AB, 4>::ones([2, 1, 28, 28], &device);
        let _ = model.forward(x);
        let before = model.buffer_tensors();
        assert!(
            before
                .iter()
                .any(|t| t.values.iter().any(|&v| v != 0.0 && v != 1.0))
        );
        let optim = SgdMomentumConfig::new().init::<AB, crate::Backbone<AB>>();
        let velocities = velocity_module(&model, &optim.to_record());
        assert_eq!(model.buffer_tensors(), before);
        assert_eq!(velocities.buffer_tensors(), before);
    }
}
