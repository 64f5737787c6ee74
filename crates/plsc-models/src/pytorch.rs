//! State files as users bring them: PyTorch's own `torch.save(model.state_dict())` files
//! (`.pth`/`.pt`: a zip of a pickle and its storages, or the legacy pickle format) and
//! safetensors files, told apart by their first bytes.
//!
//! PyTorch files are read with burn-store's PyTorch reader (it parses the pickle and reads the
//! storages; no Python involved). That reader reads every tensor as a contiguous run of
//! elements from its storage offset and does not look at the stride: a `state_dict` of
//! `nn.Module` parameters is contiguous (arcface_torch's is), but one saved from a
//! `channels_last` model is not; make such a file contiguous first
//! (`{k: v.contiguous() for k, v in sd.items()}`).
//!
//! BatchNorm's `num_batches_tracked` counters (I64 in PyTorch's files) are dropped on reading,
//! whatever their element type. Float tensors of any width (f16, bf16, f32, f64) are read as
//! f32; any other integer or boolean tensor is an [`ModelError::UnsupportedDtype`] naming it.

use std::path::Path;

use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;

use crate::error::{ModelError, Result};
use crate::format::StateFormat;
use crate::state::{NamedTensor, TensorKind, ignored_key};

/// Reads the tensors of a state file of either format (told by its first bytes), in name
/// order, as f32, `num_batches_tracked` left out: [`read_pytorch`] or
/// [`crate::state::read_safetensors`].
pub fn read_state_file(path: &Path) -> Result<(StateFormat, Vec<NamedTensor>)> {
    let format = StateFormat::of_file(path)?;
    let tensors = match format {
        StateFormat::PyTorch => read_pytorch(path)?,
        StateFormat::Safetensors => {
            let bytes = crate::state::read_file(path)?;
            crate::state::read_safetensors(&bytes, &path.display().to_string())?
        }
    };
    Ok((format, tensors))
}

/// Reads the tensors of a PyTorch file, `num_batches_tracked` left out, in name order, as f32.
///
/// A `DataParallel`/`DistributedDataParallel` prefix (`module.` on every key) is removed. The
/// roles ([`TensorKind`]) of the returned tensors are not known from the file: they are all
/// [`TensorKind::Param`] until a model reads them ([`crate::Backbone::load_tensors`]).
pub fn read_pytorch(path: &Path) -> Result<Vec<NamedTensor>> {
    let file = path.display().to_string();
    let reader = PytorchReader::new(path).map_err(|e| ModelError::PyTorch {
        file: file.clone(),
        detail: e.to_string(),
    })?;
    let mut names: Vec<&String> = reader.tensors().keys().collect();
    names.sort();
    let strip_module = !names.is_empty() && names.iter().all(|n| n.starts_with("module."));
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let key = if strip_module {
            name.trim_start_matches("module.")
        } else {
            name.as_str()
        };
        if ignored_key(key) {
            continue;
        }
        let snapshot = &reader.tensors()[name];
        let shape: Vec<usize> = snapshot.shape.iter().copied().collect();
        let float = matches!(
            snapshot.dtype,
            DType::F32 | DType::F64 | DType::F16 | DType::BF16
        );
        if !float {
            return Err(ModelError::UnsupportedDtype {
                file,
                key: key.to_string(),
                dtype: format!("{:?}", snapshot.dtype),
            });
        }
        let data = snapshot.to_data().map_err(|e| ModelError::PyTorch {
            file: file.clone(),
            detail: format!("reading tensor `{key}`: {e:?}"),
        })?;
        let values: Vec<f32> =
            data.convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| ModelError::PyTorch {
                    file: file.clone(),
                    detail: format!("converting tensor `{key}` to f32: {e:?}"),
                })?;
        if values.len() != shape.iter().product::<usize>() {
            return Err(ModelError::PyTorch {
                file,
                detail: format!(
                    "tensor `{key}` of shape {shape:?} holds {} values",
                    values.len()
                ),
            });
        }
        out.push(NamedTensor::new(key, shape, TensorKind::Param, values));
    }
    Ok(out)
}
