//! Import of a model trained elsewhere: an arcface_torch `backbone.pth` (PyTorch's own
//! `torch.save` file) or its safetensors conversion becomes an export directory
//! (`backbone.safetensors` + `model.json`) that plsc-serve and `xtask eval --model` load as is.
//!
//! The file's tensors are read into a backbone of the registry (so every name and shape is
//! checked, `num_batches_tracked` ignored) and written back from it in arcface_torch's
//! `state_dict` order with their roles; `model.json` records the architecture and the
//! source's preprocessing (arcface_torch: RGB, `(x - 127.5) / 127.5`).

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use plsc_models::{Backbone, BackboneConfig, ModelError, NamedTensor, StateFormat};

use crate::error::{CkptError, Result};
use crate::export::{PreprocessingSource, export_tensors_from};
use crate::manifest::ModelSpec;

/// What to import.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportOptions {
    /// Registry name or arcface_torch alias (`r50`, `iresnet50`, `mbf`, ...).
    pub arch: String,
    /// Embedding size; `None` takes it from the file's last Linear layer.
    pub embedding_size: Option<usize>,
    /// Input height and width (arcface_torch: 112).
    pub input_size: usize,
    /// Where the model was trained, which sets the normalisation recorded in `model.json`.
    pub source: PreprocessingSource,
}

impl ImportOptions {
    /// An arcface_torch model of `arch` at 112x112.
    pub fn arcface_torch(arch: impl Into<String>) -> Self {
        Self {
            arch: arch.into(),
            embedding_size: None,
            input_size: 112,
            source: PreprocessingSource::ArcfaceTorch,
        }
    }
}

/// What [`import`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The model directory.
    pub dir: PathBuf,
    /// The format the source file was in.
    pub format: StateFormat,
    /// The architecture, input and normalisation written to `model.json`.
    pub spec: ModelSpec,
    /// Tensors written (parameters and buffers).
    pub tensors: usize,
    /// Parameters, as PyTorch counts them.
    pub parameters: usize,
}

/// Imports the state file `src` (PyTorch `.pth` or safetensors, told by its first bytes) as
/// an export directory `out` (written under a temporary name and renamed; an earlier export
/// there is replaced, any other non-empty directory is refused).
///
/// Errors name the file: a missing, extra or misshapen tensor is [`CkptError::ImportMismatch`]
/// with both shapes and the `--arch` (and embedding size) the file's layout points to.
pub fn import(src: &Path, options: &ImportOptions, out: &Path) -> Result<Imported> {
    let arch = plsc_models::resolve_name(&options.arch)?;
    let (mean, std) = options
        .source
        .mean_std()
        .ok_or_else(|| CkptError::Invalid {
            what: "import source",
            detail: "plsc-rs models come with their model.json; import is for models trained \
                     elsewhere (arcface_torch, plsc)"
                .into(),
        })?;
    let (format, tensors) = plsc_models::pytorch::read_state_file(src)?;
    let layout: Vec<(String, Vec<usize>)> = tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone()))
        .collect();
    let suggestion = plsc_models::suggest_architecture(&layout);
    let embedding_size = options
        .embedding_size
        .or_else(|| suggestion.as_ref().map(|s| s.embedding_size))
        .or_else(|| last_linear_outputs(&layout))
        .unwrap_or(512);
    let config = BackboneConfig::new(arch.to_string())
        .with_embedding_size(embedding_size)
        .with_input_size(options.input_size);
    let label = src.display().to_string();
    let device = Default::default();
    let model: Backbone<Flex> = config.init(&device)?;
    let model = model
        .load_tensors(&tensors, &label)
        .map_err(|source| mismatch(source, arch, embedding_size, suggestion.as_ref()))?;
    let state: Vec<NamedTensor> = model.state_tensors();
    let spec = ModelSpec {
        architecture: arch.to_string(),
        embedding_size,
        input_size: options.input_size,
        in_channels: 3,
        mean: vec![mean; 3],
        std: vec![std; 3],
        // arcface_torch's inference resizes with cv2.resize, i.e. squashes.
        resize: Default::default(),
    };
    let dir = export_tensors_from(spec.clone(), options.source, &state, 0, out)?;
    tracing::info!(src = %src.display(), format = format.name(), architecture = arch,
        out = %dir.display(), "imported");
    Ok(Imported {
        dir,
        format,
        spec,
        tensors: state.len(),
        parameters: model.param_count(),
    })
}

/// Output size of the embedding layer of an IResNet (`fc`) or MobileFaceNet
/// (`features.layers.2`), if the file has one.
fn last_linear_outputs(layout: &[(String, Vec<usize>)]) -> Option<usize> {
    layout
        .iter()
        .find(|(n, s)| (n == "fc.weight" || n == "features.layers.2.weight") && s.len() == 2)
        .map(|(_, s)| s[0])
}

/// A load error of the wrong architecture, with what the file looks like.
fn mismatch(
    source: ModelError,
    arch: &str,
    embedding_size: usize,
    suggestion: Option<&plsc_models::Suggestion>,
) -> CkptError {
    if !matches!(
        source,
        ModelError::MissingKey { .. }
            | ModelError::ShapeMismatch { .. }
            | ModelError::UnexpectedKeys { .. }
    ) {
        return CkptError::Model(Box::new(source));
    }
    let hint = match suggestion {
        Some(s) if s.name != arch || s.embedding_size != embedding_size => format!(
            "the file's layout is that of `--arch {} --embedding-size {}`",
            s.name, s.embedding_size
        ),
        Some(s) => format!(
            "the blocks and widths are those of `{}`: if only `fc.weight` differs, the model \
             was trained at another --input-size",
            s.name
        ),
        None => format!(
            "no registered architecture has this file's layout (registered: {})",
            plsc_models::MODEL_NAMES.join(", ")
        ),
    };
    CkptError::ImportMismatch {
        error: Box::new(source),
        hint,
    }
}
