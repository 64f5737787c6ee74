//! The files of `xtask head-check` (docs/head-check.md): a safetensors file of the head's
//! inputs written by the user's PyTorch code, and one of plsc-rs's loss and gradients written
//! back in the same float type, so both heads can be compared on identical numbers.
//!
//! Inputs: `features` `[B, D]`, `labels` `[B]` (I64), `weight` `[C, D]`, optional `bias` `[C]`
//! (softmax); features, weight and bias all F32 or all F64. Outputs: `loss` (a scalar),
//! `grad_features` `[B, D]`, `grad_weight` `[C, D]`, `grad_bias` `[C]` (softmax).

use std::collections::HashMap;
use std::path::Path;

use plsc_core::check::{CheckInputs, CheckOutputs};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{CkptError, Result, io_err};

/// The float type of a head-check file (its outputs are written in it too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckFloat {
    F32,
    F64,
}

/// A head-check input file, read.
#[derive(Debug, Clone)]
pub struct CheckFile {
    /// The float type the inputs were written in.
    pub float: CheckFloat,
    /// The tensors, as f64.
    pub inputs: CheckInputs,
}

fn shape_err(path: &Path, tensor: &str, expected: Vec<usize>, found: &[usize]) -> CkptError {
    CkptError::TensorShape {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        expected,
        found: found.to_vec(),
    }
}

fn dtype_err(path: &Path, tensor: &str, found: Dtype, expected: &str) -> CkptError {
    CkptError::TensorDtype {
        path: path.to_path_buf(),
        tensor: tensor.into(),
        found: format!("{found:?}"),
        expected: expected.into(),
    }
}

/// A float tensor's values as f64 (F32 or F64 little-endian).
fn floats(view: &TensorView<'_>, name: &str, path: &Path) -> Result<Vec<f64>> {
    let data = view.data();
    match view.dtype() {
        Dtype::F32 => Ok(data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
            .collect()),
        Dtype::F64 => Ok(data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect()),
        other => Err(dtype_err(path, name, other, "F32 or F64")),
    }
}

/// Reads and checks a head-check input file (shapes and dtypes named in the errors).
pub fn read_check_inputs(path: &Path) -> Result<CheckFile> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| CkptError::Safetensors {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let get = |name: &str| {
        st.tensor(name).map_err(|_| CkptError::MissingTensor {
            path: path.to_path_buf(),
            tensor: name.into(),
        })
    };
    let (f, l, w) = (get("features")?, get("labels")?, get("weight")?);
    if f.shape().len() != 2 {
        return Err(shape_err(path, "features", vec![0, 0], f.shape()));
    }
    let (rows, dim) = (f.shape()[0], f.shape()[1]);
    if w.shape().len() != 2 || w.shape()[1] != dim {
        let classes = w.shape().first().copied().unwrap_or(0);
        return Err(shape_err(path, "weight", vec![classes, dim], w.shape()));
    }
    let classes = w.shape()[0];
    if l.shape() != [rows] {
        return Err(shape_err(path, "labels", vec![rows], l.shape()));
    }
    if l.dtype() != Dtype::I64 {
        return Err(dtype_err(path, "labels", l.dtype(), "I64"));
    }
    let float = match f.dtype() {
        Dtype::F32 => CheckFloat::F32,
        Dtype::F64 => CheckFloat::F64,
        other => return Err(dtype_err(path, "features", other, "F32 or F64")),
    };
    if w.dtype() != f.dtype() {
        return Err(dtype_err(
            path,
            "weight",
            w.dtype(),
            &format!("{:?} (as `features`)", f.dtype()),
        ));
    }
    let labels = l
        .data()
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
        .collect();
    let bias = match st.tensor("bias") {
        Ok(b) => {
            if b.shape() != [classes] {
                return Err(shape_err(path, "bias", vec![classes], b.shape()));
            }
            if b.dtype() != f.dtype() {
                return Err(dtype_err(
                    path,
                    "bias",
                    b.dtype(),
                    &format!("{:?} (as `features`)", f.dtype()),
                ));
            }
            Some(floats(&b, "bias", path)?)
        }
        Err(_) => None,
    };
    Ok(CheckFile {
        float,
        inputs: CheckInputs {
            rows,
            dim,
            classes,
            features: floats(&f, "features", path)?,
            labels,
            weight: floats(&w, "weight", path)?,
            bias,
        },
    })
}

fn encode(values: &[f64], float: CheckFloat) -> Vec<u8> {
    match float {
        CheckFloat::F32 => values
            .iter()
            .flat_map(|v| (*v as f32).to_le_bytes())
            .collect(),
        CheckFloat::F64 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes `out` (for the inputs of `file`) to `path` in the inputs' float type, through a
/// temporary name renamed into place.
pub fn write_check_outputs(path: &Path, out: &CheckOutputs, file: &CheckFile) -> Result<()> {
    let (inp, float) = (&file.inputs, file.float);
    let dtype = match float {
        CheckFloat::F32 => Dtype::F32,
        CheckFloat::F64 => Dtype::F64,
    };
    let mut tensors: Vec<(&str, Vec<u8>, Vec<usize>)> = vec![
        ("loss", encode(&[out.loss], float), vec![]),
        (
            "grad_features",
            encode(&out.grad_features, float),
            vec![inp.rows, inp.dim],
        ),
        (
            "grad_weight",
            encode(&out.grad_weight, float),
            vec![inp.classes, inp.dim],
        ),
    ];
    if let Some(gb) = &out.grad_bias {
        tensors.push(("grad_bias", encode(gb, float), vec![inp.classes]));
    }
    let bad = |e: safetensors::SafeTensorError| CkptError::Safetensors {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let views = tensors
        .iter()
        .map(|(n, data, shape)| {
            Ok((
                n.to_string(),
                TensorView::new(dtype, shape.clone(), data).map_err(bad)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, None::<HashMap<String, String>>, &tmp).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        bad(e)
    })?;
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}
