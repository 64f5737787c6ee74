//! [`DeviceHead`]: one rank's part of the classification head with its weight shard, momentum
//! (and softmax bias) as burn tensors on the backend's device, stepped through the phases of
//! [`crate::burn_path`] with device collectives ([`TensorComm`]: NCCL on GPUs, the thread group
//! on `Flex`). Embeddings never leave the device; only the `B` target cosines of a class tile
//! and the loss visit the host.
//!
//! It follows the contracts of [`crate::ShardedHead`]: initialisation from `(seed, class)` only,
//! the same Partial FC rule (`(seed, step, rank)`), sparse SGD-momentum on the sampled rows only
//! (`v <- m v + (g + wd w)`, `w <- w - lr v`, see [`crate::sgd`]), and its rows load from and
//! save to the same checkpoint format (as host rows in the storage type).
//!
//! With 16-bit [`HeadStorage`] the shard's tensors are bf16/f16 on the device: the sampled
//! rows are cast to f32 for the products and the update, and written back with the CPU
//! kernel's stochastic rounding ([`crate::device_rounding`]).

use crate::burn_path::{
    backward_tiles, forward_tiles, gather, prepare, reduce_statistics, replicated_loss,
    scatter_feature_grad,
};
use crate::device_rounding::{self, storage_dtype, to_f32};
use crate::error::HeadError;
use crate::head::{Accuracy, HeadConfig, global_accuracy};
use crate::init;
use crate::loss::LossKind;
use crate::rounding::RoundedTensor;
use crate::sampling::SampledClasses;
use crate::shard::ClassShard;
use crate::storage::{HeadStorage, RowStore};
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use plsc_comm::ReduceOp;
use plsc_comm::tensor::TensorComm;

/// What happens to the weight shard in a [`DeviceHead::step`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DeviceUpdate {
    /// Sparse SGD with momentum at this learning rate, on the sampled rows.
    Sgd { lr: f64 },
    /// Leave the weight alone and return its gradient ([`HeadGradient`]), to be applied with
    /// [`DeviceHead::apply_gradient`] once the step is known to be finite (mixed precision).
    Gradient,
}

/// The weight (and bias) gradient of one step, on the sampled rows only.
pub struct HeadGradient<B: Backend> {
    /// The step it was computed at (the stochastic rounding's key).
    pub step: u64,
    /// The rows of the shard the gradient belongs to (`None`: every row, in order).
    pub rows: Option<Tensor<B, 1, Int>>,
    /// The classes that took part (local indices within the shard).
    pub sampled: SampledClasses,
    /// `dL/dW` of those rows `[C_s, D]`.
    pub weight: Tensor<B, 2>,
    /// `dL/db` of those entries (softmax).
    pub bias: Option<Tensor<B, 1>>,
}

impl<B: Backend> HeadGradient<B> {
    /// Whether every value is finite (one reduction on the device, one flag to the host).
    pub fn is_finite(&self) -> bool {
        let w = self.weight.clone().is_finite().bool_not().any();
        let b = self
            .bias
            .as_ref()
            .map(|b| b.clone().is_finite().bool_not().any());
        let bad = |t: Tensor<B, 1, burn::tensor::Bool>| {
            t.into_data()
                .convert::<bool>()
                .into_vec::<bool>()
                .map_or(true, |v| v.first().copied().unwrap_or(true))
        };
        !bad(w) && !b.is_some_and(bad)
    }

    /// The gradient as dense host rows `[C_r, D]` (zero rows for classes not sampled).
    pub fn to_dense_host(&self, shard_len: usize) -> Vec<f32> {
        let d = self.weight.dims()[1];
        let dense =
            crate::burn_path::densify(self.weight.clone(), self.rows.as_ref(), [shard_len, d]);
        dense
            .into_data()
            .convert::<f32>()
            .into_vec()
            .unwrap_or_default()
    }
}

/// The result of one [`DeviceHead::step`] on one rank.
pub struct DeviceHeadOutput<B: Backend> {
    /// Mean loss over the global batch (the same on every rank).
    pub loss: f64,
    /// `dL/dx` for this rank's own rows `[b, D]`, on the device.
    pub grad_features: Tensor<B, 2>,
    /// Distributed top-1 / top-5 (with `calc_acc`).
    pub accuracy: Option<Accuracy>,
    /// The classes of this rank that took part.
    pub sampled: SampledClasses,
    /// The class-tile width used.
    pub tile: usize,
    /// The weight gradient, with [`DeviceUpdate::Gradient`].
    pub gradient: Option<HeadGradient<B>>,
}

/// One rank's part of the head on the device (see the [module doc](self)).
pub struct DeviceHead<B: Backend> {
    config: HeadConfig,
    shard: ClassShard,
    world_size: usize,
    weight: Tensor<B, 2>,
    velocity: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    bias_velocity: Option<Tensor<B, 1>>,
}

/// `t` with rows `idx` (holding `old`) replaced by `new`, exactly: burn 0.21's backends
/// implement only the additive `select_assign`, so the rows are first zeroed (`w + (-w)` is
/// exactly 0 for finite `w`) and then `new` is added to the zeros (exact).
fn assign_rows<B: Backend>(
    t: Tensor<B, 2>,
    idx: &Tensor<B, 1, Int>,
    old: Tensor<B, 2>,
    new: Tensor<B, 2>,
) -> Tensor<B, 2> {
    t.select_assign(0, idx.clone(), old.neg(), IndexingUpdateOp::Add)
        .select_assign(0, idx.clone(), new, IndexingUpdateOp::Add)
}

/// Stored rows uploaded in their dtype.
fn upload<B: Backend>(rows: RowStore<f32>, shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    let dtype = storage_dtype(rows.storage());
    let data = match rows {
        RowStore::Full(v) => TensorData::new(v, shape),
        RowStore::Bf16(v) => TensorData::new(v, shape),
        RowStore::F16(v) => TensorData::new(v, shape),
    };
    Tensor::from_data(data, (device, dtype))
}

/// A tensor of the storage dtype copied to the host as stored rows.
fn download<B: Backend>(t: &Tensor<B, 2>, storage: HeadStorage) -> RowStore<f32> {
    let data = t.clone().into_data();
    match storage {
        HeadStorage::F32 => RowStore::Full(data.convert::<f32>().into_vec().unwrap_or_default()),
        HeadStorage::Bf16 => RowStore::Bf16(data.into_vec().unwrap_or_default()),
        HeadStorage::F16 => RowStore::F16(data.into_vec().unwrap_or_default()),
    }
}

fn to_host<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default()
}

impl<B: Backend> DeviceHead<B> {
    /// Creates rank `rank`'s part on `device`, initialised from `(seed, class)` only, like
    /// [`crate::ShardedHead::new`] (the same values).
    pub fn new(
        config: HeadConfig,
        rank: usize,
        world_size: usize,
        device: &B::Device,
    ) -> Result<Self, HeadError> {
        config.validate()?;
        let shard = config.shard_of(rank, world_size)?;
        let d = config.embedding_size;
        let mut w = RowStore::zeros(config.storage, shard.len * d);
        init::init_stored_rows(config.seed, shard.start, d, w.view_mut());
        let dtype = storage_dtype(config.storage);
        let softmax = config.loss.kind == LossKind::Softmax;
        let bias = softmax.then(|| {
            let b: Vec<f32> = init::init_bias(shard.len);
            Tensor::from_data(TensorData::new(b, [shard.len]), device)
        });
        Ok(Self {
            weight: upload(w, [shard.len, d], device),
            velocity: Tensor::zeros([shard.len, d], (device, dtype)),
            bias_velocity: softmax.then(|| Tensor::zeros([shard.len], device)),
            bias,
            config,
            shard,
            world_size,
        })
    }

    pub fn config(&self) -> &HeadConfig {
        &self.config
    }
    pub fn shard(&self) -> ClassShard {
        self.shard
    }
    pub fn world_size(&self) -> usize {
        self.world_size
    }
    /// The weight shard `[C_r, D]` on the device.
    pub fn weight(&self) -> &Tensor<B, 2> {
        &self.weight
    }
    /// Its momentum `[C_r, D]` on the device.
    pub fn velocity(&self) -> &Tensor<B, 2> {
        &self.velocity
    }
    /// The weight rows copied to the host, row-major, in the storage type (for checkpoints).
    pub fn weight_host(&self) -> RowStore<f32> {
        download(&self.weight, self.config.storage)
    }
    /// The momentum rows copied to the host, in the storage type.
    pub fn velocity_host(&self) -> RowStore<f32> {
        download(&self.velocity, self.config.storage)
    }

    fn check_storage(&self, tensor: &'static str, rows: &RowStore<f32>) -> Result<(), HeadError> {
        rows.expect_storage(self.config.storage, self.shard.rank, tensor)
    }
    /// The bias copied to the host (softmax).
    pub fn bias_host(&self) -> Option<Vec<f32>> {
        self.bias.as_ref().map(to_host)
    }
    /// The bias momentum copied to the host (softmax).
    pub fn bias_velocity_host(&self) -> Option<Vec<f32>> {
        self.bias_velocity.as_ref().map(to_host)
    }

    fn check_len(&self, tensor: &'static str, got: usize, rows: usize) -> Result<(), HeadError> {
        let d = if rows == self.shard.len * self.config.embedding_size {
            self.config.embedding_size
        } else {
            1
        };
        if got != rows {
            return Err(HeadError::Shape {
                rank: self.shard.rank,
                tensor,
                got: vec![got],
                expected: if d == 1 {
                    vec![self.shard.len]
                } else {
                    vec![self.shard.len, d]
                },
            });
        }
        Ok(())
    }

    /// Replaces weight (and bias) rows from host rows in the storage type (checkpoints, given
    /// weights).
    pub fn set_weight(
        &mut self,
        weight: RowStore<f32>,
        bias: Option<Vec<f32>>,
    ) -> Result<(), HeadError> {
        let (n, d) = (self.shard.len, self.config.embedding_size);
        self.check_storage("weight", &weight)?;
        self.check_len("weight", weight.len(), n * d)?;
        let device = self.weight.device();
        if let (Some(_), Some(b)) = (&self.bias, &bias) {
            self.check_len("bias", b.len(), n)?;
        }
        self.weight = upload(weight, [n, d], &device);
        if let (Some(slot), Some(b)) = (self.bias.as_mut(), bias) {
            *slot = Tensor::from_data(TensorData::new(b, [n]), &device);
        }
        Ok(())
    }

    /// Replaces the momentum rows from host values (resume).
    pub fn set_velocity(
        &mut self,
        velocity: RowStore<f32>,
        bias_velocity: Option<Vec<f32>>,
    ) -> Result<(), HeadError> {
        let (n, d) = (self.shard.len, self.config.embedding_size);
        self.check_storage("momentum", &velocity)?;
        self.check_len("momentum", velocity.len(), n * d)?;
        if let (Some(_), Some(b)) = (&self.bias_velocity, &bias_velocity) {
            self.check_len("bias_momentum", b.len(), n)?;
        }
        let device = self.weight.device();
        self.velocity = upload(velocity, [n, d], &device);
        if let (Some(slot), Some(b)) = (self.bias_velocity.as_mut(), bias_velocity) {
            *slot = Tensor::from_data(TensorData::new(b, [n]), &device);
        }
        Ok(())
    }

    /// One forward + backward step: the phases of [`crate::burn_path`] in order, then the
    /// update. `features` `[b, D]` are this rank's embeddings on the device, `labels` their
    /// classes; `step` seeds the class sampling.
    pub fn step<C: TensorComm<B> + ?Sized>(
        &mut self,
        comm: &C,
        features: Tensor<B, 2>,
        labels: &[i64],
        step: u64,
        update: DeviceUpdate,
    ) -> Result<DeviceHeadOutput<B>, HeadError> {
        let config = &self.config;
        let d = config.embedding_size;
        let gathered = gather(comm, config, features, labels)?;
        let p = prepare(
            config,
            self.shard,
            &self.weight,
            self.bias.as_ref(),
            &gathered,
            step,
        );
        let tile = p.tiles.first().map_or(0, |(a, b)| b - a);
        let stats = forward_tiles(config, &p, config.calc_acc);
        let topk = stats.topk.clone();
        let (lse, loss_sum) = reduce_statistics(comm, &gathered, stats)?;
        let loss = replicated_loss(comm, config, loss_sum)? / gathered.batch_norm as f64;
        let grads = backward_tiles(config, &p, &lse, gathered.batch_norm);
        let (mut gw, mut gb) = (grads.dws, grads.dbs);
        if !config.loss.sharded && comm.world_size() > 1 {
            // The replicas' gradients are summed before the update (no sampling here).
            gw = comm.all_reduce_tensor(gw, ReduceOp::Sum)?;
            if let Some(b) = gb.take() {
                gb = Some(comm.all_reduce_tensor(b, ReduceOp::Sum)?);
            }
        }
        let grad_features = scatter_feature_grad(comm, &gathered, &p, grads.dxop)?;
        let accuracy = if config.calc_acc {
            Some(global_accuracy(
                comm.communicator(),
                &topk,
                &gathered.labels,
                config.loss.sharded,
            )?)
        } else {
            None
        };
        debug_assert_eq!(gw.dims()[1], d);
        let gradient = HeadGradient {
            step,
            rows: p.indices.clone(),
            sampled: p.sampled.clone(),
            weight: gw,
            bias: gb,
        };
        let sampled = p.sampled.clone();
        let gradient = match update {
            DeviceUpdate::Sgd { lr } => {
                self.apply_gradient(&gradient, lr)?;
                None
            }
            DeviceUpdate::Gradient => Some(gradient),
        };
        Ok(DeviceHeadOutput {
            loss,
            grad_features,
            accuracy,
            sampled,
            tile,
            gradient,
        })
    }

    /// Sparse SGD-momentum with `grad` at `lr`: `v <- m v + (g + wd w)`, `w <- w - lr v` on the
    /// rows `grad` covers; the other rows keep their weight and momentum. The one update entry
    /// of the head: [`DeviceUpdate::Sgd`] calls it, and mixed precision calls it once the step
    /// is known to be finite.
    pub fn apply_gradient(&mut self, grad: &HeadGradient<B>, lr: f64) -> Result<(), HeadError> {
        let opt = &self.config.optimizer;
        let (m, wd) = (opt.momentum, opt.weight_decay);
        let rows = grad.sampled.len();
        let d = self.config.embedding_size;
        if grad.weight.dims() != [rows, d] {
            return Err(HeadError::Shape {
                rank: self.shard.rank,
                tensor: "grad_weight",
                got: grad.weight.dims().to_vec(),
                expected: vec![rows, d],
            });
        }
        let sgd = |w: Tensor<B, 2>, v: Tensor<B, 2>, g: Tensor<B, 2>| {
            let v = v.mul_scalar(m) + (g + w.clone().mul_scalar(wd));
            (w - v.clone().mul_scalar(lr), v)
        };
        // Back to the storage type: stochastic rounding keyed by (seed, step, class, column).
        let storage = self.config.storage;
        let store = |t: Tensor<B, 2>, tensor: RoundedTensor| {
            if !storage.is_half() {
                return t;
            }
            let classes: Vec<usize> = (0..grad.sampled.len())
                .map(|pos| self.shard.start + grad.sampled.class_at(pos))
                .collect();
            let u = device_rounding::uniforms::<B>(
                self.config.seed,
                grad.step,
                tensor,
                &classes,
                d,
                &t.device(),
            );
            device_rounding::round_stochastic(t, u, storage)
        };
        match &grad.rows {
            None => {
                let (w, v) = sgd(
                    to_f32(self.weight.clone()),
                    to_f32(self.velocity.clone()),
                    grad.weight.clone(),
                );
                let (w, v) = (
                    store(w, RoundedTensor::Weight),
                    store(v, RoundedTensor::Momentum),
                );
                (self.weight, self.velocity) = (w, v);
            }
            Some(idx) => {
                let ws = self.weight.clone().select(0, idx.clone());
                let vs = self.velocity.clone().select(0, idx.clone());
                let (nw, nv) = sgd(to_f32(ws.clone()), to_f32(vs.clone()), grad.weight.clone());
                let (nw, nv) = (
                    store(nw, RoundedTensor::Weight),
                    store(nv, RoundedTensor::Momentum),
                );
                self.weight = assign_rows(self.weight.clone(), idx, ws, nw);
                self.velocity = assign_rows(self.velocity.clone(), idx, vs, nv);
            }
        }
        if let (Some(b), Some(bv), Some(g)) = (&self.bias, &self.bias_velocity, &grad.bias) {
            let as2 = |t: &Tensor<B, 1>| {
                let n = t.dims()[0];
                t.clone().reshape([n, 1])
            };
            let (b2, bv2, g2) = (as2(b), as2(bv), as2(g));
            let (nb, nbv) = match &grad.rows {
                None => sgd(b2, bv2, g2),
                Some(idx) => {
                    let (ob, obv) = (
                        b2.clone().select(0, idx.clone()),
                        bv2.clone().select(0, idx.clone()),
                    );
                    let (sb, sbv) = sgd(ob.clone(), obv.clone(), g2);
                    (
                        assign_rows(b2, idx, ob, sb),
                        assign_rows(bv2, idx, obv, sbv),
                    )
                }
            };
            let n = self.shard.len;
            self.bias = Some(nb.reshape([n]));
            self.bias_velocity = Some(nbv.reshape([n]));
        }
        Ok(())
    }
}
