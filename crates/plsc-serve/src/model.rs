//! The served model: an export of plsc-ckpt loaded onto the CPU backend, its input
//! preprocessing, and the batched forward pass the workers run.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use plsc_data::decode::ImageSpec;
use plsc_models::device::Device;
use plsc_models::{Backbone, BackboneConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServeError};

/// The backend the server runs on (CPU, no autodiff: BatchNorm uses its running statistics).
pub type ServeBackend = Flex;

/// What `GET /v1/model` answers: the model's description from `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Registry name of the backbone (`iresnet50`, `iresnet_tiny`, ...).
    pub architecture: String,
    /// Embedding size `D`.
    pub embedding_size: usize,
    /// Input height and width in pixels; images of other sizes are resized to it.
    pub input_size: usize,
    /// Input channels (3 RGB, 1 grayscale); images are converted to it.
    pub in_channels: usize,
    /// Per-channel mean subtracted from 0..255 pixel values.
    pub mean: Vec<f32>,
    /// Per-channel divisor applied after the mean.
    pub std: Vec<f32>,
    /// How images of another size or aspect ratio become the input (`squash`, `pad`,
    /// `center-crop`), from `model.json`.
    #[serde(default)]
    pub resize: plsc_data::Resize,
    /// The training step the model was exported at.
    pub source_step: u64,
    /// Number of parameters.
    pub parameters: usize,
}

/// A loaded model: the backbone, its input preprocessing and its description.
#[derive(Debug)]
pub struct ServeModel {
    backbone: Backbone<ServeBackend>,
    /// The backbone on the GPU the server runs on (`ServeConfig::device`).
    #[cfg(feature = "cuda")]
    gpu: Option<(
        Backbone<burn::backend::Cuda>,
        burn::backend::cuda::CudaDevice,
    )>,
    image: ImageSpec,
    info: ModelInfo,
    source: PathBuf,
}

impl ServeModel {
    /// Loads an exported model directory (`model.json` + `backbone.safetensors`, as
    /// `cargo xtask export` writes it) for the CPU; sizes and checksum are verified by
    /// plsc-ckpt.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_on(dir, Device::Cpu)
    }

    /// [`Self::load`], with the backbone also on `device` (a GPU: the workers run there).
    pub fn load_on(dir: &Path, on: Device) -> Result<Self> {
        let exported = plsc_ckpt::load_exported(dir).map_err(|source| ServeError::LoadModel {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        })?;
        let spec = &exported.spec;
        let config = BackboneConfig::new(spec.architecture.clone())
            .with_embedding_size(spec.embedding_size)
            .with_in_channels(spec.in_channels)
            .with_input_size(spec.input_size);
        let model_err = |context: String| {
            move |source| ServeError::Model {
                context: context.clone(),
                source: Box::new(source),
            }
        };
        let device = Default::default();
        let backbone: Backbone<ServeBackend> = config
            .init(&device)
            .map_err(model_err(format!("building {}", spec.architecture)))?;
        let tensors: Vec<plsc_models::NamedTensor> = exported
            .tensors
            .into_iter()
            .map(|t| plsc_models::NamedTensor {
                entry: plsc_models::StateEntry {
                    name: t.name,
                    shape: t.shape,
                    kind: match t.kind {
                        plsc_ckpt::TensorKind::Buffer => plsc_models::EntryKind::Buffer,
                        plsc_ckpt::TensorKind::FrozenParam => plsc_models::EntryKind::FrozenParam,
                        _ => plsc_models::EntryKind::Param,
                    },
                },
                values: t.values,
            })
            .collect();
        let label = dir
            .join(plsc_ckpt::manifest::BACKBONE_FILE)
            .display()
            .to_string();
        let backbone = backbone
            .load_tensors(&tensors, &label)
            .map_err(model_err(format!("loading {label}")))?;
        let image = image_spec(spec.input_size, spec.in_channels, &spec.mean, &spec.std)
            .map_err(|detail| ServeError::Config(format!("{}: {detail}", dir.display())))?;
        // The aspect-ratio policy model.json records (squash when it records none).
        let image = ImageSpec {
            resize: spec.resize,
            ..image
        };
        let info = ModelInfo {
            architecture: spec.architecture.clone(),
            embedding_size: spec.embedding_size,
            input_size: spec.input_size,
            in_channels: spec.in_channels,
            mean: spec.mean.clone(),
            std: spec.std.clone(),
            resize: spec.resize,
            source_step: exported.source_step,
            parameters: backbone.param_count(),
        };
        #[cfg(feature = "cuda")]
        let gpu = match on {
            Device::Cpu => None,
            Device::Cuda(index) => {
                plsc_models::device::check_cuda(index.unwrap_or(0))
                    .map_err(model_err(format!("starting the GPU for {}", dir.display())))?;
                let dev = burn::backend::cuda::CudaDevice::new(index.unwrap_or(0));
                let on_gpu: Backbone<burn::backend::Cuda> = config
                    .init(&dev)
                    .map_err(model_err(format!(
                        "building {} on the GPU",
                        spec.architecture
                    )))?
                    .load_tensors(&tensors, &label)
                    .map_err(model_err(format!("loading {label} onto the GPU")))?;
                Some((on_gpu, dev))
            }
        };
        #[cfg(not(feature = "cuda"))]
        if let Device::Cuda(_) = on {
            return Err(ServeError::Config(format!(
                "device {on}: this build has no CUDA backend (build with the `cuda` feature)"
            )));
        }
        tracing::info!(model = %dir.display(), architecture = %info.architecture,
            embedding_size = info.embedding_size, device = %on, mean = ?info.mean,
            std = ?info.std, preprocessing = exported.preprocessing_source.name(),
            "loaded model (input: (pixel - mean) / std, RGB)");
        Ok(Self {
            backbone,
            #[cfg(feature = "cuda")]
            gpu,
            image,
            info,
            source: dir.to_path_buf(),
        })
    }

    /// The model's description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The preprocessing of every image: size, channels, normalisation (as in training).
    pub fn image_spec(&self) -> &ImageSpec {
        &self.image
    }

    /// The directory it was loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// An independent copy of the model for another worker thread, on the server's device.
    pub(crate) fn replica(&self) -> ServeNet {
        #[cfg(feature = "cuda")]
        if let Some((b, dev)) = &self.gpu {
            return ServeNet::Cuda(b.fresh_replica(), dev.clone());
        }
        ServeNet::Cpu(self.backbone.fresh_replica())
    }

    /// The backbone itself (for callers that want to run it outside the server).
    pub fn backbone(&self) -> &Backbone<ServeBackend> {
        &self.backbone
    }
}

/// The preprocessing of a model with these input settings: the mean and std lists hold one
/// value for all channels or one per channel (`model.json` writes one per channel).
pub fn image_spec(
    input_size: usize,
    channels: usize,
    mean: &[f32],
    std: &[f32],
) -> std::result::Result<ImageSpec, String> {
    if channels != 1 && channels != 3 {
        return Err(format!("in_channels must be 1 or 3, not {channels}"));
    }
    let side =
        u32::try_from(input_size).map_err(|_| format!("input_size {input_size} is too large"))?;
    let per_channel = |v: &[f32], what: &str| -> std::result::Result<[f32; 3], String> {
        match v.len() {
            1 => Ok([v[0]; 3]),
            n if n == channels || n == 3 => Ok([v[0], v[1.min(n - 1)], v[2.min(n - 1)]]),
            n => Err(format!(
                "{what} has {n} values for {channels} channels (1 or {channels} expected)"
            )),
        }
    };
    Ok(ImageSpec {
        height: side,
        width: side,
        channels,
        mean: per_channel(mean, "mean")?,
        std: per_channel(std, "std")?,
        ..ImageSpec::default()
    })
}

/// A worker's backbone on the server's device.
#[derive(Debug)]
pub(crate) enum ServeNet {
    /// On the CPU (burn-flex).
    Cpu(Backbone<ServeBackend>),
    /// On a GPU (burn-cuda).
    #[cfg(feature = "cuda")]
    Cuda(
        Backbone<burn::backend::Cuda>,
        burn::backend::cuda::CudaDevice,
    ),
}

impl ServeNet {
    /// Runs the backbone on `n` preprocessed images (`images` holds `n` CHW images in a row)
    /// and returns `n * D` values, one embedding per image, in order.
    pub(crate) fn forward(&self, spec: &ImageSpec, images: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        match self {
            Self::Cpu(b) => forward_on(b, &Default::default(), spec, images, n),
            #[cfg(feature = "cuda")]
            Self::Cuda(b, dev) => forward_on(b, dev, spec, images, n),
        }
    }
}

fn forward_on<B: burn::tensor::backend::Backend>(
    backbone: &Backbone<B>,
    device: &B::Device,
    spec: &ImageSpec,
    images: Vec<f32>,
    n: usize,
) -> Result<Vec<f32>> {
    let shape = [n, spec.channels, spec.height as usize, spec.width as usize];
    let x = Tensor::<B, 4>::from_data(TensorData::new(images, shape), device);
    let y = backbone
        .try_forward(x)
        .map_err(|source| ServeError::Model {
            context: "forward".into(),
            source: Box::new(source),
        })?;
    y.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| ServeError::Inference(format!("reading the embeddings: {e:?}")))
}

/// Writes `backbone` as an exported model directory (`backbone.safetensors` with the tensor
/// roles in its header, and `model.json`) through `plsc_ckpt::export_tensors`, the writer of
/// `plsc_ckpt::export`, for a model that never had a checkpoint (a freshly built or converted
/// backbone, tests, benchmarks). `mean` and `std` are the input normalisation (one value per
/// channel, or one for all). Written under a temporary name next to `dir`, then renamed.
pub fn write_model_dir<B: burn::tensor::backend::Backend>(
    backbone: &Backbone<B>,
    architecture: &str,
    mean: Vec<f32>,
    std: Vec<f32>,
    source_step: u64,
    dir: &Path,
) -> Result<()> {
    let tensors: Vec<plsc_ckpt::NamedTensor> = backbone
        .state_tensors()
        .into_iter()
        .map(|t| {
            let kind = match t.entry.kind {
                plsc_models::EntryKind::Param => plsc_ckpt::TensorKind::Param,
                plsc_models::EntryKind::FrozenParam => plsc_ckpt::TensorKind::FrozenParam,
                plsc_models::EntryKind::Buffer => plsc_ckpt::TensorKind::Buffer,
            };
            plsc_ckpt::NamedTensor::new(t.entry.name, t.entry.shape, kind, t.values)
        })
        .collect();
    let spec = plsc_ckpt::ModelSpec {
        architecture: architecture.to_string(),
        embedding_size: backbone.embedding_size,
        input_size: backbone.input_size,
        in_channels: backbone.in_channels,
        mean,
        std,
        resize: plsc_data::Resize::default(),
    };
    plsc_ckpt::export_tensors(spec, &tensors, source_step, dir).map_err(|e| {
        ServeError::WriteModel {
            dir: dir.to_path_buf(),
            detail: e.to_string(),
        }
    })?;
    Ok(())
}
