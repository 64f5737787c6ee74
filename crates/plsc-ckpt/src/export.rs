//! Export for inference: the backbone's weights and buffers (no momentum, no head) as
//! `backbone.safetensors`, and `model.json` with the architecture, embedding size, input size
//! and channels and the input normalisation. This is what plsc-serve and `xtask eval` load,
//! through [`load_exported`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CkptError, Result, io_err};
use crate::layout::sync_dir;
use crate::load::Checkpoint;
use crate::manifest::{BACKBONE_FILE, ModelSpec};
use crate::st::{MappedSt, StWriter, digest_file};
use crate::tensor::{NamedTensor, TensorKind, extend_f32_from_le};

/// File name of the model description in an export.
pub const MODEL_JSON: &str = "model.json";
/// Header metadata key of the exported weights: a JSON object of tensor key -> role.
const KINDS_KEY: &str = "plsc_kinds";
/// `format` of `model.json`.
pub const EXPORT_FORMAT: &str = "plsc-model";
/// Version of `model.json` this crate writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// The channel order a network takes its colour input in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Red, green, blue: what plsc-rs decodes, and what arcface_torch and PLSC train on.
    #[default]
    Rgb,
}

/// Where a model's input preprocessing (`mean`, `std`, channel order) comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PreprocessingSource {
    /// Trained by plsc-rs: its training pipeline's normalisation (the default
    /// `(x - 127.5) / 128`, or the run's own).
    #[default]
    #[serde(rename = "plsc-rs")]
    PlscRs,
    /// InsightFace's arcface_torch: RGB, `(x / 255 - 0.5) / 0.5`, i.e. `(x - 127.5) / 127.5`.
    #[serde(rename = "arcface_torch")]
    ArcfaceTorch,
    /// PaddlePaddle PLSC: RGB, `(x - 127.5) / 128`.
    #[serde(rename = "plsc")]
    Plsc,
}

impl PreprocessingSource {
    /// The `(mean, std)` of 0..255 pixel values this source trains with (the same for every
    /// channel); `None` for plsc-rs, whose runs record their own.
    pub fn mean_std(self) -> Option<(f32, f32)> {
        match self {
            Self::PlscRs => None,
            Self::ArcfaceTorch => Some((127.5, 127.5)),
            Self::Plsc => Some((127.5, 128.0)),
        }
    }

    /// The name written in `model.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::PlscRs => "plsc-rs",
            Self::ArcfaceTorch => "arcface_torch",
            Self::Plsc => "plsc",
        }
    }
}

/// The content of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelJson {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// [`EXPORT_VERSION`].
    pub format_version: u32,
    /// Architecture, embedding size, input size and channels, normalisation.
    #[serde(flatten)]
    pub spec: ModelSpec,
    /// The channel order of the input (`rgb`; absent in older files, which were RGB).
    #[serde(default)]
    pub channel_order: ChannelOrder,
    /// Where `mean`, `std` and the channel order come from (`plsc-rs`, `arcface_torch`,
    /// `plsc`; absent in older files, which were plsc-rs's).
    #[serde(default)]
    pub preprocessing_source: PreprocessingSource,
    /// The weights file (`backbone.safetensors`).
    pub weights: String,
    /// Its size in bytes.
    pub weights_bytes: u64,
    /// Its sha256 (lowercase hex).
    pub weights_sha256: String,
    /// The training step of the checkpoint it came from.
    pub source_step: u64,
}

/// An exported model, loaded: its description and its named tensors (parameters and buffers
/// with arcface_torch names, f32).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedModel {
    /// Architecture and input.
    pub spec: ModelSpec,
    /// The channel order of the input.
    pub channel_order: ChannelOrder,
    /// Where the preprocessing comes from.
    pub preprocessing_source: PreprocessingSource,
    /// The step it was trained to.
    pub source_step: u64,
    /// Parameters, frozen parameters and buffers, in file order.
    pub tensors: Vec<NamedTensor>,
}

/// What [`export`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportReport {
    /// The export directory.
    pub dir: PathBuf,
    /// Files of the checkpoint whose sha256 was not checked (export reads only the backbone,
    /// so these are the head shards, unless the checkpoint was verified before, as
    /// [`Checkpoint::open_dir_or_latest`] does for a root). Empty when all were checked.
    pub unverified: Vec<PathBuf>,
}

/// Writes the backbone of `ckpt` (weights and buffers only) and `model.json` into `out`
/// (through a temporary directory next to it, renamed at the end; an earlier export there is
/// replaced, any other non-empty directory is refused). The backbone is verified; the head
/// shards are not read, and the report lists what was not verified (also logged).
pub fn export(ckpt: &Checkpoint, out: &Path) -> Result<ExportReport> {
    let manifest = ckpt.manifest();
    let (spec, entry) = match (&manifest.model, &manifest.backbone) {
        (Some(spec), Some(entry)) => (spec.clone(), entry.clone()),
        _ => {
            return Err(CkptError::MissingFile {
                path: ckpt.dir().join(BACKBONE_FILE),
                listed_in: ckpt.dir().join(crate::manifest::MANIFEST_FILE),
            });
        }
    };
    let src = ckpt.open_backbone()?;
    let kept: Vec<ExportTensor> = entry
        .tensors
        .iter()
        .filter(|t| t.kind != TensorKind::Momentum)
        .map(|t| (t.key.clone(), t.shape.clone(), t.kind))
        .collect();
    let source = PreprocessingSource::PlscRs;
    let dir = write_export(out, spec, source, manifest.step(), &kept, |w, i| {
        w.write(src.f32_tensor_shaped(&kept[i].0, &kept[i].1)?)
    })?;
    let unverified = ckpt.unverified_files();
    if !unverified.is_empty() {
        tracing::info!(
            checkpoint = %ckpt.dir().display(),
            "export read only the backbone: {} file(s) of the checkpoint (the head shards) were \
             not verified",
            unverified.len()
        );
    }
    Ok(ExportReport { dir, unverified })
}

/// Writes an export of in-memory `tensors` into `out`, for a backbone that never had a
/// checkpoint (freshly built or converted; tests and benchmarks): the same files, header and
/// atomic replacement as [`export`]. Momentum tensors are left out.
pub fn export_tensors(
    spec: ModelSpec,
    tensors: &[NamedTensor],
    source_step: u64,
    out: &Path,
) -> Result<PathBuf> {
    export_tensors_from(spec, PreprocessingSource::PlscRs, tensors, source_step, out)
}

/// [`export_tensors`] for a model whose preprocessing comes from `source` (an imported
/// arcface_torch or PLSC model), recorded in `model.json`.
pub fn export_tensors_from(
    spec: ModelSpec,
    source: PreprocessingSource,
    tensors: &[NamedTensor],
    source_step: u64,
    out: &Path,
) -> Result<PathBuf> {
    let kept: Vec<&NamedTensor> = tensors
        .iter()
        .filter(|t| t.kind != TensorKind::Momentum)
        .collect();
    let layout: Vec<ExportTensor> = kept
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.kind))
        .collect();
    write_export(out, spec, source, source_step, &layout, |w, i| {
        let bytes: Vec<u8> = kept[i]
            .values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        w.write(&bytes)
    })
}

/// Key, shape and role of one exported tensor.
type ExportTensor = (String, Vec<usize>, TensorKind);

/// Writes `backbone.safetensors` (the tensors of `layout`, in order, each written by
/// `write_tensor(writer, index)`) and `model.json` into a temporary directory next to `out`,
/// then renames it to `out` (an earlier export there is replaced, any other non-empty
/// directory is refused).
fn write_export(
    out: &Path,
    spec: ModelSpec,
    preprocessing_source: PreprocessingSource,
    source_step: u64,
    layout: &[ExportTensor],
    mut write_tensor: impl FnMut(&mut StWriter, usize) -> Result<()>,
) -> Result<PathBuf> {
    if out.exists() {
        let empty = std::fs::read_dir(out)
            .map_err(io_err(out))?
            .next()
            .is_none();
        if !empty && !out.join(MODEL_JSON).is_file() {
            return Err(CkptError::Invalid {
                what: "export directory",
                detail: format!("{} exists and is not an earlier export", out.display()),
            });
        }
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    let specs: Vec<(String, Vec<usize>)> = layout
        .iter()
        .map(|(key, shape, _)| (key.clone(), shape.clone()))
        .collect();
    let weights_path = tmp.join(BACKBONE_FILE);
    // One metadata key (`plsc_kinds`: a JSON object of key -> role) keeps the header
    // deterministic; safetensors writes its metadata map in hash order.
    let kinds: BTreeMap<&str, &str> = layout
        .iter()
        .map(|(key, _, kind)| (key.as_str(), kind_name(*kind)))
        .collect();
    let kinds = serde_json::to_string(&kinds).expect("a map of strings serialises");
    let mut w = StWriter::create(
        &weights_path,
        &specs,
        Some(HashMap::from([(KINDS_KEY.to_string(), kinds)])),
    )?;
    for i in 0..layout.len() {
        write_tensor(&mut w, i)?;
    }
    let digest = w.finish()?;
    let json = ModelJson {
        format: EXPORT_FORMAT.into(),
        format_version: EXPORT_VERSION,
        spec,
        channel_order: ChannelOrder::Rgb,
        preprocessing_source,
        weights: BACKBONE_FILE.into(),
        weights_bytes: digest.bytes,
        weights_sha256: digest.sha256,
        source_step,
    };
    let json_path = tmp.join(MODEL_JSON);
    let text = serde_json::to_vec_pretty(&json).map_err(|source| CkptError::Json {
        path: json_path.clone(),
        source,
    })?;
    std::fs::write(&json_path, text).map_err(io_err(&json_path))?;
    sync_dir(&tmp)?;
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io_err(out))?;
    }
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    tracing::info!("exported step {source_step} to {}", out.display());
    Ok(out.to_path_buf())
}

/// Reads an export: `model.json` (validated) and the weights, whose size and sha256 are
/// checked against it.
pub fn load_exported(dir: &Path) -> Result<ExportedModel> {
    let json_path = dir.join(MODEL_JSON);
    let text = std::fs::read(&json_path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            CkptError::MissingFile {
                path: json_path.clone(),
                listed_in: dir.to_path_buf(),
            }
        } else {
            CkptError::Io {
                path: json_path.clone(),
                source,
            }
        }
    })?;
    let json: ModelJson = serde_json::from_slice(&text).map_err(|source| CkptError::Json {
        path: json_path.clone(),
        source,
    })?;
    if json.format != EXPORT_FORMAT
        || json.format_version == 0
        || json.format_version > EXPORT_VERSION
    {
        return Err(CkptError::BadManifest {
            path: json_path,
            detail: format!(
                "format `{}` version {} is not `{EXPORT_FORMAT}` 1..={EXPORT_VERSION}",
                json.format, json.format_version
            ),
        });
    }
    json.spec.validate(&json_path)?;
    if json.weights.contains('/') || json.weights.contains('\\') {
        return Err(CkptError::BadManifest {
            path: json_path,
            detail: format!("weights file name `{}` is not allowed", json.weights),
        });
    }
    let weights = dir.join(&json.weights);
    if !weights.is_file() {
        return Err(CkptError::MissingFile {
            path: weights,
            listed_in: json_path,
        });
    }
    let digest = digest_file(&weights)?;
    if digest.bytes != json.weights_bytes {
        return Err(CkptError::SizeMismatch {
            path: weights,
            expected: json.weights_bytes,
            found: digest.bytes,
            recorded_in: json_path,
        });
    }
    if digest.sha256 != json.weights_sha256 {
        return Err(CkptError::ChecksumMismatch {
            path: weights,
            expected: json.weights_sha256,
            found: digest.sha256,
            recorded_in: json_path,
        });
    }
    let st = MappedSt::open(&weights)?;
    let kinds: BTreeMap<String, String> = st
        .metadata()
        .and_then(|m| m.get(KINDS_KEY))
        .and_then(|k| serde_json::from_str(k).ok())
        .unwrap_or_default();
    let mut tensors = Vec::new();
    for key in st.names() {
        // PyTorch's BatchNorm counters (I64), in a state file put here by hand: the model
        // never reads them.
        if key.ends_with("num_batches_tracked") {
            continue;
        }
        let (shape, bytes) = st.f32_tensor(&key)?;
        let mut values = Vec::with_capacity(bytes.len() / 4);
        extend_f32_from_le(&mut values, bytes);
        let kind = kinds
            .get(&key)
            .and_then(|k| kind_from_name(k))
            .unwrap_or(TensorKind::Param);
        tensors.push(NamedTensor::new(key, shape.to_vec(), kind, values));
    }
    Ok(ExportedModel {
        spec: json.spec,
        channel_order: json.channel_order,
        preprocessing_source: json.preprocessing_source,
        source_step: json.source_step,
        tensors,
    })
}

/// The name of a tensor role in an export's header metadata.
fn kind_name(kind: TensorKind) -> &'static str {
    match kind {
        TensorKind::Param => "param",
        TensorKind::FrozenParam => "frozen_param",
        TensorKind::Buffer => "buffer",
        TensorKind::Momentum => "momentum",
    }
}

/// The role named in an export's header metadata.
fn kind_from_name(name: &str) -> Option<TensorKind> {
    match name {
        "param" => Some(TensorKind::Param),
        "frozen_param" => Some(TensorKind::FrozenParam),
        "buffer" => Some(TensorKind::Buffer),
        _ => None,
    }
}
