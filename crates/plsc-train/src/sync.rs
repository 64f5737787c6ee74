//! Data-parallel gradient synchronisation: the backbone's gradients are flattened in parameter
//! order into one buffer, summed across ranks through plsc-comm, then unscaled, clipped and put
//! back. [`FlatGrads`] keeps the buffer on the host (the CPU placement: bucketed host
//! all-reduce, the norm in f64); [`DeviceGrads`] keeps it on the device (GPUs: one device
//! all-reduce, nothing of size leaves the device).
//!
//! The sum (not the mean) is right because the head's loss is already the mean over the global
//! batch: each rank's gradient is its share of the global-batch gradient.

use std::collections::HashSet;

use burn::module::{ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommExt, Communicator, ReduceOp};

use crate::error::Result;

/// Floats per all-reduce call (16 MiB of f32).
pub const BUCKET_ELEMS: usize = 4 << 20;

/// A parameter's place in the flat buffer.
#[derive(Debug, Clone)]
struct Slot {
    id: ParamId,
    shape: Vec<usize>,
    offset: usize,
    len: usize,
}

/// The flat gradients of one step.
pub struct FlatGrads {
    slots: Vec<Slot>,
    /// All gradients in parameter order, then any extra values the caller appended.
    pub values: Vec<f32>,
}

struct Collect<'a> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    slots: Vec<Slot>,
    values: Vec<f32>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let shape = g.dims().to_vec();
            let data = g.into_data().convert::<f32>();
            let v = data.as_slice::<f32>().unwrap_or(&[]);
            self.slots.push(Slot {
                id: param.id,
                shape,
                offset: self.values.len(),
                len: v.len(),
            });
            self.values.extend_from_slice(v);
        }
    }
}

struct Restore<'a, B: AutodiffBackend> {
    grads: GradientsParams,
    slots: &'a [Slot],
    next: usize,
    values: &'a [f32],
    device: &'a B::Device,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Restore<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(slot) = self.slots.get(self.next) else {
            return;
        };
        if slot.id != param.id {
            return;
        }
        self.next += 1;
        let data = TensorData::new(
            self.values[slot.offset..slot.offset + slot.len].to_vec(),
            slot.shape.clone(),
        );
        let t = Tensor::<B::InnerBackend, D>::from_data(data, self.device);
        self.grads.register(slot.id, t);
    }
}

impl FlatGrads {
    /// Moves every parameter gradient of `module` out of `grads` into one buffer.
    pub fn collect<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        module: &M,
        grads: &mut GradientsParams,
    ) -> Self {
        let mut c = Collect {
            grads,
            seen: HashSet::new(),
            slots: Vec::new(),
            values: Vec::new(),
        };
        module.visit(&mut c);
        Self {
            slots: c.slots,
            values: c.values,
        }
    }

    /// Floats that belong to parameters (the rest was appended by the caller).
    pub fn param_len(&self) -> usize {
        self.slots.last().map_or(0, |s| s.offset + s.len)
    }

    /// Sums the buffer across ranks in buckets of [`BUCKET_ELEMS`].
    pub fn all_reduce_sum(&mut self, comm: &dyn Communicator) -> Result<()> {
        if comm.world_size() > 1 {
            for chunk in self.values.chunks_mut(BUCKET_ELEMS) {
                comm.all_reduce(chunk, ReduceOp::Sum)?;
            }
        }
        Ok(())
    }

    /// The L2 norm of the parameter gradients, in f64.
    pub fn norm(&self) -> f64 {
        self.values[..self.param_len()]
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt()
    }

    /// Whether every value (appended ones included) is finite.
    pub fn all_finite(&self) -> bool {
        self.values.iter().all(|v| v.is_finite())
    }

    /// Multiplies the parameter gradients by `factor` (skipped when it is 1).
    pub fn scale(&mut self, factor: f64) {
        if factor != 1.0 {
            let n = self.param_len();
            let f = factor as f32;
            self.values[..n].iter_mut().for_each(|v| *v *= f);
        }
    }

    /// The gradients as burn expects them, keyed by parameter id.
    pub fn into_grads<B: AutodiffBackend, M: burn::module::AutodiffModule<B>>(
        self,
        module: &M,
        device: &B::Device,
    ) -> GradientsParams {
        let mut r = Restore::<B> {
            grads: GradientsParams::new(),
            slots: &self.slots,
            next: 0,
            values: &self.values,
            device,
        };
        module.visit(&mut r);
        r.grads
    }
}

/// The factor that unscales by `loss_scale` and clips the unscaled global norm to `max_norm`
/// (PyTorch's `clip_grad_norm_`: `max_norm / (norm + 1e-6)` when below 1; `max_norm = 0` turns
/// clipping off). `scaled_norm` is the norm of the still-scaled gradients.
pub fn unscale_clip_factor(scaled_norm: f64, loss_scale: f64, max_norm: f64) -> f64 {
    let norm = scaled_norm / loss_scale;
    let clip = if max_norm > 0.0 {
        (max_norm / (norm + plsc_models::clip::CLIP_EPS)).min(1.0)
    } else {
        1.0
    };
    clip / loss_scale
}

/// The flat gradients of one step kept on the device (the device placement: GPUs): one
/// tensor in parameter order, summed across ranks by one device collective
/// ([`TensorComm::all_reduce_tensor`], NCCL on GPUs), with the norm and the finiteness check
/// reduced on the device (one value each to the host).
pub struct DeviceGrads<B: Backend> {
    slots: Vec<Slot>,
    /// All gradients in parameter order, `[n]`.
    pub values: Tensor<B, 1>,
}

struct CollectDevice<'a, B: Backend> {
    grads: &'a mut GradientsParams,
    seen: HashSet<ParamId>,
    slots: Vec<Slot>,
    parts: Vec<Tensor<B, 1>>,
    len: usize,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for CollectDevice<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            let shape = g.dims().to_vec();
            let n: usize = shape.iter().product();
            self.slots.push(Slot {
                id: param.id,
                shape,
                offset: self.len,
                len: n,
            });
            self.len += n;
            self.parts.push(g.reshape([n]));
        }
    }
}

struct RestoreDevice<'a, B: Backend> {
    grads: GradientsParams,
    slots: &'a [Slot],
    next: usize,
    values: &'a Tensor<B, 1>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for RestoreDevice<'_, B::InnerBackend> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let Some(slot) = self.slots.get(self.next) else {
            return;
        };
        if slot.id != param.id {
            return;
        }
        self.next += 1;
        let mut shape = [0usize; D];
        shape.copy_from_slice(&slot.shape);
        let t = self
            .values
            .clone()
            .narrow(0, slot.offset, slot.len)
            .reshape(shape);
        self.grads.register(slot.id, t);
    }
}

impl<B: Backend> DeviceGrads<B> {
    /// Moves every parameter gradient of `module` out of `grads` into one device tensor.
    pub fn collect<AB, M>(module: &M, grads: &mut GradientsParams, device: &B::Device) -> Self
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: burn::module::AutodiffModule<AB>,
    {
        let mut c = CollectDevice::<B> {
            grads,
            seen: HashSet::new(),
            slots: Vec::new(),
            parts: Vec::new(),
            len: 0,
        };
        module.visit(&mut c);
        let values = if c.parts.is_empty() {
            Tensor::zeros([0], device)
        } else {
            Tensor::cat(c.parts, 0)
        };
        Self {
            slots: c.slots,
            values,
        }
    }

    /// Sums the gradients across ranks in one device collective.
    pub fn all_reduce_sum<C: TensorComm<B> + ?Sized>(&mut self, comm: &C) -> Result<()> {
        if comm.world_size() > 1 {
            self.values = comm.all_reduce_tensor(self.values.clone(), ReduceOp::Sum)?;
        }
        Ok(())
    }

    /// The L2 norm of the gradients, reduced on the device in f32 without overflow: the
    /// gradients are still multiplied by the loss scale (up to 2^24 and more), whose squares
    /// overflow f32, so the sum of squares is taken of `v / max|v|` and scaled back
    /// (`max|v| * sqrt(sum (v / max|v|)^2)`).
    pub fn norm(&self) -> f64 {
        let scalar = |t: Tensor<B, 1>| {
            t.into_data()
                .convert::<f64>()
                .into_vec::<f64>()
                .map_or(f64::NAN, |v| v.first().copied().unwrap_or(f64::NAN))
        };
        if self.values.dims()[0] == 0 {
            return 0.0;
        }
        let max = scalar(self.values.clone().abs().max());
        if max == 0.0 || !max.is_finite() {
            return max;
        }
        let sq = scalar(self.values.clone().div_scalar(max as f32).square().sum());
        max * sq.sqrt()
    }

    /// Whether every gradient is finite.
    pub fn all_finite(&self) -> bool {
        let bad = self.values.clone().is_finite().bool_not().any();
        !bad.into_data()
            .convert::<bool>()
            .into_vec::<bool>()
            .map_or(true, |v| v.first().copied().unwrap_or(true))
    }

    /// Multiplies the gradients by `factor` (skipped when it is 1).
    pub fn scale(&mut self, factor: f64) {
        if factor != 1.0 {
            self.values = self.values.clone().mul_scalar(factor as f32);
        }
    }

    /// The gradients as burn expects them, keyed by parameter id.
    pub fn into_grads<AB, M>(self, module: &M) -> GradientsParams
    where
        AB: AutodiffBackend<InnerBackend = B>,
        M: burn::module::AutodiffModule<AB>,
    {
        let mut r = RestoreDevice::<B> {
            grads: GradientsParams::new(),
            slots: &self.slots,
            next: 0,
            values: &self.values,
        };
        module.visit(&mut r);
        r.grads
    }
}
