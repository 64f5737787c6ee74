//! [`Entry`]: every setting of a training run, with PLSC's `Entry` setters under Rust names, and
//! loading / saving the same settings as TOML or JSON.
//!
//! | PLSC `Entry` setter              | here                                   |
//! |----------------------------------|----------------------------------------|
//! | `set_class_num`                  | [`Entry::with_num_classes`]            |
//! | `set_emb_size`                   | [`Entry::with_embedding_size`]         |
//! | `set_loss_type`                  | [`Entry::with_loss`] (+ margins, scale)|
//! | `set_model`                      | [`Entry::with_model`]                  |
//! | `set_train_batch_size`           | [`Entry::with_train_batch_size`]       |
//! | `set_test_batch_size`            | [`Entry::with_test_batch_size`]        |
//! | `set_train_epochs`               | [`Entry::with_train_epochs`] / `with_train_steps` |
//! | `set_lr`, `set_lr_steps`         | [`Entry::with_lr`], [`Entry::with_lr_steps`], [`Entry::with_lr_decay_factor`] |
//! | `set_warmup_epochs`              | [`Entry::with_warmup_epochs`]          |
//! | `set_dataset_dir`                | [`Entry::with_dataset_dir`]            |
//! | `set_train_image_num`            | [`Entry::with_train_image_num`] (derived from the data when unset) |
//! | `set_val_targets`                | [`Entry::with_val_targets`]            |
//! | `set_test_period`, `set_log_period` | [`Entry::with_test_period`], [`Entry::with_log_period`] |
//! | `set_calc_acc`                   | [`Entry::with_calc_acc`]               |
//! | `set_model_save_dir`             | [`Entry::with_model_save_dir`]         |
//! | `set_checkpoint_dir`             | [`Entry::with_checkpoint_dir`]         |
//! | `set_with_test`                  | [`Entry::with_with_test`]              |
//! | `set_mixed_precision(flag, init_loss_scaling, incr_every_n_steps, decr_every_n_nan_or_inf, incr_ratio, decr_ratio)` | [`Entry::with_mixed_precision`] + [`LossScaleConfig`] |
//! | `set_sample_ratio`               | [`Entry::with_sample_ratio`]           |
//!
//! plus `seed`, `ranks` (rank threads on this machine), the input size and channels, momentum,
//! weight decay and the backbone's gradient-clipping norm.
//!
//! **Learning rate.** The configured `lr` is the rate for a global batch of
//! `lr_reference_batch` images (512, as in PLSC's and arcface_torch's configs, "lr 0.1 for a
//! total batch size of 512"); the rate used is the linear-scaling rule
//! `lr_used = lr * (ranks * train_batch_size) / lr_reference_batch`.
//! Set `lr_reference_batch` to the global batch to use `lr` as given.

use std::path::{Path, PathBuf};

use plsc_core::{LossConfig, LossKind, MarginParams, Precision};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, io_err};
use crate::schedule::{LrPolicy, LrSchedule};

/// Dynamic loss scaling of mixed precision (PLSC's / Paddle's AMP knobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LossScaleConfig {
    /// The first loss scale.
    pub init_loss_scaling: f64,
    /// Multiply the scale by `incr_ratio` after this many finite steps in a row.
    pub incr_every_n_steps: u64,
    /// Multiply the scale by `decr_ratio` after this many non-finite steps (counted since the
    /// last decrease).
    pub decr_every_n_nan_or_inf: u64,
    /// Growth factor.
    pub incr_ratio: f64,
    /// Shrink factor.
    pub decr_ratio: f64,
}

impl Default for LossScaleConfig {
    /// PLSC's defaults: 1.0, 2000, 2, 2.0, 0.5.
    fn default() -> Self {
        Self {
            init_loss_scaling: 1.0,
            incr_every_n_steps: 2000,
            decr_every_n_nan_or_inf: 2,
            incr_ratio: 2.0,
            decr_ratio: 0.5,
        }
    }
}

/// The settings of a training run. Build it with the `with_*` setters or load it with
/// [`Entry::from_file`]; every field has a default (PLSC's where it has one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Entry {
    /// Number of classes over all ranks.
    pub num_classes: usize,
    /// Embedding size.
    pub embedding_size: usize,
    /// Loss name: `softmax`, `arcface`, `cosface`, `sphereface`, `combined`, each optionally
    /// prefixed by `dist_` (class-sharded head).
    pub loss: String,
    /// Margin `m1` (multiplicative angular) overriding the loss's default.
    pub margin_m1: Option<f64>,
    /// Margin `m2` (additive angular) overriding the loss's default.
    pub margin_m2: Option<f64>,
    /// Margin `m3` (additive cosine) overriding the loss's default.
    pub margin_m3: Option<f64>,
    /// Logit scale `s` overriding the loss's default.
    pub scale: Option<f64>,
    /// Backbone name (see `plsc_models::MODEL_NAMES`).
    pub model: String,
    /// Input side in pixels.
    pub input_size: usize,
    /// Input channels (3 RGB, 1 grey).
    pub in_channels: usize,
    /// Images per rank per step.
    pub train_batch_size: usize,
    /// Images per embedder call in verification.
    pub test_batch_size: usize,
    /// Training length in epochs (used when `train_steps` is not set).
    pub train_epochs: u64,
    /// Training length in steps (overrides `train_epochs`).
    pub train_steps: Option<u64>,
    /// Base learning rate for a global batch of `lr_reference_batch` images.
    pub lr: f64,
    /// Global batch that `lr` is meant for (linear scaling rule, see the module docs).
    pub lr_reference_batch: usize,
    /// `piecewise` (decay by `lr_decay_factor` at each of `lr_steps`) or `poly`.
    pub lr_policy: LrPolicy,
    /// Step boundaries of the piecewise policy (global steps, as PLSC's `lr_steps`).
    pub lr_steps: Vec<u64>,
    /// Factor applied at each boundary.
    pub lr_decay_factor: f64,
    /// Power of the polynomial policy.
    pub poly_power: f64,
    /// Final rate of the polynomial policy, relative to the base rate.
    pub poly_end_lr_ratio: f64,
    /// Linear warmup from 0 over this many epochs.
    pub warmup_epochs: f64,
    /// Training data folder (holding `file_list.txt`).
    pub dataset_dir: PathBuf,
    /// Training images per epoch; derived from the data when unset.
    pub train_image_num: Option<u64>,
    /// Verification sets: `.bin` file names or paths (relative ones are looked up in
    /// `val_dir`, then `dataset_dir`); a bare name gets `.bin` appended.
    pub val_targets: Vec<String>,
    /// Folder of the verification sets (default: `dataset_dir`).
    pub val_dir: Option<PathBuf>,
    /// Verify every this many steps (0: only at the end).
    pub test_period: u64,
    /// Log every this many steps.
    pub log_period: u64,
    /// Compute the training top-1 / top-5 accuracy.
    pub calc_acc: bool,
    /// Where the run directory goes (`<model_save_dir>/<timestamp>/`).
    pub model_save_dir: PathBuf,
    /// Root of the checkpoints (plsc-ckpt's `step-<n>/` directories); the run directory's
    /// `checkpoints/` when unset. The run saves one at its end.
    pub checkpoint_dir: Option<PathBuf>,
    /// Save a checkpoint every this many steps (0: only at the end; the end always saves).
    pub checkpoint_period: u64,
    /// Keep this many newest checkpoints (0 keeps all).
    pub keep_last: usize,
    /// Continue from the newest valid checkpoint under `checkpoint_dir` (or, when that is
    /// unset, under the newest run directory of `model_save_dir`, whose run then continues):
    /// step, lr schedule position, loss scale, data stream position, backbone and head weights
    /// and momentum. Starts from scratch, with a warning, when there is none yet. Damaged
    /// checkpoints are renamed to `step-<n>.damaged` and logged; when there are damaged ones
    /// and no valid one, resuming fails unless `restart` is set.
    pub resume: bool,
    /// With `resume`: when no valid checkpoint is left but damaged ones exist, start from
    /// step 0 instead of failing (the damaged ones stay, renamed `step-<n>.damaged`).
    pub restart: bool,
    /// Fine-tune: take the backbone weights (and with `pretrained_head` the head rows) of this
    /// checkpoint (a `step-<n>/` directory or a root of them), without momentum or step, on
    /// any rank count.
    pub pretrained: Option<PathBuf>,
    /// With `pretrained`: also load the head rows (the class count and embedding size must
    /// match; the rows are re-split for this run's rank count).
    pub pretrained_head: bool,
    /// Verify during and after training.
    pub with_test: bool,
    /// Mixed precision: f16 head operands with dynamic loss scaling (see the crate docs for the
    /// backbone).
    pub mixed_precision: bool,
    /// The loss-scaling knobs.
    pub loss_scale: LossScaleConfig,
    /// Partial FC sampling ratio in (0, 1].
    pub sample_ratio: f64,
    /// Seed of the initialisation, the data order and the class sampling.
    pub seed: u64,
    /// Rank threads on this machine.
    pub ranks: usize,
    /// SGD momentum (backbone and head).
    pub momentum: f64,
    /// Weight decay (backbone and head).
    pub weight_decay: f64,
    /// Global gradient-norm bound of the backbone (0: no clipping).
    pub grad_clip_norm: f64,
    /// Random horizontal flips of the training images.
    pub flip: bool,
    /// Decoder threads per rank.
    pub data_threads: usize,
    /// Where training runs: `cpu` (the default: rank threads, the head's CPU kernel), `cuda`
    /// (one GPU per process: GPU `LOCAL_RANK` under a launcher, else GPU 0) or `cuda:N`. CUDA
    /// needs a build with the `cuda` feature (`cargo xtask` with `--features cuda,nccl`).
    pub device: String,
    /// Where the head's shard and its step live: `auto` (host rows and the CPU kernel on the
    /// CPU, tensors on the device on a GPU), `host` or `device` (on the CPU: the generic tensor
    /// path on Flex, which the GPU runs; for comparisons and tests).
    pub head_placement: crate::device::PlacementChoice,
    /// How the head stores its weight and momentum: `f32` (the default), `bf16` or `f16`
    /// (half the bytes per class, updates stochastically rounded; see docs/scale.md).
    /// Independent of `mixed_precision`. A checkpoint resumes only into the same storage;
    /// `xtask reshard --head-storage` converts.
    pub head_storage: plsc_core::HeadStorage,
}

impl Default for Entry {
    fn default() -> Self {
        Self {
            num_classes: 85742,
            embedding_size: 512,
            loss: "dist_arcface".into(),
            margin_m1: None,
            margin_m2: None,
            margin_m3: None,
            scale: None,
            model: "iresnet50".into(),
            input_size: 112,
            in_channels: 3,
            train_batch_size: 128,
            test_batch_size: 120,
            train_epochs: 120,
            train_steps: None,
            lr: 0.1,
            lr_reference_batch: 512,
            lr_policy: LrPolicy::Piecewise,
            lr_steps: vec![100_000, 160_000, 220_000],
            lr_decay_factor: 0.1,
            poly_power: 2.0,
            poly_end_lr_ratio: 0.0,
            warmup_epochs: 0.0,
            dataset_dir: PathBuf::from("./train_data"),
            train_image_num: None,
            val_targets: vec!["lfw".into()],
            val_dir: None,
            test_period: 0,
            log_period: 100,
            calc_acc: false,
            model_save_dir: PathBuf::from("runs"),
            checkpoint_dir: None,
            checkpoint_period: 0,
            keep_last: plsc_ckpt::DEFAULT_KEEP_LAST,
            resume: false,
            restart: false,
            pretrained: None,
            pretrained_head: false,
            with_test: true,
            mixed_precision: false,
            loss_scale: LossScaleConfig::default(),
            sample_ratio: 1.0,
            seed: 0,
            ranks: 1,
            momentum: 0.9,
            weight_decay: 5e-4,
            grad_clip_norm: 5.0,
            flip: true,
            data_threads: 1,
            device: "cpu".into(),
            head_placement: crate::device::PlacementChoice::Auto,
            head_storage: plsc_core::HeadStorage::F32,
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $name(mut self, v: $ty) -> Self {
                self.$field = v.into();
                self
            }
        )*
    };
}

impl Entry {
    /// PLSC's defaults (see [`Default`]).
    pub fn new() -> Self {
        Self::default()
    }

    setters! {
        /// Class count.
        with_num_classes: num_classes: usize;
        /// Embedding size.
        with_embedding_size: embedding_size: usize;
        /// Loss name (`dist_arcface`, `arcface`, `dist_softmax`, `cosface`, `combined`, ...).
        with_loss: loss: &str;
        /// Backbone name.
        with_model: model: &str;
        /// Input side in pixels.
        with_input_size: input_size: usize;
        /// Input channels.
        with_in_channels: in_channels: usize;
        /// Images per rank per step.
        with_train_batch_size: train_batch_size: usize;
        /// Images per embedder call in verification.
        with_test_batch_size: test_batch_size: usize;
        /// Epochs.
        with_train_epochs: train_epochs: u64;
        /// Base learning rate (for a global batch of `lr_reference_batch`).
        with_lr: lr: f64;
        /// Global batch the base rate is meant for.
        with_lr_reference_batch: lr_reference_batch: usize;
        /// Schedule policy.
        with_lr_policy: lr_policy: LrPolicy;
        /// Piecewise boundaries (global steps).
        with_lr_steps: lr_steps: Vec<u64>;
        /// Piecewise decay factor.
        with_lr_decay_factor: lr_decay_factor: f64;
        /// Warmup epochs.
        with_warmup_epochs: warmup_epochs: f64;
        /// Training data folder.
        with_dataset_dir: dataset_dir: &Path;
        /// Verification sets.
        with_val_targets: val_targets: Vec<String>;
        /// Verify every this many steps (0: at the end only).
        with_test_period: test_period: u64;
        /// Log every this many steps.
        with_log_period: log_period: u64;
        /// Training accuracy.
        with_calc_acc: calc_acc: bool;
        /// Parent of the run directories.
        with_model_save_dir: model_save_dir: &Path;
        /// Verify during and after training.
        with_with_test: with_test: bool;
        /// Mixed precision.
        with_mixed_precision: mixed_precision: bool;
        /// Loss-scaling knobs.
        with_loss_scale: loss_scale: LossScaleConfig;
        /// Partial FC ratio.
        with_sample_ratio: sample_ratio: f64;
        /// Seed.
        with_seed: seed: u64;
        /// Rank threads.
        with_ranks: ranks: usize;
        /// Momentum.
        with_momentum: momentum: f64;
        /// Weight decay.
        with_weight_decay: weight_decay: f64;
        /// Backbone gradient-norm bound (0: none).
        with_grad_clip_norm: grad_clip_norm: f64;
        /// Random flips.
        with_flip: flip: bool;
        /// Decoder threads per rank.
        with_data_threads: data_threads: usize;
        /// Checkpoint every this many steps (0: at the end only).
        with_checkpoint_period: checkpoint_period: u64;
        /// Newest checkpoints kept (0: all).
        with_keep_last: keep_last: usize;
        /// Continue from the newest valid checkpoint.
        with_resume: resume: bool;
        /// Device: `cpu`, `cuda` or `cuda:N`.
        with_device: device: &str;
        /// Where the head lives: `auto`, `host` or `device`.
        with_head_placement: head_placement: crate::device::PlacementChoice;
        /// How the head stores weight and momentum.
        with_head_storage: head_storage: plsc_core::HeadStorage;
        /// With `resume`: start from step 0 when only damaged checkpoints are left.
        with_restart: restart: bool;
        /// With a pretrained checkpoint, load its head rows too.
        with_pretrained_head: pretrained_head: bool;
    }

    /// Fine-tune from the weights of this checkpoint (directory or root).
    #[must_use]
    pub fn with_pretrained(mut self, dir: &Path) -> Self {
        self.pretrained = Some(dir.to_path_buf());
        self
    }

    /// Training length in steps instead of epochs.
    #[must_use]
    pub fn with_train_steps(mut self, steps: u64) -> Self {
        self.train_steps = Some(steps);
        self
    }

    /// Images per epoch (otherwise counted in the data).
    #[must_use]
    pub fn with_train_image_num(mut self, n: u64) -> Self {
        self.train_image_num = Some(n);
        self
    }

    /// Margins `m1, m2, m3` and scale `s` of the combined margin `cos(m1*theta + m2) - m3`.
    #[must_use]
    pub fn with_margins(mut self, m1: f64, m2: f64, m3: f64, scale: f64) -> Self {
        self.margin_m1 = Some(m1);
        self.margin_m2 = Some(m2);
        self.margin_m3 = Some(m3);
        self.scale = Some(scale);
        self
    }

    /// Root of the checkpoints.
    #[must_use]
    pub fn with_checkpoint_dir(mut self, dir: &Path) -> Self {
        self.checkpoint_dir = Some(dir.to_path_buf());
        self
    }

    /// Folder of the verification sets.
    #[must_use]
    pub fn with_val_dir(mut self, dir: &Path) -> Self {
        self.val_dir = Some(dir.to_path_buf());
        self
    }

    /// The model input of this run as plsc-data's decoder takes it: `input_size` square,
    /// `in_channels`, the training normalisation `(x - 127.5) / 128` and the squash resize
    /// policy. Training batches, verification sets and the exported `model.json` all use it.
    pub fn image_spec(&self) -> plsc_data::decode::ImageSpec {
        plsc_data::decode::ImageSpec {
            height: self.input_size as u32,
            width: self.input_size as u32,
            channels: self.in_channels,
            ..plsc_data::decode::ImageSpec::default()
        }
    }

    /// The global batch: `ranks * train_batch_size`.
    pub fn global_batch(&self) -> usize {
        self.ranks * self.train_batch_size
    }

    /// The learning rate actually used at the top of the schedule:
    /// `lr * global_batch / lr_reference_batch`.
    pub fn scaled_lr(&self) -> f64 {
        self.lr * self.global_batch() as f64 / self.lr_reference_batch as f64
    }

    /// The head's loss: the named loss with the margin overrides applied.
    pub fn loss_config(&self) -> Result<LossConfig> {
        let mut loss: LossConfig = self.loss.parse().map_err(|e| TrainError::Config {
            name: "loss",
            detail: format!("{e}"),
        })?;
        let overrides = [self.margin_m1, self.margin_m2, self.margin_m3, self.scale];
        match &mut loss.kind {
            LossKind::Margin(m) => {
                let MarginParams {
                    m1, m2, m3, scale, ..
                } = m;
                for (slot, v) in [m1, m2, m3, scale].into_iter().zip(overrides) {
                    if let Some(v) = v {
                        *slot = v;
                    }
                }
            }
            LossKind::Softmax => {
                if overrides.iter().any(Option::is_some) {
                    return Err(TrainError::Config {
                        name: "margin_m1/m2/m3/scale",
                        detail: format!("loss `{}` has no margins or scale", self.loss),
                    });
                }
            }
        }
        loss.validate().map_err(|e| TrainError::Config {
            name: "loss",
            detail: format!("{e}"),
        })?;
        Ok(loss)
    }

    /// The parsed [`Entry::device`].
    pub fn device(&self) -> Result<crate::device::Device> {
        self.device.parse().map_err(|e| match e {
            plsc_models::ModelError::Device { device, detail } => {
                TrainError::DeviceUnavailable { device, detail }
            }
            other => TrainError::Config {
                name: "device",
                detail: other.to_string(),
            },
        })
    }

    /// Where the head runs: [`Entry::head_placement`], `auto` resolved by the device.
    pub fn placement(&self) -> Result<crate::device::Placement> {
        Ok(self.head_placement.resolve(&self.device()?))
    }

    /// The head's operand precision: f16 under mixed precision, else f32.
    pub fn head_precision(&self) -> Precision {
        if self.mixed_precision {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    /// The head's settings: classes, loss, Partial FC, seed, operand precision, storage and
    /// optimiser.
    pub fn head_config(&self) -> Result<plsc_core::HeadConfig> {
        Ok(
            plsc_core::HeadConfig::new(self.num_classes, self.embedding_size)
                .with_loss(self.loss_config()?)
                .with_sample_ratio(self.sample_ratio)
                .with_seed(self.seed)
                .with_precision(self.head_precision())
                .with_storage(self.head_storage)
                .with_calc_acc(self.calc_acc)
                .with_optimizer(
                    plsc_core::SparseSgdConfig::new()
                        .with_momentum(self.momentum)
                        .with_weight_decay(self.weight_decay),
                ),
        )
    }

    /// Refuses, before anything is allocated, a host-placed head whose ranks `local_ranks`
    /// need more memory than this host has available ([`plsc_core::capacity`]).
    pub fn check_head_capacity(&self, local_ranks: &[usize]) -> Result<()> {
        if self.placement()? != crate::device::Placement::Host {
            return Ok(());
        }
        let config = self.head_config()?;
        let global_batch = self.train_batch_size * self.ranks;
        plsc_core::capacity::check_host_capacity(
            &config,
            self.ranks,
            local_ranks,
            global_batch,
            None,
        )
        .map_err(|e| TrainError::head(local_ranks.first().copied().unwrap_or(0), e))
    }

    /// The schedule for `steps_per_epoch` (warmup converted from epochs to steps).
    pub fn schedule(&self, steps_per_epoch: u64, total_steps: u64) -> LrSchedule {
        LrSchedule {
            base_lr: self.scaled_lr(),
            policy: self.lr_policy,
            boundaries: self.lr_steps.clone(),
            decay_factor: self.lr_decay_factor,
            poly_power: self.poly_power,
            poly_end_ratio: self.poly_end_lr_ratio,
            warmup_steps: (self.warmup_epochs * steps_per_epoch as f64).round() as u64,
            total_steps,
        }
    }

    /// Checks every setting that does not need the data.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, detail: String| Err(TrainError::Config { name, detail });
        self.device()?;
        if self.num_classes == 0 {
            return bad("num_classes", "must be > 0".into());
        }
        if self.embedding_size == 0 {
            return bad("embedding_size", "must be > 0".into());
        }
        if self.ranks == 0 {
            return bad("ranks", "must be >= 1".into());
        }
        if self.train_batch_size == 0 || self.test_batch_size == 0 {
            return bad("train_batch_size/test_batch_size", "must be > 0".into());
        }
        if self.train_steps.is_none() && self.train_epochs == 0 {
            return bad(
                "train_epochs",
                "must be > 0 unless train_steps is set".into(),
            );
        }
        if self.train_steps == Some(0) {
            return bad("train_steps", "must be > 0".into());
        }
        if !(self.lr.is_finite() && self.lr > 0.0) || self.lr_reference_batch == 0 {
            return bad(
                "lr",
                format!(
                    "lr must be > 0 and lr_reference_batch > 0, got {} and {}",
                    self.lr, self.lr_reference_batch
                ),
            );
        }
        if !(self.sample_ratio > 0.0 && self.sample_ratio <= 1.0) {
            return bad(
                "sample_ratio",
                format!("must be in (0, 1], got {}", self.sample_ratio),
            );
        }
        if self.log_period == 0 {
            return bad("log_period", "must be >= 1".into());
        }
        if self.warmup_epochs < 0.0 || !self.warmup_epochs.is_finite() {
            return bad(
                "warmup_epochs",
                format!("must be >= 0, got {}", self.warmup_epochs),
            );
        }
        if self.lr_steps.windows(2).any(|w| w[0] >= w[1]) {
            return bad(
                "lr_steps",
                format!("must increase, got {:?}", self.lr_steps),
            );
        }
        let ls = &self.loss_scale;
        if !(ls.init_loss_scaling > 0.0
            && ls.incr_ratio >= 1.0
            && ls.decr_ratio > 0.0
            && ls.decr_ratio < 1.0)
            || ls.incr_every_n_steps == 0
            || ls.decr_every_n_nan_or_inf == 0
        {
            return bad(
                "loss_scale",
                format!(
                    "needs init > 0, incr_ratio >= 1, 0 < decr_ratio < 1 and periods >= 1, got {ls:?}"
                ),
            );
        }
        if self.restart && !self.resume {
            return bad(
                "restart",
                "restart only applies when resuming (it starts from step 0 when every \
                 checkpoint is damaged): set resume = true too, or neither"
                    .into(),
            );
        }
        if self.resume && self.pretrained.is_some() {
            return bad(
                "resume",
                "resume continues a run, pretrained starts a new one from given weights: \
                 set one of them"
                    .into(),
            );
        }
        let loss = self.loss_config()?;
        if !loss.sharded && self.sample_ratio < 1.0 {
            return bad(
                "sample_ratio",
                format!("class sampling needs a dist_ loss, got `{}`", self.loss),
            );
        }
        if loss.sharded && self.num_classes < self.ranks {
            return bad(
                "num_classes",
                format!(
                    "{} classes cannot be split over {} ranks",
                    self.num_classes, self.ranks
                ),
            );
        }
        Ok(())
    }

    /// Reads settings from a `.toml` or `.json` file (by extension; others are tried as TOML).
    /// Unknown keys are errors; missing ones take the defaults.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(io_err(path))?;
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let bad = |detail: String| TrainError::ConfigFile {
            path: path.to_path_buf(),
            detail,
        };
        if is_json {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
        } else {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))
        }
    }

    /// The settings as TOML.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| TrainError::Config {
            name: "entry",
            detail: format!("cannot write as TOML: {e}"),
        })
    }

    /// The settings as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the settings to `path` as TOML or JSON (by extension), through a temporary name.
    pub fn save(&self, path: &Path) -> Result<()> {
        let is_json = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let text = if is_json {
            self.to_json()
        } else {
            self.to_toml()?
        };
        crate::run_dir::write_atomically(path, text.as_bytes())
    }

    /// The verification sets used when the settings name none.
    pub fn default_val_targets() -> Vec<String> {
        Self::default().val_targets
    }

    /// Whether [`Entry::val_targets`] are the defaults (the settings named none, or named
    /// exactly those).
    pub fn uses_default_val_targets(&self) -> bool {
        self.val_targets == Self::default_val_targets()
    }

    /// Resolves the verification sets to paths (see [`Entry::val_targets`]).
    pub fn val_paths(&self) -> Vec<PathBuf> {
        let dir = self
            .val_dir
            .clone()
            .unwrap_or_else(|| self.dataset_dir.clone());
        self.val_targets
            .iter()
            .map(|t| {
                let name = if t.ends_with(".bin") {
                    t.clone()
                } else {
                    format!("{t}.bin")
                };
                let p = PathBuf::from(&name);
                if p.is_absolute() || p.exists() {
                    p
                } else {
                    dir.join(name)
                }
            })
            .collect()
    }
}
