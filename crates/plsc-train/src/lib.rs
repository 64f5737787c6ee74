//! Training for plsc-rs: the PLSC-style [`Entry`] builder and the loop that links the backbone
//! (`models`), the sharded head (`core`), the data (`data`) and the collectives (`comm`).
//!
//! In the flow it is the top library crate; `xtask train` drives it.
//!
//! ```no_run
//! use plsc_train::Entry;
//! let entry = Entry::new()
//!     .with_num_classes(8)
//!     .with_embedding_size(128)
//!     .with_loss("dist_arcface")
//!     .with_model("iresnet_tiny")
//!     .with_input_size(28)
//!     .with_in_channels(1)
//!     .with_train_batch_size(64)
//!     .with_train_epochs(2)
//!     .with_dataset_dir("datasets/fashion_mnist/train".as_ref())
//!     .with_val_targets(vec!["datasets/fashion_mnist/fmnist_pairs.bin".into()])
//!     .with_ranks(2);
//! let summary = plsc_train::run(&entry, true)?;
//! println!("run directory: {}", summary.run_dir.display());
//! # Ok::<(), plsc_train::TrainError>(())
//! ```
//!
//! - [`entry`]: the settings, their TOML/JSON form and the learning-rate rule
//!   (`lr * global_batch / lr_reference_batch`).
//! - [`trainer`]: the loop over rank threads, generic over the backend and the model
//!   ([`TrainModel`]); [`job`]: a whole run on the CPU with a run directory.
//! - [`records`]: the run records ([`LogRecord`], [`EvalRecord`]) of `metrics.jsonl` and
//!   `summary.json`, read back by `xtask plot`.
//! - [`memory`]: peak and steady `RssAnon` of a run (`summary.json`).
//! - [`sync`]: data-parallel gradient sum; [`scaler`]: dynamic loss scaling;
//!   [`schedule`]: warmup + piecewise or polynomial decay.

pub mod device;
pub mod entry;
mod error;
pub mod gpu_memory;
pub mod head;
pub mod job;
pub mod machine;
pub mod memory;
pub mod model;
pub mod records;
pub mod resume;
pub mod run_dir;
pub mod scaler;
pub mod schedule;
pub mod stats;
pub mod sync;
pub mod trainer;
pub mod val_sets;

pub use entry::{Entry, LossScaleConfig};
pub use error::{Result, TrainError};
pub use job::{CpuBackend, RunSummary, run, run_process};
pub use model::TrainModel;
pub use records::{EvalRecord, LogRecord};
pub use schedule::{LrPolicy, LrSchedule};
pub use trainer::{
    BatchIter, LocalBatch, Outputs, RunPlan, Start, Timings, TrainOutcome, train, train_rank,
};
