//! Named tensors in arcface_torch's `state_dict` layout, and safetensors files of them.
//!
//! Every backbone lists its tensors under the names PyTorch gives them (`conv1.weight`,
//! `layer1.0.bn1.running_mean`, `fc.weight`, ...), in PyTorch's shapes: a `Linear` weight is
//! `[out, in]` in the file although burn stores `[in, out]`. So a `backbone.pth` of
//! arcface_torch, converted once with
//!
//! ```python
//! from safetensors.torch import save_file; save_file(torch.load('backbone.pth', map_location='cpu'), 'backbone.safetensors')
//! ```
//!
//! loads with [`crate::Backbone::load_arcface_torch`], which also reads the `.pth` itself
//! (see [`crate::pytorch`]). BatchNorm's `num_batches_tracked`
//! counters (PyTorch writes them, momentum-based BatchNorm never reads them) are accepted and
//! ignored when loading and not written when saving; PyTorch's `load_state_dict` fills them in.
//! Files are written as f32; f32, f64, f16 and bf16 files load.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::format::StateFormat;

/// The role of a named tensor: the one kind vocabulary of model state, shared by the models
/// (plsc-models), checkpoints and exports (plsc-ckpt, where it is written into `manifest.json`
/// and the export's safetensors header as `param`, `frozen_param`, `buffer`, `momentum`), the
/// trainer and the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// A trainable parameter.
    Param,
    /// A parameter with a fixed value (PyTorch `requires_grad = False`, e.g. `features.weight`
    /// of IResNet); PyTorch still lists it in `parameters()`.
    FrozenParam,
    /// A buffer (BatchNorm running statistics): state, not a parameter.
    Buffer,
    /// The SGD momentum of the parameter with the same name (checkpoints hold it beside the
    /// parameters; a model never lists it).
    Momentum,
}

/// The name, PyTorch shape and role of one tensor of a model's state (a layout, without
/// values: [`crate::Backbone::state_layout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    /// The `state_dict` key.
    pub name: String,
    /// The shape as PyTorch stores it.
    pub shape: Vec<usize>,
    /// Parameter, frozen parameter or buffer.
    pub kind: TensorKind,
}

/// A named tensor of a model's state with its f32 values, row-major in PyTorch's layout: what
/// a backbone lists ([`crate::Backbone::state_tensors`]) and loads
/// ([`crate::Backbone::load_tensors`]), what plsc-ckpt saves, loads, reshards and exports, and
/// what the trainer and the server pass between them. One type across the crates.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// The `state_dict` key (for momentum: the key of its parameter).
    pub name: String,
    /// The shape as PyTorch stores it.
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

    /// Its name, shape and role, without the values.
    pub fn entry(&self) -> StateEntry {
        StateEntry {
            name: self.name.clone(),
            shape: self.shape.clone(),
            kind: self.kind,
        }
    }
}

/// Joins a `state_dict` prefix and a name with a dot.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Collects a model's named tensors, with or without their values.
pub struct StateWriter {
    with_values: bool,
    buffers_only: bool,
    entries: Vec<NamedTensor>,
}

impl StateWriter {
    pub(crate) fn new(with_values: bool) -> Self {
        Self {
            with_values,
            buffers_only: false,
            entries: Vec::new(),
        }
    }

    /// A writer that records only buffers (with values).
    pub(crate) fn buffers_only() -> Self {
        Self {
            with_values: true,
            buffers_only: true,
            entries: Vec::new(),
        }
    }

    pub(crate) fn into_entries(self) -> Vec<NamedTensor> {
        self.entries
    }

    fn push<B: Backend, const D: usize>(
        &mut self,
        name: String,
        kind: TensorKind,
        shape: Vec<usize>,
        value: impl FnOnce() -> Tensor<B, D>,
    ) {
        let values = if self.with_values {
            value()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("converted to f32 above")
        } else {
            Vec::new()
        };
        self.entries
            .push(NamedTensor::new(name, shape, kind, values));
    }

    /// A parameter stored as PyTorch stores it (not initialised when only the layout is
    /// asked for).
    pub fn param<B: Backend, const D: usize>(
        &mut self,
        name: String,
        kind: TensorKind,
        p: &Param<Tensor<B, D>>,
    ) {
        if self.buffers_only {
            return;
        }
        let shape = p.lazy_shape().dims::<D>().to_vec();
        self.push(name, kind, shape, || p.val());
    }

    /// A burn `Linear` weight `[in, out]`, written as PyTorch's `[out, in]`.
    pub fn linear_weight<B: Backend>(&mut self, name: String, p: &Param<Tensor<B, 2>>) {
        if self.buffers_only {
            return;
        }
        let [d_in, d_out] = p.lazy_shape().dims::<2>();
        self.push(name, TensorKind::Param, vec![d_out, d_in], || {
            p.val().transpose()
        });
    }

    /// A buffer (running statistic).
    pub fn buffer<B: Backend, const D: usize>(
        &mut self,
        name: String,
        s: &RunningState<Tensor<B, D>>,
    ) {
        let t = s.clone().into_record().val();
        self.push(name, TensorKind::Buffer, t.dims().to_vec(), || t);
    }
}

/// Where a reader's tensors come from.
enum Source<'a> {
    /// A tensor of a safetensors file.
    View(TensorView<'a>),
    /// A tensor in memory.
    Values(&'a NamedTensor),
}

/// Reads named tensors (a safetensors file, or tensors in memory) into a model, checking names
/// and shapes.
pub struct StateReader<'a> {
    file: String,
    tensors: HashMap<String, Source<'a>>,
    used: BTreeSet<String>,
    buffers_only: bool,
}

/// Keys that PyTorch writes and that this crate ignores on load.
pub(crate) fn ignored_key(name: &str) -> bool {
    name.ends_with(".num_batches_tracked") || name == "num_batches_tracked"
}

impl<'a> StateReader<'a> {
    /// Parses safetensors `bytes`; `file` names them in errors.
    pub fn new(file: &str, bytes: &'a [u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes).map_err(|source| {
            if StateFormat::sniff(bytes) == StateFormat::PyTorch {
                ModelError::NotSafetensors {
                    file: file.to_string(),
                }
            } else {
                ModelError::Safetensors {
                    file: file.to_string(),
                    source,
                }
            }
        })?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(k, v)| (k, Source::View(v)))
            .collect();
        Ok(Self {
            file: file.to_string(),
            tensors,
            used: BTreeSet::new(),
            buffers_only: false,
        })
    }

    /// Reads tensors in memory; `label` names them in errors.
    pub fn from_tensors(label: &str, tensors: &'a [NamedTensor]) -> Self {
        Self {
            file: label.to_string(),
            tensors: tensors
                .iter()
                .map(|t| (t.name.clone(), Source::Values(t)))
                .collect(),
            used: BTreeSet::new(),
            buffers_only: false,
        }
    }

    /// Reads buffers only (parameters are left as they are) from tensors in memory; `label`
    /// names them in errors.
    pub fn buffers_from(label: &str, tensors: &'a [NamedTensor]) -> Self {
        Self {
            buffers_only: true,
            ..Self::from_tensors(label, tensors)
        }
    }

    /// The values of `name`, which must have `expected` shape, as f32 data.
    fn take(&mut self, name: &str, expected: &[usize]) -> Result<TensorData> {
        let source = self
            .tensors
            .get(name)
            .ok_or_else(|| ModelError::MissingKey {
                file: self.file.clone(),
                key: name.to_string(),
                expected: expected.to_vec(),
            })?;
        let found = match source {
            Source::View(view) => view.shape(),
            Source::Values(t) => t.shape.as_slice(),
        };
        if found != expected {
            return Err(ModelError::ShapeMismatch {
                file: self.file.clone(),
                key: name.to_string(),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        let values = match source {
            Source::View(view) => decode(view).ok_or_else(|| ModelError::UnsupportedDtype {
                file: self.file.clone(),
                key: name.to_string(),
                dtype: format!("{:?}", view.dtype()),
            })?,
            Source::Values(t) => {
                if t.values.len() != expected.iter().product::<usize>() {
                    return Err(ModelError::ShapeMismatch {
                        file: self.file.clone(),
                        key: name.to_string(),
                        expected: expected.to_vec(),
                        found: vec![t.values.len()],
                    });
                }
                t.values.clone()
            }
        };
        self.used.insert(name.to_string());
        Ok(TensorData::new(values, expected.to_vec()))
    }

    /// Replaces the value of a parameter (same id, device and `require_grad`).
    pub fn param<B: Backend, const D: usize>(
        &mut self,
        name: String,
        p: Param<Tensor<B, D>>,
    ) -> Result<Param<Tensor<B, D>>> {
        if self.buffers_only {
            return Ok(p);
        }
        let shape = p.lazy_shape().dims::<D>().to_vec();
        let data = self.take(&name, &shape)?;
        let device = p.lazy_device();
        let id = p.id;
        let t = Tensor::<B, D>::from_data(data, &device);
        Ok(p.transform_for_load(t, id))
    }

    /// Replaces a burn `Linear` weight `[in, out]` from PyTorch's `[out, in]`. The values are
    /// transposed on the host, so the weight is a contiguous `[in, out]` tensor, laid out as a
    /// freshly built model's and a replica's ([`crate::Backbone::fresh_replica`]): every copy
    /// of a loaded model runs the same matrix-product kernel and gives the same bits (a
    /// transposed view would take another kernel path and differ in the last bits).
    pub fn linear_weight<B: Backend>(
        &mut self,
        name: String,
        p: Param<Tensor<B, 2>>,
    ) -> Result<Param<Tensor<B, 2>>> {
        if self.buffers_only {
            return Ok(p);
        }
        let [d_in, d_out] = p.lazy_shape().dims::<2>();
        let data = self.take(&name, &[d_out, d_in])?;
        let rows = data.into_vec::<f32>().expect("take() gives f32 data");
        let mut values = vec![0.0f32; rows.len()];
        for (o, row) in rows.chunks_exact(d_in.max(1)).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                values[i * d_out + o] = v;
            }
        }
        let device = p.lazy_device();
        let id = p.id;
        let t = Tensor::<B, 2>::from_data(TensorData::new(values, [d_in, d_out]), &device);
        Ok(p.transform_for_load(t, id))
    }

    /// Replaces a buffer; the result has its own storage (shares nothing with `s`'s clones).
    pub fn buffer<B: Backend, const D: usize>(
        &mut self,
        name: String,
        s: RunningState<Tensor<B, D>>,
    ) -> Result<RunningState<Tensor<B, D>>> {
        let record = s.into_record();
        let current = record.val();
        let shape = current.dims().to_vec();
        let data = self.take(&name, &shape)?;
        let t = Tensor::<B, D>::from_data(data, &current.device());
        Ok(RunningState::with_id(record.id, t))
    }

    /// Fails with [`ModelError::UnexpectedKeys`] if the file holds tensors that were not read
    /// (other than `num_batches_tracked`).
    pub fn finish(self) -> Result<()> {
        let mut keys: Vec<String> = self
            .tensors
            .keys()
            .filter(|k| !self.used.contains(*k) && !ignored_key(k))
            .cloned()
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        keys.sort();
        Err(ModelError::UnexpectedKeys {
            file: self.file,
            keys,
        })
    }
}

/// Reads every tensor of safetensors `bytes` as f32, in name order, `num_batches_tracked` left
/// out (whatever its dtype); `file` names them in errors. The roles are not known from the
/// file: all are [`TensorKind::Param`] until a model reads them.
pub fn read_safetensors(bytes: &[u8], file: &str) -> Result<Vec<NamedTensor>> {
    let reader = StateReader::new(file, bytes)?;
    let mut names: Vec<&String> = reader.tensors.keys().filter(|k| !ignored_key(k)).collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let Source::View(view) = &reader.tensors[name] else {
                unreachable!("StateReader::new holds views")
            };
            let values = decode(view).ok_or_else(|| ModelError::UnsupportedDtype {
                file: file.to_string(),
                key: name.clone(),
                dtype: format!("{:?}", view.dtype()),
            })?;
            Ok(NamedTensor::new(
                name.clone(),
                view.shape().to_vec(),
                TensorKind::Param,
                values,
            ))
        })
        .collect()
}

/// The values of a safetensors tensor as f32, or `None` for a non-float dtype.
fn decode(view: &TensorView<'_>) -> Option<Vec<f32>> {
    let bytes = view.data();
    Some(match view.dtype() {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8-byte chunk")) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// A module whose tensors have PyTorch `state_dict` names.
pub trait TorchState<B: Backend>: Sized {
    /// Lists this module's tensors under `prefix`.
    fn save_state(&self, prefix: &str, w: &mut StateWriter);
    /// Replaces this module's tensors with those under `prefix` in `r`.
    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self>;
}

impl<B: Backend, T: TorchState<B>> TorchState<B> for Vec<T> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        for (i, m) in self.iter().enumerate() {
            m.save_state(&join(prefix, &i.to_string()), w);
        }
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        self.into_iter()
            .enumerate()
            .map(|(i, m)| m.load_state(&join(prefix, &i.to_string()), r))
            .collect()
    }
}

/// Serialises named tensors to safetensors bytes (f32, little-endian).
pub fn to_safetensors_bytes(tensors: &[NamedTensor], label: &str) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| TensorView::new(Dtype::F32, t.shape.clone(), b).map(|v| (t.name.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| ModelError::Safetensors {
            file: label.to_string(),
            source,
        })?;
    safetensors::serialize(views, None).map_err(|source| ModelError::Safetensors {
        file: label.to_string(),
        source,
    })
}

/// Writes `bytes` to `path` through a temporary name in the same folder and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "state".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// Reads a whole file, naming it in the error.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}
