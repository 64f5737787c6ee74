//! The served model: an export of plsc-ckpt loaded onto the CPU backend, its input
//! preprocessing, and the batched forward pass the workers run.

use std::path::{Path, PathBuf};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use plsc_ckpt::ModelSpec;
use plsc_data::decode::ImageSpec;
use plsc_models::Backbone;
use plsc_models::device::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, ServeError};

/// The backend the server runs on (CPU, no autodiff: BatchNorm uses its running statistics).
pub type ServeBackend = Flex;

/// What `GET /v1/model` answers: the model's description from `model.json` (its
/// [`ModelSpec`], the one description of a model's architecture and input, flattened into the
/// answer: `architecture`, `embedding_size`, `input_size`, `in_channels`, `mean`, `std`,
/// `resize`), the step it was exported at and its parameter count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Architecture, embedding size, input size and channels, normalisation and resize
    /// policy, as `model.json` records them.
    #[serde(flatten)]
    pub spec: ModelSpec,
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
        let load_err = |source| ServeError::LoadModel {
            dir: dir.to_path_buf(),
            source: Box::new(source),
        };
        let (backbone, exported) =
            plsc_ckpt::load_exported_backbone::<ServeBackend>(dir, &Default::default())
                .map_err(load_err)?;
        let spec = &exported.spec;
        // Size, channels, normalisation and the resize policy model.json records (squash when
        // it records none): the decoder's input, as in training.
        let image = spec.image_spec().map_err(load_err)?;
        let info = ModelInfo {
            spec: spec.clone(),
            source_step: exported.source_step,
            parameters: backbone.param_count(),
        };
        #[cfg(feature = "cuda")]
        let gpu = match on {
            Device::Cpu => None,
            Device::Cuda(index) => {
                plsc_models::device::check_cuda(index.unwrap_or(0)).map_err(|source| {
                    ServeError::Model {
                        context: format!("starting the GPU for {}", dir.display()),
                        source: Box::new(source),
                    }
                })?;
                let dev = burn::backend::cuda::CudaDevice::new(index.unwrap_or(0));
                let label = dir
                    .join(plsc_ckpt::manifest::BACKBONE_FILE)
                    .display()
                    .to_string();
                let on_gpu: Backbone<burn::backend::Cuda> =
                    plsc_ckpt::backbone_from(spec, &exported.tensors, &label, &dev)
                        .map_err(load_err)?;
                Some((on_gpu, dev))
            }
        };
        #[cfg(not(feature = "cuda"))]
        if let Device::Cuda(_) = on {
            return Err(ServeError::Config(format!(
                "device {on}: this build has no CUDA backend (build with the `cuda` feature)"
            )));
        }
        tracing::info!(model = %dir.display(), architecture = %spec.architecture,
            embedding_size = spec.embedding_size, device = %on, mean = ?spec.mean,
            std = ?spec.std, preprocessing = exported.preprocessing_source.name(),
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

    /// Embeds `n` preprocessed images (`images` holds `n` CHW images of [`Self::image_spec`]
    /// in a row) with the backbone on the server's device, the forward pass of the workers;
    /// returns `n * D` values, one embedding per image, in order. `xtask eval --model` embeds
    /// its pair sets through it.
    pub fn embed(&self, images: Vec<f32>, n: usize) -> Result<Vec<f32>> {
        #[cfg(feature = "cuda")]
        if let Some((b, dev)) = &self.gpu {
            return forward_on(b, dev, &self.image, images, n);
        }
        forward_on(&self.backbone, &Default::default(), &self.image, images, n)
    }

    /// The backbone itself (for callers that want to run it outside the server).
    pub fn backbone(&self) -> &Backbone<ServeBackend> {
        &self.backbone
    }
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
    let tensors = backbone.state_tensors();
    let spec = ModelSpec {
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
