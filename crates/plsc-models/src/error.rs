//! The one error type of plsc-models.

use std::path::PathBuf;

/// Everything that can go wrong when building, loading or saving a backbone.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The registry has no model of that name.
    #[error("unknown backbone `{name}`; known: {known}")]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The registered names, comma separated.
        known: String,
    },
    /// A configuration value is out of range.
    #[error("invalid backbone configuration: {0}")]
    InvalidConfig(String),
    /// A device setting names no device, or one this build lacks.
    #[error("device `{device}`: {detail}")]
    Device {
        /// The setting as given.
        device: String,
        /// What is wrong and what to do.
        detail: String,
    },
    /// A tensor handed to the model has the wrong shape.
    #[error("tensor `{tensor}` has shape {found:?}, expected {expected}")]
    BadInput {
        /// Which tensor.
        tensor: String,
        /// Its shape.
        found: Vec<usize>,
        /// What was expected, in words.
        expected: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid safetensors file, or could not be serialised.
    #[error("{file}: safetensors: {source}")]
    Safetensors {
        /// The file (or a label for in-memory data).
        file: String,
        /// The cause.
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// A PyTorch file could not be read.
    #[error("{file}: PyTorch file: {detail}")]
    PyTorch {
        /// The file.
        file: String,
        /// What went wrong.
        detail: String,
    },
    /// The ONNX model could not be built or serialised.
    #[error("ONNX export: {detail}")]
    Onnx {
        /// What went wrong.
        detail: String,
    },
    /// A PyTorch file was given where safetensors was expected.
    #[error(
        "{file} is a PyTorch file (torch.save), not safetensors: make a model directory from it \
         with `cargo xtask import arcface-torch --pth {file} --arch <name> --out <dir>`, or load \
         it with `Backbone::load_arcface_torch`"
    )]
    NotSafetensors {
        /// The file.
        file: String,
    },
    /// A tensor of the model is not in the file.
    #[error("{file}: missing tensor `{key}` (shape {expected:?})")]
    MissingKey {
        /// The file.
        file: String,
        /// The state name.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
    },
    /// A tensor in the file has another shape than the model's.
    #[error("{file}: tensor `{key}` has shape {found:?}, the model expects {expected:?}")]
    ShapeMismatch {
        /// The file.
        file: String,
        /// The state name.
        key: String,
        /// The shape the model expects.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The file holds tensors that the model does not have.
    #[error("{file}: unexpected tensor(s) not in the model: {}", keys.join(", "))]
    UnexpectedKeys {
        /// The file.
        file: String,
        /// The names, sorted.
        keys: Vec<String>,
    },
    /// A tensor in the file has an element type that cannot be read as float.
    #[error("{file}: tensor `{key}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The file.
        file: String,
        /// The state name.
        key: String,
        /// The dtype, as safetensors names it.
        dtype: String,
    },
    /// Gradients were asked for parameters that have none (no backward ran, or the
    /// embedding does not depend on the module).
    #[error("no gradients: {0}")]
    NoGradients(String),
}

/// Result alias of this crate.
pub type Result<T, E = ModelError> = std::result::Result<T, E>;
