//! [`CkptError`]: everything saving, loading, resharding and exporting can fail with. Every
//! message names the file (and the tensor, rank or field) and what differs.

use std::path::PathBuf;

use plsc_comm::CommError;
use plsc_core::{HeadError, HeadStorage};

/// The error type of plsc-ckpt.
#[derive(Debug, thiserror::Error)]
pub enum CkptError {
    /// Reading or writing a file or directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A JSON file (manifest, model.json) could not be parsed or written.
    #[error("{}: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A safetensors file is malformed.
    #[error("{}: not a valid safetensors file: {detail}", path.display())]
    Safetensors { path: PathBuf, detail: String },
    /// A file listed in the manifest (or a required file) does not exist.
    #[error("{}: missing (listed in {})", path.display(), listed_in.display())]
    MissingFile { path: PathBuf, listed_in: PathBuf },
    /// A file's size differs from the one recorded for it (in a checkpoint's `manifest.json`
    /// or an export's `model.json`: `recorded_in`).
    #[error("{}: {found} bytes, {} records {expected}", path.display(), recorded_in.display())]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
        recorded_in: PathBuf,
    },
    /// A file's sha256 differs from the one recorded for it in `recorded_in` (a flipped byte).
    #[error(
        "{}: sha256 {found}, {} records {expected} (the file is corrupt)",
        path.display(),
        recorded_in.display()
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        found: String,
        recorded_in: PathBuf,
    },
    /// A tensor the manifest or the format requires is not in the file.
    #[error("{}: tensor `{tensor}` is missing", path.display())]
    MissingTensor { path: PathBuf, tensor: String },
    /// A tensor has another shape than the manifest or the caller's settings say.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    TensorShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// A tensor is stored in another dtype than expected (f32, or the head's storage type).
    #[error("{}: tensor `{tensor}` is {found}, expected {expected}", path.display())]
    TensorDtype {
        path: PathBuf,
        tensor: String,
        found: String,
        expected: String,
    },
    /// A setting of the checkpoint differs from the run's (class count, embedding size, loss).
    #[error("{}: {field} is {checkpoint} in the checkpoint but {expected} in this run", path.display())]
    Mismatch {
        path: PathBuf,
        field: &'static str,
        checkpoint: String,
        expected: String,
    },
    /// The checkpoint's head is stored in another type than the run's `head_storage`: nothing
    /// converts silently. The run can take the checkpoint's storage, or the checkpoint can be
    /// converted (round to nearest) by `xtask reshard --head-storage`.
    #[error(
        "{}: the head is stored as {checkpoint} in the checkpoint but this run's head_storage is \
         {run}: set head_storage = \"{checkpoint}\" in the config (--head-storage {checkpoint}) \
         to continue as it was saved, or convert the checkpoint with `cargo xtask reshard --ckpt \
         {} --ranks <N> --head-storage {run} --out <DIR>` (rounds to nearest)",
        path.display(),
        dir.display()
    )]
    StorageMismatch {
        /// The manifest.
        path: PathBuf,
        /// The checkpoint directory.
        dir: PathBuf,
        /// The checkpoint's storage.
        checkpoint: HeadStorage,
        /// The run's storage.
        run: HeadStorage,
    },
    /// The manifest is inconsistent (shard ranges, file list, version).
    #[error("{}: {detail}", path.display())]
    BadManifest { path: PathBuf, detail: String },
    /// No valid checkpoint under a directory.
    #[error("{}: no valid checkpoint (step-<n>/ with a verified manifest.json)", dir.display())]
    NoCheckpoint { dir: PathBuf },
    /// Arguments of a save or load are inconsistent (for example a shard of the wrong length).
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
    /// Another rank failed during a collective save or load.
    #[error("rank {rank} failed while saving {}: {detail}", dir.display())]
    PeerFailed {
        rank: usize,
        dir: PathBuf,
        detail: String,
    },
    /// A state file given to import does not fit the architecture asked for; `hint` says
    /// which `--arch` (and embedding size) its layout points to.
    #[error("{error}; {hint}")]
    ImportMismatch {
        error: Box<plsc_models::ModelError>,
        hint: String,
    },
    /// Building a backbone or reading a state file failed (the message names the file).
    #[error(transparent)]
    Model(Box<plsc_models::ModelError>),
    /// The class split or a head operation failed.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// A collective failed.
    #[error(transparent)]
    Comm(#[from] CommError),
}

impl From<plsc_models::ModelError> for CkptError {
    fn from(e: plsc_models::ModelError) -> Self {
        Self::Model(Box::new(e))
    }
}

/// `Result` with [`CkptError`].
pub type Result<T, E = CkptError> = std::result::Result<T, E>;

/// Maps an I/O error to [`CkptError::Io`] naming `path`.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CkptError {
    let path = path.into();
    move |source| CkptError::Io { path, source }
}
