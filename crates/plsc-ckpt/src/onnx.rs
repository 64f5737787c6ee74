//! ONNX export of a checkpoint's or a model directory's backbone (`xtask export --onnx`): the
//! graph is plsc-models' [`plsc_models::onnx`]; this module finds the weights and the
//! preprocessing, writes the file atomically and records the preprocessing in the model's
//! metadata properties.
//!
//! Metadata keys (all strings): `plsc.architecture`, `plsc.embedding_size`,
//! `plsc.input_size`, `plsc.in_channels`, `plsc.mean` and `plsc.std` (comma-separated, one per
//! channel: the input is `(pixel - mean) / std`), `plsc.channel_order` (`rgb`), `plsc.layout`
//! (`NCHW`), `plsc.resize`, `plsc.preprocessing_source` and `plsc.source_step`.

use std::path::{Path, PathBuf};

use burn::backend::Flex;

use crate::backbone::backbone_from;
use crate::error::{CkptError, Result, io_err};
use crate::export::{ChannelOrder, MODEL_JSON, PreprocessingSource, load_exported};
use crate::load::Checkpoint;
use crate::manifest::ModelSpec;

/// What [`export_onnx`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct OnnxExport {
    /// The `.onnx` file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Architecture, input and normalisation of the model.
    pub spec: ModelSpec,
    /// Where the normalisation comes from.
    pub preprocessing_source: PreprocessingSource,
    /// The training step of the weights (0 for imported models).
    pub source_step: u64,
}

/// Writes the ONNX model (opset 17, dynamic batch axis, input already normalised) of the
/// backbone in `src` to `out`. `src` is a model directory (with `model.json`, from
/// `export`/`import`), a checkpoint directory, or a run's checkpoint root (its newest valid
/// checkpoint). `out` is written under a temporary name and renamed; an existing `out` is
/// refused (it is not replaced silently).
pub fn export_onnx(src: &Path, out: &Path) -> Result<OnnxExport> {
    if out.exists() {
        return Err(CkptError::Invalid {
            what: "ONNX output",
            detail: format!(
                "{} exists; remove it or choose another name (it is not replaced)",
                out.display()
            ),
        });
    }
    let (spec, source, step, tensors, label) = if src.join(MODEL_JSON).is_file() {
        let m = load_exported(src)?;
        let label = src
            .join(crate::manifest::BACKBONE_FILE)
            .display()
            .to_string();
        (
            m.spec,
            m.preprocessing_source,
            m.source_step,
            m.tensors,
            label,
        )
    } else {
        let ckpt = Checkpoint::open_dir_or_latest(src)?;
        let spec = ckpt
            .manifest()
            .model
            .clone()
            .ok_or_else(|| CkptError::MissingFile {
                path: ckpt.dir().join(crate::manifest::BACKBONE_FILE),
                listed_in: ckpt.dir().join(crate::manifest::MANIFEST_FILE),
            })?;
        let state = ckpt.load_backbone()?;
        let label = ckpt
            .dir()
            .join(crate::manifest::BACKBONE_FILE)
            .display()
            .to_string();
        (
            spec,
            PreprocessingSource::PlscRs,
            ckpt.step(),
            state.tensors,
            label,
        )
    };
    let backbone: plsc_models::Backbone<Flex> =
        backbone_from(&spec, &tensors, &label, &Default::default())?;
    let metadata = metadata(&spec, source, step);
    let bytes = plsc_models::onnx::to_onnx(&backbone, &metadata)?;
    write_file_atomically(out, &bytes)?;
    tracing::info!(out = %out.display(), architecture = %spec.architecture, bytes = bytes.len(),
        "wrote ONNX model");
    Ok(OnnxExport {
        path: out.to_path_buf(),
        bytes: bytes.len() as u64,
        spec,
        preprocessing_source: source,
        source_step: step,
    })
}

/// The metadata properties of the ONNX model of `spec`.
pub fn metadata(spec: &ModelSpec, source: PreprocessingSource, step: u64) -> Vec<(String, String)> {
    let list = |v: &[f32]| {
        let per_channel: Vec<String> = (0..spec.in_channels)
            .map(|c| v[c.min(v.len() - 1)].to_string())
            .collect();
        per_channel.join(",")
    };
    let channel_order = match ChannelOrder::default() {
        ChannelOrder::Rgb => "rgb",
    };
    [
        ("plsc.architecture", spec.architecture.clone()),
        ("plsc.embedding_size", spec.embedding_size.to_string()),
        ("plsc.input_size", spec.input_size.to_string()),
        ("plsc.in_channels", spec.in_channels.to_string()),
        ("plsc.mean", list(&spec.mean)),
        ("plsc.std", list(&spec.std)),
        ("plsc.channel_order", channel_order.to_string()),
        ("plsc.layout", "NCHW".to_string()),
        ("plsc.resize", spec.resize.name().to_string()),
        ("plsc.preprocessing_source", source.name().to_string()),
        ("plsc.source_step", step.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Writes `bytes` to `path` through a temporary name next to it and a rename; the temporary
/// file is removed on failure.
fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model.onnx".into());
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(CkptError::Io {
            path: path.to_path_buf(),
            source: e,
        });
    }
    Ok(())
}
