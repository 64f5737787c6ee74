//! The crate's error type: every message names the file and line (or record) at fault.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where a sample came from: a line of a part file or a record of a RecordIO file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// 1-based line `line` of text file `file`.
    Line {
        /// The part file.
        file: PathBuf,
        /// 1-based line number.
        line: u64,
    },
    /// Record with key `key` at byte `offset` of RecordIO file `file`.
    Record {
        /// The `.rec` file.
        file: PathBuf,
        /// Record key (the `.idx` key or the sequential number).
        key: u64,
        /// Byte offset of the record's header in the file.
        offset: u64,
    },
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line { file, line } => write!(f, "{}:{line}", file.display()),
            Location::Record { file, key, offset } => {
                write!(f, "{} record {key} (byte {offset})", file.display())
            }
        }
    }
}

/// What is wrong with one line of a part file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// No tab separates the base64 image from the label.
    #[error("missing tab between the base64 image and the label")]
    MissingTab,
    /// The image field is not valid base64.
    #[error("malformed base64: {0}")]
    Base64(String),
    /// The label field is not an integer.
    #[error("label {0:?} is not an integer")]
    LabelNotInteger(String),
    /// The label is negative.
    #[error("label {0} is negative")]
    NegativeLabel(i64),
    /// The label is not below the class count.
    #[error("label {label} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The label read.
        label: i64,
        /// The class count it must be below.
        classes: u64,
    },
    /// The decoded bytes are not an image in a supported format (JPEG, PNG, PNM).
    #[error("bytes are not a decodable image: {0}")]
    NotAnImage(String),
    /// The file a list line names cannot be read: missing, a folder, not readable.
    #[error("{0}")]
    UnreadableFile(String),
    /// The line is empty (only whitespace or a line ending).
    #[error("empty line")]
    Empty,
}

/// Errors of `plsc-data`.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Reading or writing `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line of a part file is bad.
    #[error("{location}: {error}")]
    Line {
        /// File and line.
        location: Location,
        /// What is wrong with it.
        error: LineError,
    },
    /// A sample (line or record) could not be decoded into an image.
    #[error("{location}: cannot decode image: {reason}")]
    Decode {
        /// File and line or record.
        location: Location,
        /// The decoder's message.
        reason: String,
    },
    /// A RecordIO file is malformed.
    #[error("{}: RecordIO: {reason} at byte {offset}", path.display())]
    RecordIo {
        /// The `.rec` or `.idx` file.
        path: PathBuf,
        /// Byte offset (or line number for `.idx`) where the problem is.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A `file_list.txt` is malformed or names missing files.
    #[error("{}:{line}: {reason}", path.display())]
    FileList {
        /// The file list.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// An input has no data lines.
    #[error("{what}: no samples")]
    Empty {
        /// Which input.
        what: String,
    },
    /// The output directory cannot be used.
    #[error("{}: {reason}", path.display())]
    Output {
        /// The output directory.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// An IDX file (MNIST layout) is malformed.
    #[error("{}: {reason}", path.display())]
    Idx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An option or argument is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Encoding an image failed (synthetic data).
    #[error("encoding image: {0}")]
    Encode(String),
    /// An image file could not be read as an image (a whole file, not a line of a part).
    #[error("{}: cannot decode image: {reason}", path.display())]
    ImageFile {
        /// The image file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
    /// A pair set asks for more genuine (same-identity) pairs than the images allow.
    #[error(
        "{}: {needed} genuine pairs are needed (half of {pairs}), but only {available} distinct \
         ones exist: {identities} identities have two or more images (identities with one \
         image serve only impostor pairs); ask for at most {} pairs or add images",
        from.display(), 2 * available
    )]
    TooFewGenuinePairs {
        /// The folder or label file the images come from.
        from: PathBuf,
        /// Pairs asked for in all.
        pairs: usize,
        /// Genuine pairs needed (half of `pairs`, rounded up).
        needed: usize,
        /// Distinct genuine pairs the images allow.
        available: usize,
        /// Identities with two or more images.
        identities: usize,
    },
    /// A pair set asks for more impostor (different-identity) pairs than the images allow.
    #[error(
        "{}: {needed} impostor pairs are needed (half of {pairs}), but only {available} distinct \
         ones exist ({identities} identities with images); ask for fewer pairs or add identities",
        from.display()
    )]
    TooFewImpostorPairs {
        /// The folder or label file the images come from.
        from: PathBuf,
        /// Pairs asked for in all.
        pairs: usize,
        /// Impostor pairs needed (half of `pairs`, rounded down).
        needed: usize,
        /// Distinct impostor pairs the images allow.
        available: usize,
        /// Identities with at least one image.
        identities: usize,
    },
    /// Random drawing found too few distinct pairs (the request is near what the images allow).
    #[error(
        "{}: could only draw {drawn} distinct pairs of the {pairs} asked for; ask for fewer pairs",
        from.display()
    )]
    PairSampling {
        /// The folder or label file the images come from.
        from: PathBuf,
        /// Pairs drawn before giving up.
        drawn: usize,
        /// Pairs asked for.
        pairs: usize,
    },
    /// The background prefetch thread stopped unexpectedly.
    #[error("batch prefetch thread for rank {rank} stopped: {reason}")]
    Prefetch {
        /// The rank whose stream stopped.
        rank: usize,
        /// Why.
        reason: String,
    },
}

impl DataError {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A bad line at `file:line`.
    pub fn line(file: impl AsRef<Path>, line: u64, error: LineError) -> Self {
        DataError::Line {
            location: Location::Line {
                file: file.as_ref().to_path_buf(),
                line,
            },
            error,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
