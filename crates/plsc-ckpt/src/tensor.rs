//! The byte view of f32 data, and the backbone's state type.
//!
//! Saving, loading and resharding never build a model: a backbone is "a list of named f32
//! tensors" ([`plsc_models::NamedTensor`], the one model-state type of the workspace) in
//! PyTorch `state_dict` layout, as `Backbone::state_tensors()` gives it, with arcface_torch
//! names, plus the optimiser's momentum under the same names
//! ([`plsc_models::TensorKind::Momentum`]).

// The one model-state vocabulary is plsc-models': the modules here name it through this one.
pub(crate) use plsc_models::{NamedTensor, TensorKind};

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
