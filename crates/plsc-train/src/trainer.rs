//! The training loop of one rank ([`train_rank`]; [`train`] runs it on rank threads), generic
//! over the backend, the model and the communicator. The rank has its backbone replica, its
//! data and its head shard ([`crate::head::RankHead`]: host rows with the CPU kernel, or
//! tensors on the device). One step on rank `r`:
//!
//! 1. the local batch, taken and copied to the device during the previous step (`data` time:
//!    waiting for it);
//! 2. backbone forward under autodiff (`backbone` time);
//! 3. the head's step on the detached embeddings (host placement: copied to the host; device
//!    placement: they stay on the device): distributed margin softmax, the head's own sparse
//!    SGD update (or, under mixed precision, its gradient, applied only once the step is known
//!    to be finite), and `dL/dx` for the local rows (`head` time, its collectives included);
//! 4. `dL/dx` (times the loss scale) injected into the backbone graph, backward (`backbone`);
//! 5. gradients flattened and summed across ranks, on the host or on the device (`comm` time);
//! 6. unscale, skip the step if anything is non-finite (mixed precision), clip the global norm,
//!    SGD-momentum step (`backbone`).
//!
//! BatchNorm running statistics stay per rank; rank 0's are the ones evaluated and saved (the
//! other ranks' are never read, which is what broadcasting rank 0's before evaluation and
//! saving amounts to).
//!
//! Mixed precision: the head's products use f16 operands with f32 accumulation, with dynamic
//! loss scaling that skips non-finite steps. On the device placement (GPUs) the backbone's
//! convolutions and linear layer run in f16 too ([`plsc_models::amp`]: casts at layer
//! boundaries, f32 master weights); on the host placement (the CPU) the backbone stays f32.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::optim::Optimizer;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommExt, Communicator, run_ranks};
use plsc_eval::{EmbedderError, EvalOptions, PairSet, Verification, VerifyConfig};
use plsc_models::grad::backward_with_grad;
use plsc_models::optim::{
    SgdMomentumConfig, SgdMomentumOptimizer, velocity_module, velocity_record,
};
use serde::Serialize;

use crate::entry::Entry;
use crate::error::{Result, TrainError};
use crate::head::RankHead;
use crate::model::TrainModel;
use crate::records::{EvalRecord, LogRecord};
use crate::run_dir::JsonLines;
use crate::scaler::LossScaler;
use crate::sync::{DeviceGrads, FlatGrads, unscale_clip_factor};

/// One rank's batch: `images` NCHW (`b * C * S * S` floats) and `b` labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalBatch {
    /// Normalised images, NCHW.
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<i64>,
}

/// A rank's batches, in order.
pub type BatchIter = Box<dyn Iterator<Item = Result<LocalBatch>> + Send>;

/// How long the run is: its steps, where it starts, and the data stream's pass length
/// (named apart from the head kernel's `plsc_core::cpu::Plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunPlan {
    /// Steps per epoch (global batches per pass over the data).
    pub steps_per_epoch: u64,
    /// Steps of the run.
    pub total_steps: u64,
    /// The first step to run (steps already done: the checkpoint's step when resuming).
    pub start_step: u64,
    /// Batches per pass of a rank's data stream (for the data position a checkpoint records;
    /// differs from `steps_per_epoch` when `train_image_num` is set).
    pub data_steps_per_epoch: u64,
}

impl RunPlan {
    /// `entry.train_steps`, or `train_epochs * steps_per_epoch`, from step 0.
    pub fn new(entry: &Entry, steps_per_epoch: u64) -> Self {
        let steps_per_epoch = steps_per_epoch.max(1);
        Self {
            steps_per_epoch,
            total_steps: entry
                .train_steps
                .unwrap_or(entry.train_epochs * steps_per_epoch),
            start_step: 0,
            data_steps_per_epoch: steps_per_epoch,
        }
    }

    /// The same run, continuing after `steps_done` steps.
    #[must_use]
    pub fn starting_at(self, steps_done: u64) -> Self {
        Self {
            start_step: steps_done,
            ..self
        }
    }

    /// Where a rank's data stream stands after `steps_done` batches.
    pub fn data_position(&self, steps_done: u64) -> plsc_ckpt::DataPosition {
        let per = self.data_steps_per_epoch.max(1);
        plsc_ckpt::DataPosition {
            epoch: steps_done / per,
            step: steps_done % per,
        }
    }
}

/// Where the weights of a run come from.
#[derive(Clone, Default)]
pub enum Start {
    /// The model as given and a freshly initialised head.
    #[default]
    Fresh,
    /// Continue this checkpoint's run: backbone and head weights and momentum, loss scale;
    /// the caller starts the plan at the checkpoint's step and the data where it stood.
    Resume(Arc<plsc_ckpt::Checkpoint>),
    /// Fine-tune: the checkpoint's backbone weights (and head rows when `with_head`), no
    /// momentum, from step 0; any rank count.
    Pretrained {
        /// The checkpoint.
        checkpoint: Arc<plsc_ckpt::Checkpoint>,
        /// Load the head rows too.
        with_head: bool,
    },
}

/// Where the loop reports, besides its return value.
#[derive(Default)]
pub struct Outputs {
    /// `metrics.jsonl` (rank 0 writes it).
    pub metrics: Option<JsonLines>,
    /// Show a progress bar.
    pub progress: bool,
    /// Verification sets (name, decoded pairs) for rank 0.
    pub val_sets: Vec<(String, PairSet)>,
    /// Save checkpoints under this root (every rank its head shard, rank 0 the backbone and
    /// its momentum), describing this backbone: every `entry.checkpoint_period` steps and at
    /// the end. Every rank needs it.
    pub checkpoint: Option<(std::path::PathBuf, plsc_ckpt::ModelSpec)>,
    /// Where the weights come from. Every rank needs it.
    pub start: Start,
    /// Rank 0's memory sampler: its steady window opens when the first step starts (after the
    /// head and the backbone are built and loaded) and closes after the last.
    pub memory: Option<std::sync::Arc<crate::memory::RssAnonSampler>>,
}

impl Outputs {
    /// What ranks other than 0 get: the checkpoint settings and the start, nothing to report.
    fn for_other_rank(&self) -> Self {
        Self {
            checkpoint: self.checkpoint.clone(),
            start: self.start.clone(),
            ..Self::default()
        }
    }
}

/// Seconds rank 0 spent in each part of the steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// Waiting for batches.
    pub data_s: f64,
    /// Forward, backward, host copies, unscale/clip and the optimiser step.
    pub backbone_s: f64,
    /// The head's step, its collectives included.
    pub head_s: f64,
    /// The backbone's gradient all-reduce, flattening included.
    pub comm_s: f64,
    /// Verification.
    pub eval_s: f64,
    /// Everything.
    pub total_s: f64,
}

/// Seconds of one step on rank 0, by part (as in [`Timings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StepTiming {
    /// Waiting for the batch.
    pub data_s: f64,
    /// Backbone forward, backward and update.
    pub backbone_s: f64,
    /// The head's step.
    pub head_s: f64,
    /// The gradient all-reduce.
    pub comm_s: f64,
}

/// What a rank ends with.
pub struct RankResult<M> {
    /// The trained model.
    pub model: M,
    /// The head's weight shard `[C_r, D]`, in its storage type.
    pub head_weight: plsc_core::RowStore<f32>,
    /// Its momentum.
    pub head_velocity: plsc_core::RowStore<f32>,
}

/// What a run gives back.
pub struct TrainOutcome<M> {
    /// The loss of every step (the global-batch mean, as every rank sees it).
    pub losses: Vec<f64>,
    /// The log records.
    pub logs: Vec<LogRecord>,
    /// The verification results.
    pub evals: Vec<EvalRecord>,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    /// Final loss scale.
    pub loss_scale: f64,
    /// Rank 0's time split.
    pub timings: Timings,
    /// Rank 0's time split of every step.
    pub steps: Vec<StepTiming>,
    /// Every rank's model and head shard, rank 0 first.
    pub ranks: Vec<RankResult<M>>,
}

/// Runs `entry` on `entry.ranks` rank threads: every rank starts from a replica of `base`;
/// `data(rank)` gives rank `rank`'s batches of `entry.train_batch_size` images each (from
/// `plan.start_step` on). Rank 0 reports through `outputs`.
pub fn train<B, M, F>(
    entry: &Entry,
    base: &M,
    device: &B::Device,
    plan: RunPlan,
    data: F,
    outputs: Outputs,
) -> Result<TrainOutcome<M>>
where
    B: AutodiffBackend,
    M: TrainModel<B>,
    F: Fn(usize) -> Result<BatchIter> + Sync,
{
    entry.validate()?;
    let n = entry.ranks;
    // burn initialises parameters lazily; replicas of an unmaterialised model would each draw
    // their own values.
    base.visit(&mut Materialize);
    let replicas: Mutex<Vec<Option<M>>> =
        Mutex::new((0..n).map(|_| Some(base.replica())).collect());
    let others = outputs.for_other_rank();
    let rank0_outputs = Mutex::new(Some(outputs));
    let results = run_ranks(n, |comm| -> Result<TrainOutcome<M>> {
        let rank = comm.rank();
        let model = replicas
            .lock()
            .ok()
            .and_then(|mut v| v[rank].take())
            .ok_or(TrainError::Config {
                name: "ranks",
                detail: format!("rank {rank} found no model replica"),
            })?;
        let out = if rank == 0 {
            rank0_outputs.lock().ok().and_then(|mut o| o.take())
        } else {
            None
        }
        .unwrap_or_else(|| others.for_other_rank());
        let batches = data(rank)?;
        train_rank::<B, M, _>(entry, &comm, model, device, plan, batches, out)
    });
    let mut outs = Vec::with_capacity(n);
    for r in results {
        outs.push(r?);
    }
    let mut first = outs.remove(0);
    first.ranks.extend(outs.into_iter().flat_map(|o| o.ranks));
    Ok(first)
}

struct Materialize;

impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

fn to_f32_vec<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default()
}

/// One batch taken from a rank's stream and copied to the device.
struct Fetched<B: AutodiffBackend> {
    images: Tensor<B, 4>,
    labels: Vec<i64>,
}

/// Takes the batch of `step` from `batches`, checks its size and copies its images to
/// `device`.
fn fetch<B: AutodiffBackend>(
    batches: &mut BatchIter,
    entry: &Entry,
    rank: usize,
    step: u64,
    total: u64,
    device: &B::Device,
) -> Result<Fetched<B>> {
    let b = entry.train_batch_size;
    let (c, s) = (entry.in_channels, entry.input_size);
    let pixels = b * c * s * s;
    let batch = match batches.next() {
        Some(b) => b?,
        None => return Err(TrainError::DataEnded { rank, step, total }),
    };
    if batch.labels.len() != b || batch.images.len() != pixels {
        return Err(TrainError::Batch {
            rank,
            step,
            detail: format!(
                "{} labels and {} floats, expected {b} and {pixels} ([{b}, {c}, {s}, {s}])",
                batch.labels.len(),
                batch.images.len()
            ),
        });
    }
    Ok(Fetched {
        images: Tensor::from_data(TensorData::new(batch.images, [b, c, s, s]), device),
        labels: batch.labels,
    })
}

/// The backbone's gradients of one step, where the placement keeps them.
enum StepGradsBuf<B: AutodiffBackend> {
    Host(FlatGrads),
    Device(DeviceGrads<B::InnerBackend>),
}

/// Runs this rank's part of `entry` on `comm` (a thread of [`train`], or a process of a
/// multi-process group with `comm.world_size() == entry.ranks`): `model` is this rank's
/// replica (the same values on every rank), `batches` its data from `plan.start_step` on.
/// The outcome holds this rank's model and head shard only; the losses are the global-batch
/// means every rank sees.
pub fn train_rank<B, M, C>(
    entry: &Entry,
    comm: &C,
    mut model: M,
    device: &B::Device,
    plan: RunPlan,
    mut batches: BatchIter,
    outputs: Outputs,
) -> Result<TrainOutcome<M>>
where
    B: AutodiffBackend,
    M: TrainModel<B>,
    C: TensorComm<B::InnerBackend> + ?Sized,
{
    let tcomm = comm;
    let comm: &dyn Communicator = tcomm.communicator();
    if comm.world_size() != entry.ranks {
        return Err(TrainError::Config {
            name: "ranks",
            detail: format!(
                "the settings say {} ranks, the communicator holds {}",
                entry.ranks,
                comm.world_size()
            ),
        });
    }
    let checkpoint = outputs.checkpoint.clone();
    let init = outputs.start.clone();
    let mut out = Some(outputs);
    let rank = comm.rank();
    let head_err = |source| TrainError::head(rank, source);
    let head_cfg = entry.head_config()?;
    let placement = entry.placement()?;
    // Mixed precision on the device also runs the backbone's products in f16 (on the host
    // placement the backbone stays f32: burn-flex's f16 kernels are slower than its f32 ones).
    let autocast = match placement {
        crate::device::Placement::Device if entry.mixed_precision => {
            plsc_models::amp::Autocast::F16
        }
        _ => plsc_models::amp::Autocast::Off,
    };
    let mut head =
        RankHead::<B::InnerBackend>::new(placement, head_cfg, rank, comm.world_size(), device)
            .map_err(head_err)?;
    let mut optim = SgdMomentumConfig::new()
        .with_momentum(entry.momentum)
        .with_weight_decay(entry.weight_decay)
        .init::<B, M>();
    let schedule = entry.schedule(plan.steps_per_epoch, plan.total_steps);
    let mut scaler = LossScaler::new(entry.loss_scale.clone());
    let mixed = entry.mixed_precision;
    let ckpt_err = |source: plsc_ckpt::CkptError| TrainError::Checkpoint {
        rank,
        source: Box::new(source),
    };
    match &init {
        Start::Fresh => {}
        Start::Resume(ckpt) => {
            (model, optim) = load_backbone::<B, M>(model, optim, ckpt, true, rank)?;
            head.load(ckpt, true).map_err(|e| ckpt_err(*e))?;
            if let Some(state) = &ckpt.manifest().training.loss_scale {
                scaler = LossScaler::restore(entry.loss_scale.clone(), state);
            }
        }
        Start::Pretrained {
            checkpoint,
            with_head,
        } => {
            (model, optim) = load_backbone::<B, M>(model, optim, checkpoint, false, rank)?;
            if *with_head {
                head.load(checkpoint, false).map_err(|e| ckpt_err(*e))?;
            }
        }
    }
    let is_logger = rank == 0;
    let progress = out.as_ref().is_some_and(|o| o.progress);
    let bar = if progress {
        let bar = ProgressBar::new(plan.total_steps);
        bar.set_position(plan.start_step);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} steps, eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };

    let mut losses = Vec::with_capacity(plan.total_steps as usize);
    let mut logs = Vec::new();
    let mut evals = Vec::new();
    let mut t = Timings::default();
    let mut step_times = Vec::with_capacity(plan.total_steps as usize);
    let start = Instant::now();
    let mut window_start = Instant::now();
    let mut window_loss = 0.0;
    let mut window_data = 0.0;
    let mut window_steps = 0u64;

    // The batch of the next step is taken and copied to the device while this step's kernels
    // run (on GPUs the copy overlaps the compute; on the CPU it only changes when it happens).
    let mut ahead: Option<Fetched<B>> = None;
    let memory = out.as_ref().and_then(|o| o.memory.clone());
    if let Some(m) = &memory {
        m.begin_steady();
    }
    for step in plan.start_step..plan.total_steps {
        // 1. data
        let t0 = Instant::now();
        let Fetched { images: x, labels } = match ahead.take() {
            Some(f) => f,
            None => fetch::<B>(&mut batches, entry, rank, step, plan.total_steps, device)?,
        };
        let t1 = Instant::now();

        // 2. forward (the next batch's copy is queued behind it)
        let emb = model.embed_cast(x, autocast);
        let t_fwd = Instant::now();
        if step + 1 < plan.total_steps {
            ahead = Some(fetch::<B>(
                &mut batches,
                entry,
                rank,
                step + 1,
                plan.total_steps,
                device,
            )?);
        }
        let t2 = Instant::now();

        // 3. head
        let lr = schedule.lr_at(step);
        let ho = head
            .step(tcomm, emb.clone().inner(), &labels, step, lr, mixed)
            .map_err(head_err)?;
        let t3 = Instant::now();

        // 4. backward with the (scaled) feature gradient
        let loss_scale = if mixed { scaler.scale() } else { 1.0 };
        let mut g = ho.grad_features;
        if loss_scale != 1.0 {
            g = g.mul_scalar(loss_scale as f32);
        }
        let raw =
            backward_with_grad::<B>(emb, g).map_err(|source| TrainError::model(rank, source))?;
        let mut grads = burn::optim::GradientsParams::from_grads(raw, &model);
        let mut flat = match placement {
            crate::device::Placement::Host => {
                StepGradsBuf::<B>::Host(FlatGrads::collect::<B, M>(&model, &mut grads))
            }
            crate::device::Placement::Device => {
                StepGradsBuf::Device(DeviceGrads::collect::<B, M>(&model, &mut grads, device))
            }
        };
        // The head's gradient is finite or not on each shard: one flag per rank, summed.
        let head_ok = !mixed || (ho.head_finite && ho.loss.is_finite());
        let t4 = Instant::now();

        // 5. sum across ranks
        let mut flag = [if head_ok { 0.0f32 } else { 1.0 }];
        match &mut flat {
            StepGradsBuf::Host(f) => {
                if mixed {
                    f.values.push(flag[0]);
                }
                f.all_reduce_sum(comm)?;
                if mixed {
                    flag[0] = f.values.pop().unwrap_or(f32::INFINITY);
                }
            }
            StepGradsBuf::Device(f) => {
                f.all_reduce_sum(tcomm)?;
                if mixed && comm.world_size() > 1 {
                    comm.all_reduce(&mut flag, plsc_comm::ReduceOp::Sum)?;
                }
            }
        }
        let t5 = Instant::now();

        // 6. unscale, check, clip, step
        let finite = !mixed
            || (flag[0] == 0.0
                && match &flat {
                    StepGradsBuf::Host(f) => f.all_finite(),
                    StepGradsBuf::Device(f) => f.all_finite(),
                });
        if scaler.update(finite) {
            let norm = match &flat {
                StepGradsBuf::Host(f) => f.norm(),
                StepGradsBuf::Device(f) => f.norm(),
            };
            let factor = unscale_clip_factor(norm, loss_scale, entry.grad_clip_norm);
            let grads = match flat {
                StepGradsBuf::Host(mut f) => {
                    f.scale(factor);
                    f.into_grads::<B, M>(&model, device)
                }
                StepGradsBuf::Device(mut f) => {
                    f.scale(factor);
                    f.into_grads::<B, M>(&model)
                }
            };
            model = optim.step(lr, model, grads);
            if let Some(pending) = ho.pending {
                head.apply_gradient(pending, lr).map_err(head_err)?;
            }
        } else if is_logger {
            bar.suspend(|| {
                tracing::warn!(
                    step,
                    loss_scale,
                    skipped = scaler.skipped_total(),
                    "non-finite gradients: step skipped, loss scale now {}",
                    scaler.scale()
                )
            });
        }
        let t6 = Instant::now();
        let st = StepTiming {
            data_s: (t1 - t0).as_secs_f64() + (t2 - t_fwd).as_secs_f64(),
            backbone_s: (t_fwd - t1).as_secs_f64()
                + (t4 - t3).as_secs_f64()
                + (t6 - t5).as_secs_f64(),
            head_s: (t3 - t2).as_secs_f64(),
            comm_s: (t5 - t4).as_secs_f64(),
        };
        t.data_s += st.data_s;
        t.backbone_s += st.backbone_s;
        t.head_s += st.head_s;
        t.comm_s += st.comm_s;
        step_times.push(st);

        losses.push(ho.loss);
        window_loss += ho.loss;
        window_data += st.data_s;
        window_steps += 1;
        let done = step + 1;
        bar.inc(1);

        // logging
        if is_logger && (done % entry.log_period == 0 || done == plan.total_steps) {
            let secs = window_start.elapsed().as_secs_f64().max(1e-9);
            let rec = LogRecord {
                kind: "train",
                epoch: step / plan.steps_per_epoch,
                step: done,
                lr,
                loss: window_loss / window_steps as f64,
                images_per_sec: (window_steps as usize * entry.global_batch()) as f64 / secs,
                data_wait_s: window_data / window_steps.max(1) as f64,
                acc1: ho.accuracy.map(|a| a.top1),
                acc5: ho.accuracy.map(|a| a.top5),
                loss_scale: if mixed { scaler.scale() } else { 1.0 },
                skipped_steps: scaler.skipped_total(),
                elapsed_s: start.elapsed().as_secs_f64(),
            };
            bar.set_message(format!("loss {:.4}", rec.loss));
            bar.suspend(|| {
                tracing::info!(
                    epoch = rec.epoch,
                    step = rec.step,
                    lr = format!("{:.5}", rec.lr),
                    loss = format!("{:.4}", rec.loss),
                    images_per_sec = format!("{:.1}", rec.images_per_sec),
                    data_wait_ms = format!("{:.1}", rec.data_wait_s * 1e3),
                    acc1 = rec.acc1.map(|a| format!("{a:.4}")).unwrap_or_default(),
                    acc5 = rec.acc5.map(|a| format!("{a:.4}")).unwrap_or_default(),
                    loss_scale = rec.loss_scale,
                    skipped = rec.skipped_steps,
                    "train"
                )
            });
            if let Some(m) = out.as_mut().and_then(|o| o.metrics.as_mut()) {
                m.write(&rec)?;
            }
            logs.push(rec);
            window_start = Instant::now();
            window_loss = 0.0;
            window_data = 0.0;
            window_steps = 0;
        }

        // verification, after every rank takes rank 0's running statistics (a collective: all
        // ranks reach it at the same steps)
        let periodic = entry.test_period > 0 && done % entry.test_period == 0;
        let evaluate = entry.with_test && (periodic || done == plan.total_steps);
        if evaluate || done == plan.total_steps {
            model = broadcast_running_stats(comm, model, rank)?;
        }
        if evaluate && is_logger {
            let te = Instant::now();
            if let Some(o) = out.as_mut() {
                for (name, set) in &o.val_sets {
                    let v = verify::<B, M>(&model, set, entry, device)
                        .map_err(|source| TrainError::eval(name.clone(), source))?;
                    let rec = EvalRecord::new(done, name, &v);
                    bar.suspend(|| {
                        tracing::info!(
                            step = done,
                            target = %name,
                            accuracy = format!("{:.4}", rec.accuracy),
                            std = format!("{:.4}", rec.accuracy_std),
                            tar = format!("{:.4}", rec.tar),
                            far = rec.far,
                            xnorm = format!("{:.3}", rec.xnorm),
                            "verification"
                        )
                    });
                    if let Some(m) = o.metrics.as_mut() {
                        m.write(&rec)?;
                    }
                    evals.push(rec);
                }
            }
            window_start += te.elapsed();
            t.eval_s += te.elapsed().as_secs_f64();
        }

        if let Some((root, spec)) = checkpoint.as_ref() {
            let periodic = entry.checkpoint_period > 0 && done % entry.checkpoint_period == 0;
            if periodic || done == plan.total_steps {
                let dir = save_checkpoint::<B, M>(
                    entry,
                    comm,
                    (root, spec),
                    &head,
                    &model,
                    &optim,
                    mixed.then_some(&scaler),
                    &plan,
                    done,
                )?;
                if is_logger {
                    bar.suspend(|| tracing::info!(dir = %dir.display(), "checkpoint saved"));
                }
            }
        }
    }
    if let Some(m) = &memory {
        m.end_steady();
    }
    bar.finish_and_clear();
    t.total_s = start.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        losses,
        logs,
        evals,
        skipped_steps: scaler.skipped_total(),
        loss_scale: if mixed { scaler.scale() } else { 1.0 },
        timings: t,
        steps: step_times,
        ranks: vec![{
            let (head_weight, head_velocity) = head.into_host_rows();
            RankResult {
                model,
                head_weight,
                head_velocity,
            }
        }],
    })
}

/// `model` and `optim` with the weights (and, to resume, the momentum) of `ckpt`'s backbone.
fn load_backbone<B, M>(
    model: M,
    mut optim: SgdMomentumOptimizer<M, B>,
    ckpt: &plsc_ckpt::Checkpoint,
    with_momentum: bool,
    rank: usize,
) -> Result<(M, SgdMomentumOptimizer<M, B>)>
where
    B: AutodiffBackend,
    M: TrainModel<B>,
{
    let state = ckpt
        .load_backbone()
        .map_err(|source| TrainError::Checkpoint {
            rank,
            source: Box::new(source),
        })?;
    let label = ckpt
        .dir()
        .join(plsc_ckpt::manifest::BACKBONE_FILE)
        .display()
        .to_string();
    let model = model
        .load_state_tensors(&state.tensors, &label)
        .map_err(|source| TrainError::model(rank, source))?;
    if with_momentum && !state.momentum.is_empty() {
        // The velocities go through a copy of the model (same names, same layouts), then into
        // the optimiser's records by parameter position.
        let merged: Vec<plsc_models::NamedTensor> = model
            .state_tensors()
            .into_iter()
            .map(|mut t| {
                if t.kind == plsc_models::TensorKind::Param {
                    match state.momentum.iter().find(|m| m.name == t.name) {
                        Some(m) => t.values.clone_from(&m.values),
                        None => t.values.iter_mut().for_each(|v| *v = 0.0),
                    }
                }
                t
            })
            .collect();
        let velocities = model
            .clone()
            .load_state_tensors(&merged, &format!("{label} (momentum)"))
            .map_err(|source| TrainError::model(rank, source))?;
        optim = optim.load_record(velocity_record::<B, M>(&model, &velocities));
    }
    Ok((model, optim))
}

/// Saves a checkpoint after `done` steps (a collective: every rank writes its head shard,
/// rank 0 the backbone with its momentum and the manifest).
#[allow(clippy::too_many_arguments)]
fn save_checkpoint<B, M>(
    entry: &Entry,
    comm: &dyn Communicator,
    (root, spec): (&std::path::Path, &plsc_ckpt::ModelSpec),
    head: &RankHead<B::InnerBackend>,
    model: &M,
    optim: &SgdMomentumOptimizer<M, B>,
    scaler: Option<&LossScaler>,
    plan: &RunPlan,
    done: u64,
) -> Result<std::path::PathBuf>
where
    B: AutodiffBackend,
    M: TrainModel<B>,
{
    let rank = comm.rank();
    let schedule = entry.schedule(plan.steps_per_epoch, plan.total_steps);
    let training = plsc_ckpt::TrainingState {
        step: done,
        epoch: done / plan.steps_per_epoch,
        lr: plsc_ckpt::LrScheduleState {
            schedule: format!("{:?}", entry.lr_policy).to_lowercase(),
            base_lr: schedule.base_lr,
            current_lr: schedule.lr_at(done),
            step: done,
            params: [
                ("warmup_steps".to_string(), schedule.warmup_steps as f64),
                ("total_steps".to_string(), schedule.total_steps as f64),
                (
                    "last_lr".to_string(),
                    schedule.lr_at(done.saturating_sub(1)),
                ),
            ]
            .into(),
        },
        loss_scale: scaler.map(LossScaler::state),
        data: plan.data_position(done),
        seeds: plsc_ckpt::Seeds {
            global: entry.seed,
            data: entry.seed,
            head: entry.seed,
            extra: Default::default(),
        },
        extra: serde_json::json!({ "backbone_momentum_saved": true }),
    };
    let meta = plsc_ckpt::CheckpointMeta {
        head: head.config().clone(),
        world_size: comm.world_size(),
        model: Some(spec.clone()),
        training,
    };
    let (tensors, momentum) = if rank == 0 {
        let momentum: Vec<plsc_models::NamedTensor> =
            velocity_module::<B, M>(model, &optim.to_record())
                .state_tensors()
                .into_iter()
                .filter(|t| t.kind == plsc_models::TensorKind::Param)
                .map(|t| plsc_models::NamedTensor {
                    kind: plsc_models::TensorKind::Momentum,
                    ..t
                })
                .collect();
        (model.state_tensors(), momentum)
    } else {
        (Vec::new(), Vec::new())
    };
    let backbone = (rank == 0).then_some(plsc_ckpt::BackboneRef {
        tensors: &tensors,
        momentum: &momentum,
    });
    plsc_ckpt::save_rank(
        comm,
        root,
        &meta,
        backbone,
        head.rows().as_ref(),
        plsc_ckpt::SaveOptions {
            keep_last: entry.keep_last,
        },
    )
    .map_err(|source| TrainError::Checkpoint {
        rank,
        source: Box::new(source),
    })
}

/// Verifies `model` (evaluation mode: running BatchNorm statistics) on `set` with the flip
/// test.
pub fn verify<B: AutodiffBackend, M: TrainModel<B>>(
    model: &M,
    set: &PairSet,
    entry: &Entry,
    device: &B::Device,
) -> plsc_eval::Result<Verification> {
    let inner = model.valid();
    let mut embed = ValidEmbedder::<B, M> {
        inner: &inner,
        device,
    };
    plsc_eval::verify_pair_set(set, &mut embed, &verify_options(entry))
}

/// The embedder of verification during training: the evaluation-mode module (running
/// BatchNorm statistics) of a model, on `device`.
pub struct ValidEmbedder<'a, B: AutodiffBackend, M: TrainModel<B>> {
    /// The evaluation-mode module (`model.valid()`).
    pub inner: &'a M::InnerModule,
    /// Where it runs.
    pub device: &'a B::Device,
}

impl<B: AutodiffBackend, M: TrainModel<B>> plsc_eval::Embedder for ValidEmbedder<'_, B, M> {
    fn embed(&mut self, images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, EmbedderError> {
        let x = Tensor::<B::InnerBackend, 4>::from_data(
            TensorData::new(images.to_vec(), shape),
            self.device,
        );
        Ok(to_f32_vec(M::embed_valid(self.inner, x)))
    }
}

/// Batch size and folds of verification during training (`test_batch_size`, InsightFace's
/// 10 folds and FAR 1e-3).
pub fn verify_options(entry: &Entry) -> EvalOptions {
    EvalOptions {
        batch_size: entry.test_batch_size,
        verify: VerifyConfig::default(),
    }
}

/// Seconds as a [`Duration`] (for printing).
/// Every rank takes rank 0's running statistics (BatchNorm buffers stay per rank while
/// training; evaluation and saving use rank 0's, and afterwards all replicas agree).
fn broadcast_running_stats<B: AutodiffBackend, M: TrainModel<B>>(
    comm: &dyn Communicator,
    model: M,
    rank: usize,
) -> Result<M> {
    let mut stats = model.running_stats();
    if stats.is_empty() || comm.world_size() == 1 {
        return Ok(model);
    }
    comm.broadcast(&mut stats, 0)?;
    model
        .with_running_stats(&stats)
        .map_err(|source| TrainError::model(rank, source))
}

pub fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}
