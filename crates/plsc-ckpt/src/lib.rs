//! Checkpoints for plsc-rs: a directory with `manifest.json` and safetensors files, saved
//! atomically, verified on load, resharded from N to M ranks, exported for inference.
//!
//! In the flow: `train` saves and resumes through **`ckpt`**; `serve` loads its exports.
//!
//! A checkpoint is `<root>/step-<n>/` (see `docs/checkpoints.md`):
//! - `manifest.json` ([`Manifest`]): format version, class count, embedding size, world size,
//!   each rank's class range, the head's loss and margin settings, the model spec, the
//!   training state (step, epoch, lr schedule, loss scale, data position, seeds) and the size
//!   and sha256 of every other file;
//! - `backbone.safetensors`: parameters, buffers and momentum (`momentum.<name>`);
//! - `head.rank<r>.safetensors`: `weight` and `momentum` rows of rank r's classes in the head's
//!   storage type (`head.storage`: F32, BF16 or F16; and `bias`, `bias_momentum` in f32 for
//!   plain softmax).
//!
//! Saving: [`save`] (one process, every shard), [`save_rank`] (every rank its own shard,
//! through a [`plsc_comm::Communicator`]), [`PendingCheckpoint`] (shard by shard).
//! Loading: [`latest_valid`] / [`latest_valid_shared`], [`Checkpoint::open`],
//! [`Checkpoint::load_backbone`], [`Checkpoint::load_head_shard`] (any rank count, using
//! plsc-core's balanced split), [`Checkpoint::load_into_head`].
//! Resuming: [`choose_resume`] (the newest checkpoint that verifies; damaged ones renamed to
//! `step-<n>.damaged`, never deleted).
//! Offline: [`reshard()`] (and [`reshard_as`], converting the head's storage type),
//! [`export()`] / [`load_exported`], [`import()`] (an arcface_torch `.pth` or safetensors file
//! as an export directory), [`export_onnx`] (ONNX, opset 17).
//!
//! The backbone is handled as a list of named f32 tensors, plsc-models' one model-state type
//! ([`plsc_models::NamedTensor`], roles [`plsc_models::TensorKind`]), exactly what
//! `Backbone::state_tensors()` gives and `Backbone::load_tensors` takes. Saving, loading and
//! resharding never build a model; [`import()`] and [`export_onnx`] do (a registry backbone on
//! the CPU backend checks the names and shapes, or walks the graph), and
//! [`load_exported_backbone`] builds an export's backbone on any backend (the server and
//! `xtask eval --model` load through it).

mod backbone;
mod error;
pub mod export;
pub mod head_check;
pub mod import;
mod layout;
mod load;
pub mod manifest;
pub mod onnx;
mod reshard;
pub mod resume;
mod rows;
mod save;
mod st;
mod tensor;

pub use backbone::{backbone_from, load_exported_backbone};
pub use error::{CkptError, Result};
pub use export::{
    ChannelOrder, ExportReport, ExportedModel, ModelJson, PreprocessingSource, export,
    export_tensors, export_tensors_from, load_exported,
};
pub use import::{ImportOptions, Imported, import};
pub use layout::{list_checkpoints, parse_step_dir, step_dir_name};
pub use load::{BackboneState, Checkpoint, HeadRows, latest_valid, latest_valid_shared};
pub use manifest::{
    DataPosition, LossScaleState, LrScheduleState, Manifest, ModelSpec, Seeds, TrainingState,
};
pub use onnx::{OnnxExport, export_onnx};
pub use reshard::{reshard, reshard_as};
pub use resume::{
    DAMAGED_SUFFIX, DamagedCheckpoint, ResumeChoice, RootListing, choose_resume, list_root,
};
pub use save::{
    BackboneRef, CheckpointMeta, DEFAULT_KEEP_LAST, HeadShardRef, PendingCheckpoint, SaveOptions,
    prune, save, save_rank,
};
pub use st::FileDigest;
