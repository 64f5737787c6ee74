//! The crate's error type.

use std::path::PathBuf;

/// Error returned by an [`crate::Embedder`]: whatever the model code reports.
pub type EmbedderError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong while reading pair sets or embeddings and computing metrics.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A `.bin` file is not a readable pickle.
    #[error("{path}: not a readable pickle: {source}")]
    Pickle {
        /// The file.
        path: PathBuf,
        /// What the pickle reader said.
        source: serde_pickle::Error,
    },
    /// A `.bin` pickle was read but does not hold `(list of encoded images, list of bools)`.
    #[error("{path}: not an InsightFace pair set: {what}")]
    BinLayout {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        what: String,
    },
    /// A pair set holds an odd number of images (pairs are consecutive images).
    #[error("{path}: {images} images is an odd count; pairs are consecutive images")]
    OddImageCount {
        /// The file.
        path: PathBuf,
        /// The number of images found.
        images: usize,
    },
    /// The number of images and the number of pair labels disagree.
    #[error("{source_name}: {images} images make {} pairs but {labels} labels are given", images / 2)]
    PairCountMismatch {
        /// The file or tensor the embeddings or images came from.
        source_name: String,
        /// The number of images or embedding rows.
        images: usize,
        /// The number of `issame` labels.
        labels: usize,
    },
    /// An image inside a pair set could not be decoded.
    #[error("{path}: image {index}: {detail}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Index of the image in the file's image list.
        index: usize,
        /// The decoder's message (plsc-data's `decode_pixels`).
        detail: String,
    },
    /// A safetensors file could not be parsed.
    #[error("{path}: not a readable safetensors file: {source}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: safetensors::SafeTensorError,
    },
    /// A tensor is missing, has the wrong dtype or the wrong shape.
    #[error("{path}: tensor `{tensor}`: {what}")]
    Tensor {
        /// The file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong with it.
        what: String,
    },
    /// A JSON file could not be parsed.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// An embedding is NaN or infinite.
    #[error("embedding row {row} holds a non-finite value")]
    NonFinite {
        /// The row (image index).
        row: usize,
    },
    /// Embedding data does not divide into rows of the given width.
    #[error("{len} embedding values do not make rows of width {dim}")]
    EmbeddingShape {
        /// Number of values.
        len: usize,
        /// Row width (embedding size).
        dim: usize,
    },
    /// Fewer pairs than folds (scikit-learn's KFold refuses the same).
    #[error("{pairs} pairs cannot be split into {folds} folds")]
    TooFewPairs {
        /// Number of pairs.
        pairs: usize,
        /// Number of folds asked for.
        folds: usize,
    },
    /// A fold (or the folds outside it) has no same pairs or no different pairs, so TAR or FAR
    /// is undefined (InsightFace divides by zero there).
    #[error("fold {fold}: the {part} set has no {kind} pairs, so TAR/FAR is undefined")]
    DegenerateFold {
        /// The fold index.
        fold: usize,
        /// `"training"` or `"test"`.
        part: &'static str,
        /// `"same"` or `"different"`.
        kind: &'static str,
    },
    /// The embedder failed.
    #[error("embedder failed on images {start}..{end}: {source}")]
    Embedder {
        /// First image of the failed batch.
        start: usize,
        /// One past the last image of the failed batch.
        end: usize,
        /// The embedder's error.
        source: EmbedderError,
    },
    /// The embedder returned a number of values that is not a multiple of the batch size.
    #[error("embedder returned {values} values for {images} images")]
    EmbedderOutput {
        /// Values returned.
        values: usize,
        /// Images in the batch.
        images: usize,
    },
    /// A configuration value is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
}

/// Result alias for this crate.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;
