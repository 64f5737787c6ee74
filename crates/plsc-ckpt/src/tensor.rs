//! Named f32 tensors (the backbone's state) and the byte view of f32 data.
//!
//! Checkpoints never build a model: a backbone is "a list of named f32 tensors"
//! in PyTorch `state_dict` layout (plsc-models' `Backbone::state_tensors()` gives exactly that,
//! with arcface_torch names), plus the optimiser's momentum under the same names.

use serde::{Deserialize, Serialize};

/// The role of a backbone tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// A trainable parameter.
    Param,
    /// A parameter with a fixed value (PyTorch `requires_grad = False`).
    FrozenParam,
    /// A buffer (BatchNorm running statistics).
    Buffer,
    /// SGD momentum of the parameter with the same name.
    Momentum,
}

/// A named f32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The `state_dict` key (for momentum: the key of its parameter).
    pub name: String,
    /// The shape (PyTorch's layout).
    pub shape: Vec<usize>,
    /// Parameter, frozen parameter, buffer or momentum.
    pub kind: TensorKind,
    /// The values, `shape.iter().product()` of them.
    pub values: Vec<f32>,
}

impl NamedTensor {
    /// A tensor of `kind` with `values` of `shape`.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        kind: TensorKind,
        values: Vec<f32>,
    ) -> Self {
        Self {
            name: name.into(),
            shape,
            kind,
            values,
        }
    }

    /// Number of elements the shape describes.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The little-endian bytes of f32 values, without a copy on little-endian machines.
pub(crate) fn f32_bytes(values: &[f32]) -> std::borrow::Cow<'_, [u8]> {
    if cfg!(target_endian = "little") {
        std::borrow::Cow::Borrowed(bytemuck::cast_slice(values))
    } else {
        std::borrow::Cow::Owned(values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
}

/// Appends the f32 values of little-endian `bytes` (a multiple of 4 long) to `out`.
pub(crate) fn extend_f32_from_le(out: &mut Vec<f32>, bytes: &[u8]) {
    let start = out.len();
    out.resize(start + bytes.len() / 4, 0.0);
    let dst = &mut out[start..];
    bytemuck::cast_slice_mut::<f32, u8>(dst).copy_from_slice(bytes);
    if cfg!(target_endian = "big") {
        for v in dst {
            *v = f32::from_bits(u32::from_le(v.to_bits()));
        }
    }
}
