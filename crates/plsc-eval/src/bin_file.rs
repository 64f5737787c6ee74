//! InsightFace `.bin` pair sets: a Python pickle of the tuple `(bins, issame_list)`, where `bins`
//! is a list of encoded images (JPEG/PNG bytes) and `issame_list` a list of bools; pair `i` is
//! images `2i` and `2i + 1`.
//!
//! InsightFace wrote the public sets (LFW, CFP-FF, CFP-FP, AgeDB-30) from Python 2 with
//! `pickle.HIGHEST_PROTOCOL` (protocol 2), where the images are `str` (`BINSTRING` /
//! `SHORT_BINSTRING` opcodes); Python 3 writes `bytes` (`BINBYTES`, protocol 3 to 5, with
//! `FRAME`s from 4 on), or with protocol 2 as `_codecs.encode(..., 'latin1')` calls. All of these
//! read here as byte strings. We write protocol 3 (`bytes`), which Python 3's `pickle.load` and
//! InsightFace's `load_bin` read.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_pickle::{DeOptions, SerOptions, Value};

use crate::error::{EvalError, Result};

/// The content of a `.bin` pair set, images still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinPairs {
    /// Encoded images (JPEG, PNG, PNM), `2 * issame.len()` of them.
    pub images: Vec<Vec<u8>>,
    /// For each pair of consecutive images, whether they show the same identity.
    pub issame: Vec<bool>,
}

impl BinPairs {
    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.issame.len()
    }
}

fn python_type(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::I64(_) | Value::Int(_) => "int",
        Value::F64(_) => "float",
        Value::Bytes(_) => "bytes",
        Value::String(_) => "str",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Set(_) => "set",
        Value::FrozenSet(_) => "frozenset",
        Value::Dict(_) => "dict",
    }
}

/// Parses the bytes of a `.bin` file; `path` only names the file in errors.
pub fn parse_bin(data: &[u8], path: &Path) -> Result<BinPairs> {
    let layout = |what: String| EvalError::BinLayout {
        path: path.to_path_buf(),
        what,
    };
    let value = serde_pickle::value_from_slice(data, DeOptions::new()).map_err(|source| {
        EvalError::Pickle {
            path: path.to_path_buf(),
            source,
        }
    })?;
    let top = match value {
        Value::Tuple(items) | Value::List(items) if items.len() == 2 => items,
        other => {
            return Err(layout(format!(
                "expected a tuple (images, issame), found a {}{}",
                python_type(&other),
                match &other {
                    Value::Tuple(v) | Value::List(v) => format!(" of {} items", v.len()),
                    _ => String::new(),
                }
            )));
        }
    };
    let mut top = top.into_iter();
    let (bins, labels) = (
        top.next().unwrap_or(Value::None),
        top.next().unwrap_or(Value::None),
    );
    let bins = match bins {
        Value::List(v) | Value::Tuple(v) => v,
        other => {
            return Err(layout(format!(
                "item 0 should be a list of encoded images, found a {}",
                python_type(&other)
            )));
        }
    };
    let labels = match labels {
        Value::List(v) | Value::Tuple(v) => v,
        other => {
            return Err(layout(format!(
                "item 1 should be a list of bools, found a {}",
                python_type(&other)
            )));
        }
    };
    let mut images = Vec::with_capacity(bins.len());
    for (i, b) in bins.into_iter().enumerate() {
        match b {
            Value::Bytes(bytes) => images.push(bytes),
            other => {
                return Err(layout(format!(
                    "image {i} is a {}, not bytes",
                    python_type(&other)
                )));
            }
        }
    }
    let mut issame = Vec::with_capacity(labels.len());
    for (i, l) in labels.into_iter().enumerate() {
        match l {
            Value::Bool(b) => issame.push(b),
            other => {
                return Err(layout(format!(
                    "label {i} is a {}, not a bool",
                    python_type(&other)
                )));
            }
        }
    }
    if !images.len().is_multiple_of(2) {
        return Err(EvalError::OddImageCount {
            path: path.to_path_buf(),
            images: images.len(),
        });
    }
    if images.len() != 2 * issame.len() {
        return Err(EvalError::PairCountMismatch {
            source_name: path.display().to_string(),
            images: images.len(),
            labels: issame.len(),
        });
    }
    Ok(BinPairs { images, issame })
}

/// Reads a `.bin` pair set (images left encoded).
pub fn read_bin(path: &Path) -> Result<BinPairs> {
    let data = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_bin(&data, path)
}

/// Encodes a pair set as a pickle (protocol 3) of `(list of bytes, list of bools)`.
pub fn encode_bin(images: &[Vec<u8>], issame: &[bool]) -> Result<Vec<u8>> {
    if !images.len().is_multiple_of(2) {
        return Err(EvalError::OddImageCount {
            path: PathBuf::from("<pair set being written>"),
            images: images.len(),
        });
    }
    if images.len() != 2 * issame.len() {
        return Err(EvalError::PairCountMismatch {
            source_name: "<pair set being written>".into(),
            images: images.len(),
            labels: issame.len(),
        });
    }
    let value = Value::Tuple(vec![
        Value::List(images.iter().map(|b| Value::Bytes(b.clone())).collect()),
        Value::List(issame.iter().map(|&b| Value::Bool(b)).collect()),
    ]);
    serde_pickle::value_to_vec(&value, SerOptions::new()).map_err(|source| EvalError::Pickle {
        path: PathBuf::from("<pair set being written>"),
        source,
    })
}

/// Writes a pair set in InsightFace's `.bin` layout, to a temporary name first and then renamed
/// into place.
pub fn write_bin(path: &Path, images: &[Vec<u8>], issame: &[bool]) -> Result<()> {
    let data = encode_bin(images, issame).map_err(|e| match e {
        EvalError::OddImageCount { images, .. } => EvalError::OddImageCount {
            path: path.to_path_buf(),
            images,
        },
        EvalError::PairCountMismatch { images, labels, .. } => EvalError::PairCountMismatch {
            source_name: path.display().to_string(),
            images,
            labels,
        },
        other => other,
    })?;
    write_atomically(path, &data)
}

/// Writes `data` to `path` through a temporary file in the same folder and a rename.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let io_err = |source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| {
            io_err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the path names no file",
            ))
        })?
        .to_string_lossy()
        .into_owned();
    let tmp = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}
