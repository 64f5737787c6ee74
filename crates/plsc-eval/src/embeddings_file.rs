//! Given embeddings on disk, so that our metrics can be checked against InsightFace's code on
//! identical inputs: a safetensors file with the tensor `embeddings` (`[2P, D]`, `f32`, pairs on
//! consecutive rows) and a JSON array of `P` booleans (`issame`).

use std::path::Path;

use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::bin_file::write_atomically;
use crate::error::{EvalError, Result};

/// Name of the tensor that holds the embeddings.
pub const EMBEDDINGS_TENSOR: &str = "embeddings";

/// Embeddings read from a file: `rows x dim`, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingMatrix {
    /// The values, row-major.
    pub data: Vec<f32>,
    /// Number of rows (images).
    pub rows: usize,
    /// Embedding size.
    pub dim: usize,
}

/// Reads the `embeddings` tensor (`[rows, dim]`, `f32`) of a safetensors file.
pub fn read_embeddings(path: &Path) -> Result<EmbeddingMatrix> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|source| EvalError::Safetensors {
        path: path.to_path_buf(),
        source,
    })?;
    let tensor_err = |what: String| EvalError::Tensor {
        path: path.to_path_buf(),
        tensor: EMBEDDINGS_TENSOR.into(),
        what,
    };
    let view = st.tensor(EMBEDDINGS_TENSOR).map_err(|_| {
        let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
        names.sort();
        tensor_err(format!("missing (the file holds: {})", names.join(", ")))
    })?;
    if view.dtype() != Dtype::F32 {
        return Err(tensor_err(format!(
            "dtype {:?}, expected F32",
            view.dtype()
        )));
    }
    let &[rows, dim] = view.shape() else {
        return Err(tensor_err(format!(
            "shape {:?}, expected [2P, D]",
            view.shape()
        )));
    };
    if dim == 0 {
        return Err(tensor_err(format!(
            "shape {:?} has no columns",
            view.shape()
        )));
    }
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok(EmbeddingMatrix { data, rows, dim })
}

/// Writes embeddings as the safetensors file [`read_embeddings`] reads (temp name, then rename).
pub fn write_embeddings(path: &Path, data: &[f32], dim: usize) -> Result<()> {
    if dim == 0 || !data.len().is_multiple_of(dim) {
        return Err(EvalError::EmbeddingShape {
            len: data.len(),
            dim,
        });
    }
    let bytes: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view =
        TensorView::new(Dtype::F32, vec![data.len() / dim, dim], &bytes).map_err(|source| {
            EvalError::Safetensors {
                path: path.to_path_buf(),
                source,
            }
        })?;
    let out = safetensors::serialize([(EMBEDDINGS_TENSOR, view)], None).map_err(|source| {
        EvalError::Safetensors {
            path: path.to_path_buf(),
            source,
        }
    })?;
    write_atomically(path, &out)
}

/// Reads a JSON array of booleans (the `issame` list).
pub fn read_issame(path: &Path) -> Result<Vec<bool>> {
    let bytes = std::fs::read(path).map_err(|source| EvalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the `issame` list as a JSON array (temp name, then rename).
pub fn write_issame(path: &Path, issame: &[bool]) -> Result<()> {
    let text = serde_json::to_vec(issame).map_err(|source| EvalError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomically(path, &text)
}
