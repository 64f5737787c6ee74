//! Backbones by name: `iresnet18`, `iresnet34`, `iresnet50`, `iresnet100`, `mbf`,
//! `iresnet_tiny`.

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::{ModelError, Result};
use crate::iresnet::{IResNet, IResNetConfig};
use crate::mobilefacenet::{MobileFaceNet, MobileFaceNetConfig};
use crate::state::{
    EntryKind, NamedTensor, StateEntry, StateReader, StateWriter, TorchState, read_file,
    to_safetensors_bytes, write_atomically,
};

/// The registered backbone names.
pub const MODEL_NAMES: &[&str] = &[
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "mbf",
    "iresnet_tiny",
];

/// The architecture behind a registered name.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    /// An IResNet.
    IResNet(IResNetConfig),
    /// A MobileFaceNet.
    MobileFaceNet(MobileFaceNetConfig),
}

/// A backbone chosen by name, with the settings every architecture shares.
#[derive(Config, Debug, PartialEq)]
pub struct BackboneConfig {
    /// One of [`MODEL_NAMES`].
    pub name: String,
    /// Embedding size.
    #[config(default = 512)]
    pub embedding_size: usize,
    /// Input channels (3 for RGB; `iresnet_tiny` is also meant for 1).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Input height and width in pixels (112 for the face models; `iresnet_tiny` takes 28
    /// to 112).
    #[config(default = 112)]
    pub input_size: usize,
    /// Dropout before the embedding layer (IResNets only; arcface_torch's default is 0).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl BackboneConfig {
    /// The architecture of this name and these settings, validated.
    pub fn architecture(&self) -> Result<Architecture> {
        let iresnet = |layers: [usize; 4]| {
            IResNetConfig::new(layers)
                .with_in_channels(self.in_channels)
                .with_input_size(self.input_size)
                .with_embedding_size(self.embedding_size)
                .with_dropout(self.dropout)
        };
        let arch = match self.name.as_str() {
            "iresnet18" => Architecture::IResNet(iresnet([2, 2, 2, 2])),
            "iresnet34" => Architecture::IResNet(iresnet([3, 4, 6, 3])),
            "iresnet50" => Architecture::IResNet(iresnet([3, 4, 14, 3])),
            "iresnet100" => Architecture::IResNet(iresnet([3, 13, 30, 3])),
            "iresnet_tiny" => {
                if !(28..=112).contains(&self.input_size) {
                    return Err(ModelError::InvalidConfig(format!(
                        "iresnet_tiny takes 28 to 112 pixels, got input_size {}",
                        self.input_size
                    )));
                }
                Architecture::IResNet(
                    iresnet([1, 1, 1, 1])
                        .with_widths([16, 32, 64, 128])
                        .with_stem_width(16),
                )
            }
            "mbf" => {
                if self.dropout != 0.0 {
                    return Err(ModelError::InvalidConfig(
                        "mbf has no dropout layer; dropout must be 0".into(),
                    ));
                }
                Architecture::MobileFaceNet(
                    MobileFaceNetConfig::new()
                        .with_in_channels(self.in_channels)
                        .with_input_size(self.input_size)
                        .with_embedding_size(self.embedding_size),
                )
            }
            other => {
                return Err(ModelError::UnknownModel {
                    name: other.to_string(),
                    known: MODEL_NAMES.join(", "),
                });
            }
        };
        match &arch {
            Architecture::IResNet(c) => c.validate()?,
            Architecture::MobileFaceNet(c) => c.validate()?,
        }
        Ok(arch)
    }

    /// Builds the backbone on `device` with the backend's current random state.
    ///
    /// Every parameter is materialised here. burn initialises parameters lazily, and a clone
    /// of a parameter that was never read draws its own values: two clones (or replicas) of
    /// a lazy model would hold different weights.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>> {
        let net = match self.architecture()? {
            Architecture::IResNet(c) => Network::IResNet(c.init(device)),
            Architecture::MobileFaceNet(c) => Network::MobileFaceNet(c.init(device)),
        };
        let model = Backbone {
            net,
            in_channels: self.in_channels,
            input_size: self.input_size,
            embedding_size: self.embedding_size,
        };
        model.visit(&mut Materialize);
        Ok(model)
    }

    /// Seeds the backend's generator with `seed`, then builds: the same seed gives the same
    /// weights. (The backend's generator is global; for replicas of a model that already
    /// exists, [`Backbone::fresh_replica`] is the safer copy.)
    /// [`Self::init`] materialises every parameter right after seeding, so draws elsewhere
    /// cannot interleave (except from other threads between the seeding and the end of
    /// `init`).
    pub fn init_seeded<B: Backend>(&self, seed: u64, device: &B::Device) -> Result<Backbone<B>> {
        self.architecture()?;
        B::seed(device, seed);
        self.init(device)
    }
}

/// The network inside a [`Backbone`].
// Built once per model; the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network<B: Backend> {
    /// IResNet-18/34/50/100 or the tiny variant.
    IResNet(IResNet<B>),
    /// MobileFaceNet.
    MobileFaceNet(MobileFaceNet<B>),
}

/// A backbone from the registry: images `[N, C, S, S]` -> embeddings `[N, D]`.
#[derive(Module, Debug)]
pub struct Backbone<B: Backend> {
    /// The network.
    pub net: Network<B>,
    /// Input channels it expects.
    pub in_channels: usize,
    /// Input side it expects.
    pub input_size: usize,
    /// Embedding size it produces.
    pub embedding_size: usize,
}

impl<B: Backend> Backbone<B> {
    /// The forward pass. Panics (inside burn) on an input of another shape; see
    /// [`Self::try_forward`].
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        match &self.net {
            Network::IResNet(m) => m.forward(x),
            Network::MobileFaceNet(m) => m.forward(x),
        }
    }

    /// The forward pass, after checking that `x` is `[N >= 1, in_channels, S, S]`.
    pub fn try_forward(&self, x: Tensor<B, 4>) -> Result<Tensor<B, 2>> {
        let [n, c, h, w] = x.dims();
        if n == 0 || c != self.in_channels || h != self.input_size || w != self.input_size {
            return Err(ModelError::BadInput {
                tensor: "images".into(),
                found: vec![n, c, h, w],
                expected: format!(
                    "[N >= 1, {}, {}, {}]",
                    self.in_channels, self.input_size, self.input_size
                ),
            });
        }
        Ok(self.forward(x))
    }

    /// A copy that shares nothing mutable with `self` or its clones: BatchNorm running
    /// statistics get their own storage. Use it for per-rank replicas (`clone()` shares the
    /// statistics: burn's `RunningState` keeps them behind an `Arc`).
    pub fn fresh_replica(&self) -> Self {
        // A lazy parameter's clone would draw its own values (see `BackboneConfig::init`).
        self.visit(&mut Materialize);
        let net = match &self.net {
            Network::IResNet(m) => Network::IResNet(m.fresh_replica()),
            Network::MobileFaceNet(m) => Network::MobileFaceNet(m.fresh_replica()),
        };
        let replica = Self {
            net,
            in_channels: self.in_channels,
            input_size: self.input_size,
            embedding_size: self.embedding_size,
        };
        // Every parameter becomes a tensor of its own: replicas whose weights were plain clones
        // shared autodiff leaves, and concurrent backward passes on rank threads then lost
        // gradients now and then (a rank's flat gradient came out short).
        replica.map(&mut OwnLeaves)
    }

    fn write_state(&self, with_values: bool) -> Vec<NamedTensor> {
        let mut w = StateWriter::new(with_values);
        match &self.net {
            Network::IResNet(m) => m.save_state("", &mut w),
            Network::MobileFaceNet(m) => m.save_state("", &mut w),
        }
        w.into_entries()
    }

    /// Names, PyTorch shapes and roles of all tensors, in arcface_torch's `state_dict` order
    /// (without `num_batches_tracked`).
    pub fn state_layout(&self) -> Vec<StateEntry> {
        self.write_state(false)
            .into_iter()
            .map(|t| t.entry)
            .collect()
    }

    /// All tensors with their values (f32), as arcface_torch's `state_dict` would hold them.
    pub fn state_tensors(&self) -> Vec<NamedTensor> {
        self.write_state(true)
    }

    /// The buffers (BatchNorm running statistics) with their values, e.g. to broadcast them
    /// from rank 0 before evaluation and saving.
    pub fn buffer_tensors(&self) -> Vec<NamedTensor> {
        let mut w = StateWriter::buffers_only();
        match &self.net {
            Network::IResNet(m) => m.save_state("", &mut w),
            Network::MobileFaceNet(m) => m.save_state("", &mut w),
        }
        w.into_entries()
    }

    /// Replaces every buffer with the tensor of the same name in `buffers` (as
    /// [`Self::buffer_tensors`] returns them); parameters are untouched. `label` names the
    /// source in errors. The new statistics have their own storage.
    pub fn load_buffers(self, buffers: &[NamedTensor], label: &str) -> Result<Self> {
        self.load_from(StateReader::buffers_from(label, buffers))
    }

    /// Replaces every tensor with the one of the same name in `tensors` (as
    /// [`Self::state_tensors`] returns them), with the checks of
    /// [`Self::load_safetensors_bytes`]; `label` names the source in errors.
    pub fn load_tensors(self, tensors: &[NamedTensor], label: &str) -> Result<Self> {
        self.load_from(StateReader::from_tensors(label, tensors))
    }

    fn load_from(self, mut r: StateReader<'_>) -> Result<Self> {
        let net = match self.net {
            Network::IResNet(m) => Network::IResNet(m.load_state("", &mut r)?),
            Network::MobileFaceNet(m) => Network::MobileFaceNet(m.load_state("", &mut r)?),
        };
        r.finish()?;
        Ok(Self { net, ..self })
    }

    /// Number of parameters as PyTorch's `sum(p.numel() for p in model.parameters())`
    /// counts them (frozen ones included, buffers excluded).
    pub fn param_count(&self) -> usize {
        count(&self.state_layout(), |k| k != EntryKind::Buffer)
    }

    /// Number of trainable parameters (frozen ones and buffers excluded).
    pub fn trainable_param_count(&self) -> usize {
        count(&self.state_layout(), |k| k == EntryKind::Param)
    }

    /// The state as safetensors bytes (f32).
    pub fn to_safetensors_bytes(&self) -> Result<Vec<u8>> {
        to_safetensors_bytes(&self.state_tensors(), "backbone")
    }

    /// Writes the state to a safetensors file (temporary name, then rename).
    pub fn save_safetensors(&self, path: &Path) -> Result<()> {
        let bytes = to_safetensors_bytes(&self.state_tensors(), &path.display().to_string())?;
        write_atomically(path, &bytes)
    }

    /// Replaces every tensor with the one of the same name in safetensors `bytes`; `label`
    /// names the source in errors. Fails on a missing tensor, a wrong shape or an extra
    /// tensor (`num_batches_tracked` excepted). The result's running statistics have their own
    /// storage.
    pub fn load_safetensors_bytes(self, bytes: &[u8], label: &str) -> Result<Self> {
        self.load_from(StateReader::new(label, bytes)?)
    }

    /// [`Self::load_safetensors_bytes`] from a file.
    pub fn load_safetensors(self, path: &Path) -> Result<Self> {
        let bytes = read_file(path)?;
        self.load_safetensors_bytes(&bytes, &path.display().to_string())
    }

    /// Loads an arcface_torch `backbone.pth` converted to safetensors with
    /// `from safetensors.torch import save_file; save_file(torch.load('backbone.pth', map_location='cpu'), 'backbone.safetensors')`.
    /// `self` must be the same architecture (e.g. `BackboneConfig::new("iresnet50".into())`).
    pub fn load_arcface_torch(self, path: &Path) -> Result<Self> {
        let loaded = self.load_safetensors(path)?;
        tracing::info!(path = %path.display(), "loaded arcface_torch backbone");
        Ok(loaded)
    }
}

/// Touches every parameter, which runs burn's lazy initialisation.
/// Copies every float parameter into a new tensor (same id, same values, same
/// `require_grad`), so that no autodiff leaf is shared with the module it came from.
struct OwnLeaves;

impl<B: Backend> ModuleMapper<B> for OwnLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let require_grad = tensor.is_require_grad();
        let device = tensor.device();
        let copy = Tensor::from_data(tensor.into_data(), &device);
        let copy = if require_grad {
            copy.require_grad()
        } else {
            copy
        };
        Param::from_mapped_value(id, copy, mapper)
    }
}

struct Materialize;

impl<B: Backend> ModuleVisitor<B> for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

fn count(layout: &[StateEntry], keep: impl Fn(EntryKind) -> bool) -> usize {
    layout
        .iter()
        .filter(|e| keep(e.kind))
        .map(|e| e.shape.iter().product::<usize>())
        .sum()
}
