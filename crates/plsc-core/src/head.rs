//! [`ShardedHead`]: one rank's part of the classification head, and one training step of it.
//!
//! The step, on rank `r` of `N` with local features `x_r [b, D]` and labels `y_r [b]`:
//!
//! 1. **all-gather** features and labels: `X [B, D]`, `y [B]` (rank order).
//! 2. Normalise rows `Xn = X / |X|` (margin losses); sample this rank's classes (Partial FC).
//! 3. Per class tile: logits, margin at the target, running row max `M_i^r` and sum-exp `S_i^r`
//!    (`crate::cpu::tile`).
//! 4. **all-reduce (max)** of `M`; `S_i^r <- S_i^r exp(M_i^r - M_i)`; one fused **all-reduce
//!    (sum)** of `S` and of the target logits `z_iy` (0 on ranks that do not own `y_i`).
//!    `loss_i = ln S_i + M_i - z_iy`, `L = mean_i loss_i` over the global batch.
//! 5. Per class tile again: `g = dL/dcos` (`crate::cpu::tile::gradient`), `dXn += g W`,
//!    `dW = g^T Xn` projected by the weight normalisation's backward, handed to the sparse SGD
//!    step (or written out as a gradient).
//! 6. **reduce-scatter (sum)** of `dXn` so rank `r` gets the rows of its own samples; back
//!    through the feature normalisation: `dx_i = (dXn_i - (dXn_i . Xn_i) Xn_i) / |x_i|`.
//!
//! The replicated head (`sharded = false`) skips the all-gather and reduce-scatter: every rank
//! holds all classes and computes its local rows, normalised by the global batch size; the
//! weight gradient is then **all-reduced (sum)** across ranks before the update.
//!
//! Weight and momentum are stored in [`HeadStorage`] (`head_storage`): the compute type, or
//! bf16/f16 with stochastically rounded updates ([`crate::rounding`]), keyed by
//! `(seed, step, class, column)`.

use crate::cpu::HeadFloat;
use crate::cpu::topk::{TOPK, TopK};
use crate::cpu::{self, Plan, RowSink, StepRounding, StepSetup, Workspace, rows, tile};
use crate::error::HeadError;
use crate::float::Precision;
use crate::init;
use crate::loss::{LossConfig, LossKind};
use crate::margin::Margin;
use crate::sampling::{SampledClasses, sample_classes};
use crate::sgd::{SparseSgdConfig, sgd_update};
use crate::shard::ClassShard;
use crate::storage::{HeadStorage, RowStore, RowsMut};
use burn::config::Config;
use plsc_comm::{CommExt, Communicator, ReduceOp};
use std::time::Instant;

/// Default memory budget for the head's work buffers (logits kept between the passes when they
/// fit): 1 GiB.
pub const DEFAULT_MEMORY_BUDGET: usize = 1 << 30;

/// Settings of the classification head.
#[derive(Config, Debug)]
pub struct HeadConfig {
    /// Total number of classes `C` over all ranks.
    pub num_classes: usize,
    /// Embedding size `D`.
    pub embedding_size: usize,
    /// The loss and whether the head is sharded across ranks.
    #[config(default = "LossConfig::dist_arcface()")]
    pub loss: LossConfig,
    /// Partial FC sampling ratio in (0, 1]; 1 uses every class.
    #[config(default = 1.0)]
    pub sample_ratio: f64,
    /// Seed of the weight initialisation and of the class sampling.
    #[config(default = 0)]
    pub seed: u64,
    /// Class-tile width `K`; `None` lets `memory_budget` choose. A value at or above the
    /// sampled class count keeps all logits (the materialised path).
    #[config(default = "None")]
    pub chunk_size: Option<usize>,
    /// Bytes the head's work buffers may use beyond weight, momentum and gradient.
    #[config(default = "DEFAULT_MEMORY_BUDGET")]
    pub memory_budget: usize,
    /// Precision of the matrix-product operands.
    #[config(default = "Precision::F32")]
    pub precision: Precision,
    /// Compute the distributed top-1 / top-5 training accuracy.
    #[config(default = false)]
    pub calc_acc: bool,
    /// Optimiser settings of the weight shard.
    #[config(default = "SparseSgdConfig::new()")]
    pub optimizer: SparseSgdConfig,
    /// Element type of the stored weight and momentum (independent of `precision`).
    #[config(default = "HeadStorage::F32")]
    pub storage: HeadStorage,
}

impl HeadConfig {
    /// The classes rank `rank` of `world_size` holds: its balanced range when the loss is
    /// sharded, every class when the head is replicated.
    pub fn shard_of(&self, rank: usize, world_size: usize) -> Result<ClassShard, HeadError> {
        if self.loss.sharded {
            ClassShard::for_rank(self.num_classes, world_size, rank)
        } else {
            Ok(ClassShard {
                rank,
                start: 0,
                len: self.num_classes,
            })
        }
    }

    /// Checks every setting.
    pub fn validate(&self) -> Result<(), HeadError> {
        self.loss.validate()?;
        if self.num_classes == 0 || self.embedding_size == 0 {
            return Err(HeadError::Config {
                name: "num_classes/embedding_size",
                detail: format!(
                    "must be > 0, got {} and {}",
                    self.num_classes, self.embedding_size
                ),
            });
        }
        if !(self.sample_ratio > 0.0 && self.sample_ratio <= 1.0) {
            return Err(HeadError::Config {
                name: "sample_ratio",
                detail: format!("must be in (0, 1], got {}", self.sample_ratio),
            });
        }
        if !self.loss.sharded && self.sample_ratio < 1.0 {
            return Err(HeadError::Config {
                name: "sample_ratio",
                detail: "class sampling needs the sharded head (a `dist_` loss): replicas would sample different classes".into(),
            });
        }
        if self.chunk_size == Some(0) {
            return Err(HeadError::Config {
                name: "chunk_size",
                detail: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// What happens to the weight shard in a step.
pub enum WeightUpdate<'a, T> {
    /// Sparse SGD with momentum at this learning rate (settings from [`HeadConfig::optimizer`]).
    Sgd { lr: f64 },
    /// Leave the weight alone and write its gradient into `weight` (`[C_r, D]`, or `[C, D]` for
    /// the replicated head) and `bias`; rows not used this step get zeros.
    Gradient {
        weight: &'a mut [T],
        bias: Option<&'a mut [T]>,
    },
    /// Leave the weight alone and write the gradient of the sampled rows only, in sampled
    /// order, into `weight` (resized to `[C_s, D]`) and `bias` (`[C_s]`): what mixed precision
    /// keeps until [`ShardedHead::apply_sampled_gradient`], with no buffer of the shard's size.
    SampledGradient {
        weight: &'a mut Vec<T>,
        bias: Option<&'a mut Vec<T>>,
    },
}

/// Top-1 / top-5 accuracy over the global batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    pub top1: f64,
    pub top5: f64,
}

/// Which path a step took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadPath {
    Materialised,
    Chunked { tile: usize },
}

/// The result of one step on one rank.
#[derive(Debug, Clone)]
pub struct HeadOutput<T> {
    /// Mean loss over the global batch (the same on every rank).
    pub loss: f64,
    /// `dL/dx` for this rank's own rows `[b, D]`.
    pub grad_features: Vec<T>,
    pub accuracy: Option<Accuracy>,
    /// Classes of this rank that took part.
    pub sampled_classes: usize,
    pub path: HeadPath,
    /// Flops of this rank's matrix products.
    pub gemm_flops: f64,
    /// Bytes held by the head's work buffers after the step (beyond weight and momentum).
    pub workspace_bytes: usize,
    /// Where the step's time went on this rank.
    pub timings: HeadTimings,
}

/// Seconds spent in each part of a step on one rank.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct HeadTimings {
    /// Class tiles of the forward pass (products, margin, row statistics).
    pub forward: f64,
    /// Class tiles of the backward pass (gradient, products, weight update).
    pub backward: f64,
    /// Collectives (all-gather, all-reduces, reduce-scatter), waiting for peers included.
    pub communication: f64,
    /// Everything else (normalisation, sampling, accuracy bookkeeping).
    pub other: f64,
}

/// One rank's part of the classification head: its weight rows, their momentum (and the bias
/// of plain softmax), and reusable work buffers.
pub struct ShardedHead<T: HeadFloat> {
    config: HeadConfig,
    shard: ClassShard,
    world_size: usize,
    weight: RowStore<T>,
    velocity: RowStore<T>,
    bias: Option<Vec<T>>,
    bias_velocity: Option<Vec<T>>,
    workspace: Workspace<T>,
    xn: Vec<T>,
    /// The classes of the last step (what [`ShardedHead::apply_gradient`] updates) and its
    /// step index (the stochastic rounding's key).
    last_sampled: Option<(SampledClasses, u64)>,
}

impl<T: HeadFloat> ShardedHead<T> {
    /// Creates rank `rank`'s part, initialised from `(seed, class)` only. The replicated head
    /// (`sharded = false`) holds every class on every rank.
    pub fn new(config: HeadConfig, rank: usize, world_size: usize) -> Result<Self, HeadError> {
        config.validate()?;
        let shard = config.shard_of(rank, world_size)?;
        let d = config.embedding_size;
        let mut weight = RowStore::zeros(config.storage, shard.len * d);
        init::init_stored_rows(config.seed, shard.start, d, weight.view_mut());
        let softmax = config.loss.kind == LossKind::Softmax;
        Ok(Self {
            velocity: RowStore::zeros(config.storage, shard.len * d),
            bias: softmax.then(|| init::init_bias(shard.len)),
            bias_velocity: softmax.then(|| vec![T::zero(); shard.len]),
            config,
            shard,
            world_size,
            weight,
            workspace: Workspace::default(),
            xn: Vec::new(),
            last_sampled: None,
        })
    }

    /// Checks that `rows` are stored as this head stores its rows.
    fn check_storage(&self, tensor: &'static str, rows: &RowStore<T>) -> Result<(), HeadError> {
        rows.expect_storage(self.config.storage, self.shard.rank, tensor)
    }

    /// Replaces weight (and bias) rows, for loading checkpoints or given weights. The rows must
    /// be in the head's storage type.
    pub fn set_weight(
        &mut self,
        weight: RowStore<T>,
        bias: Option<Vec<T>>,
    ) -> Result<(), HeadError> {
        self.check_storage("weight", &weight)?;
        let expected = vec![self.shard.len, self.config.embedding_size];
        if weight.len() != self.shard.len * self.config.embedding_size {
            return Err(HeadError::Shape {
                rank: self.shard.rank,
                tensor: "weight",
                got: vec![weight.len()],
                expected,
            });
        }
        match (&mut self.bias, bias) {
            (Some(b), Some(new)) if new.len() == self.shard.len => *b = new,
            (Some(_), Some(new)) => {
                return Err(HeadError::Shape {
                    rank: self.shard.rank,
                    tensor: "bias",
                    got: vec![new.len()],
                    expected: vec![self.shard.len],
                });
            }
            _ => {}
        }
        self.weight = weight;
        Ok(())
    }

    /// Replaces the momentum rows (checkpoint resume), in the head's storage type.
    pub fn set_velocity(
        &mut self,
        velocity: RowStore<T>,
        bias_velocity: Option<Vec<T>>,
    ) -> Result<(), HeadError> {
        self.check_storage("momentum", &velocity)?;
        if velocity.len() != self.weight.len() {
            return Err(HeadError::Shape {
                rank: self.shard.rank,
                tensor: "momentum",
                got: vec![velocity.len()],
                expected: vec![self.shard.len, self.config.embedding_size],
            });
        }
        self.velocity = velocity;
        if let (Some(bv), Some(new)) = (&mut self.bias_velocity, bias_velocity) {
            if new.len() != bv.len() {
                return Err(HeadError::Shape {
                    rank: self.shard.rank,
                    tensor: "bias_momentum",
                    got: vec![new.len()],
                    expected: vec![bv.len()],
                });
            }
            *bv = new;
        }
        Ok(())
    }

    pub fn config(&self) -> &HeadConfig {
        &self.config
    }
    pub fn shard(&self) -> ClassShard {
        self.shard
    }
    /// Weight rows `[C_r, D]`, row-major, in the storage type.
    pub fn weight(&self) -> &RowStore<T> {
        &self.weight
    }
    /// Momentum rows `[C_r, D]`, in the storage type.
    pub fn velocity(&self) -> &RowStore<T> {
        &self.velocity
    }
    /// The stored weight and momentum rows, moved out (no copy: at ten million classes a copy
    /// would not fit beside them).
    pub fn into_rows(self) -> (RowStore<T>, RowStore<T>) {
        (self.weight, self.velocity)
    }
    /// Bias (plain softmax only).
    pub fn bias(&self) -> Option<&[T]> {
        self.bias.as_deref()
    }
    pub fn bias_velocity(&self) -> Option<&[T]> {
        self.bias_velocity.as_deref()
    }
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The classes (local indices) that took part in the last step, if any ran.
    pub fn last_sampled(&self) -> Option<&SampledClasses> {
        self.last_sampled.as_ref().map(|(s, _)| s)
    }

    /// Sparse SGD-momentum with a gradient that a [`WeightUpdate::Gradient`] step wrote
    /// (`[C_r, D]`, and the bias's `[C_r]`): `v <- m v + (g + wd w)`, `w <- w - lr v` on the
    /// rows that took part in that step only (every row without sampling), exactly what
    /// [`WeightUpdate::Sgd`] does inside the step (stochastic rounding included).
    pub fn apply_gradient(
        &mut self,
        weight_grad: &[T],
        bias_grad: Option<&[T]>,
        lr: f64,
    ) -> Result<(), HeadError> {
        let d = self.config.embedding_size;
        if weight_grad.len() != self.weight.len() {
            return Err(HeadError::Shape {
                rank: self.shard.rank,
                tensor: "grad_weight",
                got: vec![weight_grad.len()],
                expected: vec![self.shard.len, d],
            });
        }
        self.apply_rows(lr, |_pos, class| {
            (
                &weight_grad[class * d..(class + 1) * d],
                bias_grad.map(|g| g[class]),
            )
        })
    }

    /// [`Self::apply_gradient`] with the gradient of the sampled rows only, in sampled order
    /// (`[C_s, D]` and `[C_s]`), as a [`WeightUpdate::SampledGradient`] step wrote it. Mixed
    /// precision calls it once the step is known to be finite, and skips it otherwise.
    pub fn apply_sampled_gradient(
        &mut self,
        weight_grad: &[T],
        bias_grad: Option<&[T]>,
        lr: f64,
    ) -> Result<(), HeadError> {
        let d = self.config.embedding_size;
        let sampled = self.last_sampled().map_or(0, SampledClasses::len);
        if weight_grad.len() != sampled * d {
            return Err(HeadError::Shape {
                rank: self.shard.rank,
                tensor: "grad_weight (sampled rows)",
                got: vec![weight_grad.len()],
                expected: vec![sampled, d],
            });
        }
        self.apply_rows(lr, |pos, _class| {
            (
                &weight_grad[pos * d..(pos + 1) * d],
                bias_grad.map(|g| g[pos]),
            )
        })
    }

    /// The update of the last step's sampled rows, each with the gradient `grad(pos, class)`
    /// gives (its row and bias entry).
    fn apply_rows<'g>(
        &mut self,
        lr: f64,
        grad: impl Fn(usize, usize) -> (&'g [T], Option<T>),
    ) -> Result<(), HeadError> {
        let d = self.config.embedding_size;
        let rank = self.shard.rank;
        let Some((sampled, step)) = self.last_sampled.as_ref() else {
            return Err(HeadError::Config {
                name: "apply_gradient",
                detail: format!("rank {rank}: no step has run, so there is no gradient to apply"),
            });
        };
        let opt = &self.config.optimizer;
        let rule = RowUpdate {
            lr: T::from_f64(lr),
            momentum: T::from_f64(opt.momentum),
            weight_decay: T::from_f64(opt.weight_decay),
            rounding: self
                .config
                .storage
                .is_half()
                .then(|| StepRounding::new(self.config.seed, *step, d)),
        };
        let (mut w, mut v) = (self.weight.view_mut(), self.velocity.view_mut());
        let mut scratch = (Vec::new(), Vec::new());
        for pos in 0..sampled.len() {
            let c = sampled.class_at(pos);
            let (g, gb) = grad(pos, c);
            rule.row(&mut w, &mut v, c, self.shard.start + c, g, &mut scratch);
            if let (Some(b), Some(bv), Some(gb)) =
                (self.bias.as_mut(), self.bias_velocity.as_mut(), gb)
            {
                sgd_update(
                    &mut b[c..=c],
                    &mut bv[c..=c],
                    &[gb],
                    rule.lr,
                    rule.momentum,
                    rule.weight_decay,
                );
            }
        }
        Ok(())
    }

    /// Phase 2: `Xn = X / |X|` into the head's buffer (margin losses; softmax keeps `X`), the
    /// operands rounded to the product precision, this rank's sampled classes (Partial FC) and
    /// each row's target among them, and the tile plan under the memory budget.
    fn normalise_and_sample(&mut self, xg: &[T], labels_g: &[i64], step: u64) -> Sampling<T> {
        let d = self.config.embedding_size;
        let precision = self.config.precision;
        let inv_xnorm = match self.config.loss.kind {
            LossKind::Margin(_) => Some(rows::normalize_rows(xg, d, &mut self.xn)),
            LossKind::Softmax => {
                self.xn.clear();
                self.xn.extend_from_slice(xg);
                None
            }
        };
        let xop: Vec<T> = if precision == Precision::F32 {
            Vec::new()
        } else {
            self.xn.iter().map(|v| v.round_to(precision)).collect()
        };
        let (sampled, targets) = batch_classes(self.shard, labels_g, &self.config, step);
        let loss = match &self.config.loss.kind {
            LossKind::Softmax => tile::TileLoss::Softmax,
            LossKind::Margin(m) => tile::TileLoss::Margin {
                margin: Margin::new(m),
                scale: T::from_f64(m.scale),
                filter: m.interclass_filter.map(T::from_f64),
            },
        };
        let plan = Plan::new(
            labels_g.len(),
            d,
            sampled.len(),
            rayon::current_num_threads(),
            self.config.chunk_size,
            self.config.memory_budget,
            size_of::<T>(),
        );
        Sampling {
            inv_xnorm,
            xop,
            sampled,
            targets,
            loss,
            plan,
        }
    }

    /// One forward + backward step (see the module doc). `step` seeds the class sampling.
    pub fn step(
        &mut self,
        comm: &dyn Communicator,
        features: &[T],
        labels: &[i64],
        step: u64,
        update: WeightUpdate<'_, T>,
    ) -> Result<HeadOutput<T>, HeadError> {
        let d = self.config.embedding_size;
        let rank = comm.rank();
        let local_rows = labels.len();
        if features.len() != local_rows * d {
            return Err(HeadError::Shape {
                rank,
                tensor: "features",
                got: vec![features.len()],
                expected: vec![local_rows, d],
            });
        }
        let sharded = self.config.loss.sharded;

        let started = Instant::now();
        let mut timings = HeadTimings::default();
        // 1. all-gather features and labels (sharded head only).
        let GlobalBatch {
            x: xg,
            labels: labels_g,
            row_counts,
            batch_norm,
        } = gather_global_batch(comm, &self.config, features, labels)?;
        timings.communication += started.elapsed().as_secs_f64();
        let rows = labels_g.len();

        // 2. normalise, sample.
        let precision = self.config.precision;
        let rounding = self
            .config
            .storage
            .is_half()
            .then(|| StepRounding::new(self.config.seed, step, d));
        let Sampling {
            inv_xnorm,
            xop,
            sampled,
            targets,
            loss,
            plan,
        } = self.normalise_and_sample(&xg, &labels_g, step);
        let setup = StepSetup {
            rows,
            dim: d,
            xop: if precision == Precision::F32 {
                &self.xn
            } else {
                &xop
            },
            targets: &targets,
            sampled: &sampled,
            class_offset: self.shard.start,
            loss,
            precision,
            calc_acc: self.config.calc_acc,
            rounding: rounding.as_ref(),
        };

        // 3. forward over this rank's class tiles.
        let t = Instant::now();
        let mut stats = cpu::forward(
            &mut self.workspace,
            &setup,
            &plan,
            self.weight.view(),
            self.bias.as_deref(),
        );

        timings.forward = t.elapsed().as_secs_f64();
        // 4. all-reduce max, then the fused sum of rescaled sum-exp and target logits.
        let t = Instant::now();
        let (lse, loss_sum) = reduce_row_statistics(comm, sharded, &mut stats)?;
        timings.communication += t.elapsed().as_secs_f64();

        // 5. backward over the same tiles, with the weight update or gradient.
        let inv_batch = T::one() / T::from_f64(batch_norm as f64);
        let replicated = !sharded && comm.world_size() > 1;
        let mut sgd_lr = None;
        let mut dense: Option<(Vec<T>, Option<Vec<T>>)> = None;
        let (mut grad_w, mut grad_b): (Option<&mut [T]>, Option<&mut [T]>) = (None, None);
        let mut sampled_grad: Option<(&mut [T], Option<&mut [T]>)> = None;
        match update {
            WeightUpdate::Sgd { lr } => {
                sgd_lr = Some(lr);
                if replicated {
                    // The replicas' gradients are summed before the (dense) update.
                    dense = Some((
                        vec![T::zero(); self.weight.len()],
                        self.bias.as_ref().map(|b| vec![T::zero(); b.len()]),
                    ));
                }
            }
            WeightUpdate::Gradient { weight, bias } => {
                if weight.len() != self.weight.len() {
                    return Err(HeadError::Shape {
                        rank,
                        tensor: "grad_weight",
                        got: vec![weight.len()],
                        expected: vec![self.shard.len, d],
                    });
                }
                weight.fill(T::zero());
                grad_w = Some(weight);
                if let Some(b) = bias {
                    b.fill(T::zero());
                    grad_b = Some(b);
                }
            }
            WeightUpdate::SampledGradient { weight, bias } => {
                let n = sampled.len();
                weight.clear();
                weight.resize(n * d, T::zero());
                let bias = bias.filter(|_| self.bias.is_some()).map(|b| {
                    b.clear();
                    b.resize(n, T::zero());
                    b.as_mut_slice()
                });
                if replicated {
                    // No sampling without sharding: the sampled rows are every row, in order.
                    grad_w = Some(weight.as_mut_slice());
                    grad_b = bias;
                } else {
                    sampled_grad = Some((weight.as_mut_slice(), bias));
                }
            }
        }
        if let Some((w, b)) = dense.as_mut() {
            grad_w = Some(w);
            grad_b = b.as_deref_mut();
        }
        let opt = &self.config.optimizer;
        let (momentum, weight_decay) = (T::from_f64(opt.momentum), T::from_f64(opt.weight_decay));
        let sink = match (grad_w.as_deref_mut(), sampled_grad) {
            (Some(weight), _) => RowSink::Gradient {
                weight,
                bias: grad_b.as_deref_mut(),
            },
            (None, Some((weight, bias))) => RowSink::SampledGradient { weight, bias },
            (None, None) => RowSink::Sgd {
                lr: T::from_f64(sgd_lr.unwrap_or(0.0)),
                momentum,
                weight_decay,
                velocity: self.velocity.view_mut(),
                bias_velocity: self.bias_velocity.as_deref_mut(),
            },
        };
        let t = Instant::now();
        let dxn = cpu::backward(
            &mut self.workspace,
            &setup,
            &plan,
            &lse,
            &stats.dpsi,
            inv_batch,
            self.weight.view_mut(),
            self.bias.as_deref_mut(),
            sink,
        );
        if replicated {
            if let Some(g) = &mut grad_w {
                comm.all_reduce(g, ReduceOp::Sum)?;
            }
            if let Some(g) = &mut grad_b {
                comm.all_reduce(g, ReduceOp::Sum)?;
            }
            if let (Some(lr), Some((gw, gb))) = (sgd_lr, dense.as_ref()) {
                let rule = RowUpdate {
                    lr: T::from_f64(lr),
                    momentum,
                    weight_decay,
                    rounding,
                };
                let (mut w, mut v) = (self.weight.view_mut(), self.velocity.view_mut());
                let mut scratch = (Vec::new(), Vec::new());
                for c in 0..self.shard.len {
                    let g = &gw[c * d..(c + 1) * d];
                    rule.row(&mut w, &mut v, c, self.shard.start + c, g, &mut scratch);
                }
                if let (Some(b), Some(bv), Some(g)) =
                    (self.bias.as_mut(), self.bias_velocity.as_mut(), gb.as_ref())
                {
                    sgd_update(b, bv, g, rule.lr, momentum, weight_decay);
                }
            }
        }

        timings.backward = t.elapsed().as_secs_f64();
        // 6. reduce-scatter the feature gradient to the rows' owners; normalisation backward.
        let t = Instant::now();
        let grad = scatter_feature_grad(
            comm,
            sharded,
            &row_counts,
            d,
            dxn,
            inv_xnorm.as_deref().map(|inv| (&self.xn[..], inv)),
        )?;
        timings.communication += t.elapsed().as_secs_f64();
        let accuracy = if self.config.calc_acc {
            Some(global_accuracy(comm, &stats.topk, &labels_g, sharded)?)
        } else {
            None
        };
        let mut loss_total = loss_sum;
        if !sharded && comm.world_size() > 1 {
            let mut l = [loss_total];
            comm.all_reduce(&mut l, ReduceOp::Sum)?;
            loss_total = l[0];
        }
        let sampled_classes = sampled.len();
        self.last_sampled = Some((sampled, step));
        Ok(HeadOutput {
            loss: loss_total / batch_norm as f64,
            grad_features: grad,
            accuracy,
            sampled_classes,
            path: if plan.materialise {
                HeadPath::Materialised
            } else {
                HeadPath::Chunked { tile: plan.tile }
            },
            gemm_flops: plan.gemm_flops(rows, d, sampled_classes),
            workspace_bytes: self.workspace.bytes() + self.xn.capacity() * size_of::<T>(),
            timings: HeadTimings {
                other: (started.elapsed().as_secs_f64()
                    - timings.forward
                    - timings.backward
                    - timings.communication)
                    .max(0.0),
                ..timings
            },
        })
    }
}

/// The sparse SGD-momentum rule ([`crate::sgd`]) on one stored row, with the step's
/// stochastic rounding in 16-bit storage.
struct RowUpdate<T> {
    lr: T,
    momentum: T,
    weight_decay: T,
    /// `Some` with 16-bit storage.
    rounding: Option<StepRounding>,
}

impl<T: HeadFloat> RowUpdate<T> {
    /// Updates row `r` (global class `class`) of `w` and `v` with gradient `g`; `scratch`
    /// holds the rows in the compute type for 16-bit storage.
    fn row(
        &self,
        w: &mut RowsMut<'_, T>,
        v: &mut RowsMut<'_, T>,
        r: usize,
        class: usize,
        g: &[T],
        scratch: &mut (Vec<T>, Vec<T>),
    ) {
        let d = g.len();
        let (lr, m, wd) = (self.lr, self.momentum, self.weight_decay);
        if let (Some(wr), Some(vr)) = (w.full_row(r, d), v.full_row(r, d)) {
            sgd_update(wr, vr, g, lr, m, wd);
            return;
        }
        let (wb, vb) = scratch;
        wb.resize(d, T::zero());
        vb.resize(d, T::zero());
        w.as_rows().read(r * d..(r + 1) * d, wb);
        v.as_rows().read(r * d..(r + 1) * d, vb);
        sgd_update(wb, vb, g, lr, m, wd);
        if let Some(keys) = &self.rounding {
            keys.write_back(w, v, r, class, wb, vb);
        }
    }
}

/// Phase 2's result on the host (the normalised features stay in the head's buffer).
struct Sampling<T: HeadFloat> {
    /// `1 / |x_i|` (margin losses).
    inv_xnorm: Option<Vec<T>>,
    /// The normalised features rounded to the product precision (empty in f32: the buffer
    /// itself is the operand).
    xop: Vec<T>,
    sampled: SampledClasses,
    targets: Vec<usize>,
    loss: tile::TileLoss<T>,
    plan: Plan,
}

/// Phase 1's result on the host: the global batch as this rank sees it.
struct GlobalBatch<T> {
    x: Vec<T>,
    labels: Vec<i64>,
    row_counts: Vec<usize>,
    /// The loss is the mean over this many rows.
    batch_norm: usize,
}

/// Phase 1: **all-gather** features and labels (sharded head on more than one rank), with the
/// shapes checked and the labels validated; the replicated head **all-reduces (sum)** its row
/// count for the global batch size.
fn gather_global_batch<T: HeadFloat>(
    comm: &dyn Communicator,
    config: &HeadConfig,
    features: &[T],
    labels: &[i64],
) -> Result<GlobalBatch<T>, HeadError> {
    let d = config.embedding_size;
    let local_rows = labels.len();
    let (x, labels_g, row_counts) = if config.loss.sharded && comm.world_size() > 1 {
        let (xg, elem_counts) = comm.all_gather_varcount(features)?;
        let (lg, row_counts) = comm.all_gather_varcount(labels)?;
        for (r, (e, n)) in elem_counts.iter().zip(&row_counts).enumerate() {
            if *e != n * d {
                return Err(HeadError::Shape {
                    rank: r,
                    tensor: "features",
                    got: vec![*e],
                    expected: vec![*n, d],
                });
            }
        }
        (xg, lg, row_counts)
    } else {
        (features.to_vec(), labels.to_vec(), vec![local_rows])
    };
    validate_labels(&labels_g, &row_counts, config.num_classes)?;
    let batch_norm = if config.loss.sharded {
        labels_g.len()
    } else {
        let mut n = [local_rows as i64];
        comm.all_reduce(&mut n, ReduceOp::Sum)?;
        n[0] as usize
    };
    Ok(GlobalBatch {
        x,
        labels: labels_g,
        row_counts,
        batch_norm,
    })
}

/// Phase 4: **all-reduce (max)** of the row maxima, the local sum-exp rescaled to the global
/// max, then one fused **all-reduce (sum)** of sum-exp and target logits (sharded head on more
/// than one rank). Returns `lse_i = M_i + ln S_i` and `sum_i (lse_i - z_iy)`.
fn reduce_row_statistics<T: HeadFloat>(
    comm: &dyn Communicator,
    sharded: bool,
    stats: &mut tile::RowStats<T>,
) -> Result<(Vec<T>, f64), HeadError> {
    if sharded && comm.world_size() > 1 {
        let mut global_max = stats.max.clone();
        comm.all_reduce(&mut global_max, ReduceOp::Max)?;
        for ((sum, local), global) in stats.sum.iter_mut().zip(&stats.max).zip(&global_max) {
            *sum = if *local == T::neg_infinity() {
                T::zero()
            } else {
                *sum * (*local - *global).exp()
            };
        }
        stats.max = global_max;
        comm.all_reduce_sum_fused(&mut [&mut stats.sum, &mut stats.target])?;
    }
    let lse: Vec<T> = (0..stats.max.len())
        .map(|i| stats.max[i] + stats.sum[i].ln())
        .collect();
    let loss_sum = (0..lse.len())
        .map(|i| (lse[i] - stats.target[i]).as_f64())
        .sum();
    Ok((lse, loss_sum))
}

/// Phase 6: **reduce-scatter (sum)** of `dXn` to the rows' owners (sharded head on more than
/// one rank), then back through the feature normalisation
/// `dx_i = (dXn_i - (dXn_i . Xn_i) Xn_i) / |x_i|` with `norm = (Xn, 1/|x|)` of the global batch.
fn scatter_feature_grad<T: HeadFloat>(
    comm: &dyn Communicator,
    sharded: bool,
    row_counts: &[usize],
    d: usize,
    mut dxn: Vec<T>,
    norm: Option<(&[T], &[T])>,
) -> Result<Vec<T>, HeadError> {
    let rank = comm.rank();
    let distributed = sharded && comm.world_size() > 1;
    let local_rows = if distributed {
        row_counts.get(rank).copied().unwrap_or(0)
    } else {
        row_counts.first().copied().unwrap_or(0)
    };
    let mut grad = if distributed {
        let counts: Vec<usize> = row_counts.iter().map(|n| n * d).collect();
        let mut mine = vec![T::zero(); local_rows * d];
        comm.reduce_scatter(&dxn, &mut mine, &counts)?;
        mine
    } else {
        dxn.truncate(local_rows * d);
        dxn
    };
    if let Some((xn, inv)) = norm {
        let first = if distributed {
            row_counts[..rank].iter().sum::<usize>()
        } else {
            0
        };
        for i in 0..local_rows {
            let xn_row = &xn[(first + i) * d..(first + i + 1) * d];
            rows::normalize_backward_row(&mut grad[i * d..(i + 1) * d], xn_row, inv[first + i]);
        }
    }
    Ok(grad)
}

/// Top-1 / top-5 over the global batch: the sharded head all-gathers each rank's per-row
/// top-5 (values and class indices, never the logits) and merges them in rank order; the
/// replicated head sums its hit counts.
pub(crate) fn global_accuracy(
    comm: &dyn Communicator,
    topk: &[TopK],
    labels: &[i64],
    sharded: bool,
) -> Result<Accuracy, HeadError> {
    let rows = labels.len();
    let mut merged = topk.to_vec();
    if sharded && comm.world_size() > 1 {
        let values: Vec<f64> = topk.iter().flat_map(|t| t.values).collect();
        let classes: Vec<i64> = topk.iter().flat_map(|t| t.classes).collect();
        let all_values = comm.all_gather(&values)?;
        let all_classes = comm.all_gather(&classes)?;
        merged = vec![TopK::default(); rows];
        for r in 0..comm.world_size() {
            for (i, m) in merged.iter_mut().enumerate() {
                let at = (r * rows + i) * TOPK;
                let mut other = TopK::default();
                other.values.copy_from_slice(&all_values[at..at + TOPK]);
                other.classes.copy_from_slice(&all_classes[at..at + TOPK]);
                m.merge(&other);
            }
        }
    }
    let mut hits = [0.0f64, 0.0, rows as f64];
    for (t, y) in merged.iter().zip(labels) {
        hits[0] += f64::from(u8::from(t.hit(*y, 1)));
        hits[1] += f64::from(u8::from(t.hit(*y, 5)));
    }
    if !sharded && comm.world_size() > 1 {
        comm.all_reduce(&mut hits, ReduceOp::Sum)?;
    }
    let n = hits[2].max(1.0);
    Ok(Accuracy {
        top1: hits[0] / n,
        top5: hits[1] / n,
    })
}

/// Checks every label of the global batch; the error names the rank the sample came from and
/// its index there, and is the same on every rank.
pub(crate) fn validate_labels(
    labels: &[i64],
    row_counts: &[usize],
    num_classes: usize,
) -> Result<(), HeadError> {
    for (i, &y) in labels.iter().enumerate() {
        if y < 0 || y as usize >= num_classes {
            let (rank, sample) = locate(row_counts, i);
            return Err(HeadError::LabelOutOfRange {
                rank,
                sample,
                label: y,
                num_classes,
            });
        }
    }
    Ok(())
}

/// This rank's sampled classes for a global batch, and each row's target position in them
/// ([`tile::NO_TARGET`] where the label is another rank's class).
pub(crate) fn batch_classes(
    shard: ClassShard,
    labels: &[i64],
    config: &HeadConfig,
    step: u64,
) -> (SampledClasses, Vec<usize>) {
    let mut positives: Vec<usize> = labels
        .iter()
        .filter(|y| shard.contains(**y as usize))
        .map(|y| *y as usize - shard.start)
        .collect();
    positives.sort_unstable();
    positives.dedup();
    let sampled = sample_classes(
        shard.len,
        &positives,
        config.sample_ratio,
        config.seed,
        step,
        shard.rank,
    );
    let targets = labels
        .iter()
        .map(|y| {
            let y = *y as usize;
            if shard.contains(y) {
                sampled
                    .position_of(y - shard.start)
                    .unwrap_or(tile::NO_TARGET)
            } else {
                tile::NO_TARGET
            }
        })
        .collect();
    (sampled, targets)
}

/// Maps a global row index to (source rank, index within that rank's rows).
fn locate(row_counts: &[usize], mut i: usize) -> (usize, usize) {
    for (r, n) in row_counts.iter().enumerate() {
        if i < *n {
            return (r, i);
        }
        i -= n;
    }
    (row_counts.len().saturating_sub(1), i)
}
