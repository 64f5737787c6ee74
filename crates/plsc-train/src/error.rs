//! The error type of plsc-train.

use std::path::PathBuf;

/// Everything a training run can fail with; each message names the file, setting or rank.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A setting is invalid or settings contradict each other.
    #[error("setting `{name}`: {detail}")]
    Config {
        /// The setting.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The device the settings name is not in this build, or not on this machine.
    #[error("device `{device}`: {detail}")]
    DeviceUnavailable {
        /// The device setting.
        device: String,
        /// Why, and what to do.
        detail: String,
    },
    /// A config file could not be read or parsed.
    #[error("config file {path}: {detail}")]
    ConfigFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A line of a run's `metrics.jsonl` is not a record.
    #[error("{} line {line}: {detail}", path.display())]
    Records {
        /// The metrics file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// A file or folder could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The head failed.
    #[error("rank {rank}: head: {source}")]
    Head {
        /// The rank.
        rank: usize,
        /// The head's error.
        source: Box<plsc_core::HeadError>,
    },
    /// The backbone failed.
    #[error("rank {rank}: backbone: {source}")]
    Model {
        /// The rank.
        rank: usize,
        /// The model's error.
        source: Box<plsc_models::ModelError>,
    },
    /// The data stream failed.
    #[error("rank {rank}: data: {source}")]
    Data {
        /// The rank.
        rank: usize,
        /// The data error.
        source: Box<plsc_data::DataError>,
    },
    /// A batch has the wrong shape or size.
    #[error("rank {rank}: batch at step {step}: {detail}")]
    Batch {
        /// The rank.
        rank: usize,
        /// The step.
        step: u64,
        /// What is wrong.
        detail: String,
    },
    /// The data ran out before the last step.
    #[error("rank {rank}: the data ended at step {step} of {total}")]
    DataEnded {
        /// The rank.
        rank: usize,
        /// The step that found no batch.
        step: u64,
        /// The planned step count.
        total: u64,
    },
    /// Saving the checkpoint failed.
    #[error("rank {rank}: checkpoint: {source}")]
    Checkpoint {
        /// The rank.
        rank: usize,
        /// The checkpoint error.
        source: Box<plsc_ckpt::CkptError>,
    },
    /// Resuming found damaged checkpoints and no valid one (and `restart` was not set).
    #[error(
        "resume: no valid checkpoint under {}; damaged ones, renamed aside and kept: {}. \
         To start from step 0 anyway, add --restart (setting `restart = true`)",
        root.display(),
        damaged.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    DamagedCheckpoints {
        /// The checkpoint root.
        root: PathBuf,
        /// The damaged checkpoints (`step-<n>.damaged`).
        damaged: Vec<PathBuf>,
    },
    /// A collective failed.
    #[error("collective: {0}")]
    Comm(#[from] plsc_comm::CommError),
    /// Verification failed.
    #[error("verification on {target}: {source}")]
    Eval {
        /// The pair set.
        target: String,
        /// The evaluation error.
        source: Box<plsc_eval::EvalError>,
    },
}

impl TrainError {
    /// A head error on `rank`.
    pub fn head(rank: usize, source: plsc_core::HeadError) -> Self {
        Self::Head {
            rank,
            source: Box::new(source),
        }
    }
    /// A backbone error on `rank`.
    pub fn model(rank: usize, source: plsc_models::ModelError) -> Self {
        Self::Model {
            rank,
            source: Box::new(source),
        }
    }
    /// A data error on `rank`.
    pub fn data(rank: usize, source: plsc_data::DataError) -> Self {
        Self::Data {
            rank,
            source: Box::new(source),
        }
    }
    /// A verification error on `target`.
    pub fn eval(target: String, source: plsc_eval::EvalError) -> Self {
        Self::Eval {
            target,
            source: Box::new(source),
        }
    }
}

/// Result with [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> TrainError {
    let path = path.into();
    move |source| TrainError::Io { path, source }
}
