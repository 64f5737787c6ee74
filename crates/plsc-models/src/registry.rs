//! Backbones by name: `iresnet18`, `iresnet34`, `iresnet50`, `iresnet100`, `mbf`,
//! `iresnet_tiny`, `iresnet_nano` (arcface_torch's `r18`, `r34`, `r50`, `r100` are aliases,
//! see [`resolve_name`]).

use std::path::Path;

use burn::config::Config;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::{ModelError, Result};
use crate::format::StateFormat;
use crate::iresnet::{IResNet, IResNetConfig};
use crate::mobilefacenet::{MobileFaceNet, MobileFaceNetConfig};
use crate::state::{
    NamedTensor, StateEntry, StateReader, StateWriter, TensorKind, TorchState, read_file,
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
    "iresnet_nano",
];

/// arcface_torch's backbone names (`get_model(name)` in `backbones/__init__.py`) and the
/// registry names of the same networks.
pub const ARCFACE_TORCH_ALIASES: &[(&str, &str)] = &[
    ("r18", "iresnet18"),
    ("r34", "iresnet34"),
    ("r50", "iresnet50"),
    ("r100", "iresnet100"),
    ("mbf", "mbf"),
];

/// The registry name of `name`: a registered name, or an arcface_torch alias
/// ([`ARCFACE_TORCH_ALIASES`]).
pub fn resolve_name(name: &str) -> Result<&'static str> {
    if let Some(n) = MODEL_NAMES.iter().find(|n| **n == name) {
        return Ok(n);
    }
    if let Some((_, n)) = ARCFACE_TORCH_ALIASES.iter().find(|(a, _)| *a == name) {
        return Ok(n);
    }
    let aliases: Vec<&str> = ARCFACE_TORCH_ALIASES.iter().map(|(a, _)| *a).collect();
    Err(ModelError::UnknownModel {
        name: name.to_string(),
        known: format!(
            "{} (arcface_torch aliases: {})",
            MODEL_NAMES.join(", "),
            aliases.join(", ")
        ),
    })
}

/// The architecture a state file's tensor names and shapes point to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Suggestion {
    /// Registry name.
    pub name: &'static str,
    /// Embedding size (from the last Linear layer).
    pub embedding_size: usize,
}

/// The registered architecture whose layout matches the names and shapes of a state file:
/// blocks per stage and widths of an IResNet, `conv_sep` of MobileFaceNet; `None` when
/// nothing registered fits. Used to say which `--arch` a file that does not fit is likely to be.
pub fn suggest_architecture(tensors: &[(String, Vec<usize>)]) -> Option<Suggestion> {
    let shape = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_slice())
    };
    if tensors.iter().any(|(n, _)| n.starts_with("conv_sep.")) {
        let embedding_size = *shape("features.layers.2.weight")?.first()?;
        return Some(Suggestion {
            name: "mbf",
            embedding_size,
        });
    }
    let stem_width = *shape("conv1.weight")?.first()?;
    let mut layers = [0usize; 4];
    let mut widths = [0usize; 4];
    for stage in 0..4 {
        let prefix = format!("layer{}.", stage + 1);
        layers[stage] = tensors
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(&prefix)?.split('.').next()?.parse().ok())
            .map(|i: usize| i + 1)
            .max()?;
        widths[stage] = *shape(&format!("layer{}.0.conv1.weight", stage + 1))?.first()?;
    }
    let embedding_size = *shape("fc.weight")?.first()?;
    MODEL_NAMES.iter().find_map(|name| {
        let config = BackboneConfig::new(name.to_string()).with_embedding_size(embedding_size);
        match config.architecture().ok()? {
            Architecture::IResNet(c)
                if c.layers == layers && c.widths == widths && c.stem_width == stem_width =>
            {
                Some(Suggestion {
                    name,
                    embedding_size,
                })
            }
            _ => None,
        }
    })
}

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
            "iresnet_tiny" | "iresnet_nano" => {
                if !(28..=112).contains(&self.input_size) {
                    return Err(ModelError::InvalidConfig(format!(
                        "{} takes 28 to 112 pixels, got input_size {}",
                        self.name, self.input_size
                    )));
                }
                Architecture::IResNet(if self.name == "iresnet_tiny" {
                    iresnet([1, 1, 1, 1])
                        .with_widths([16, 32, 64, 128])
                        .with_stem_width(16)
                } else {
                    // IResNet-18's blocks at 1/16 of its widths: small enough for committed
                    // test fixtures (tests/fixtures/arcface_torch), identity and downsample
                    // shortcuts both present.
                    iresnet([2, 2, 2, 2])
                        .with_widths([4, 8, 16, 32])
                        .with_stem_width(4)
                })
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

    /// The forward pass with the products in `cast`'s precision ([`crate::amp`]; mixed
    /// precision). IResNets cast their convolutions and their linear layer; MobileFaceNet's
    /// depthwise layers stay in f32 (`cast` is ignored there).
    pub fn forward_cast(&self, x: Tensor<B, 4>, cast: crate::amp::Autocast) -> Tensor<B, 2> {
        match &self.net {
            Network::IResNet(m) => m.forward_cast(x, cast),
            Network::MobileFaceNet(m) => m.forward(x),
        }
    }

    /// Whether [`Self::forward_cast`] casts anything for this architecture.
    pub fn supports_autocast(&self) -> bool {
        matches!(self.net, Network::IResNet(_))
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
            .map(|t| t.entry())
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
        count(&self.state_layout(), |k| k != TensorKind::Buffer)
    }

    /// Number of trainable parameters (frozen ones and buffers excluded).
    pub fn trainable_param_count(&self) -> usize {
        count(&self.state_layout(), |k| k == TensorKind::Param)
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

    /// Loads an arcface_torch backbone: its `backbone.pth` as `torch.save` wrote it (read with
    /// [`crate::pytorch::read_pytorch`]), or that file converted to safetensors with
    /// `from safetensors.torch import save_file; save_file(torch.load('backbone.pth', map_location='cpu'), 'backbone.safetensors')`;
    /// the format is told by the first bytes. `self` must be the same architecture (e.g.
    /// `BackboneConfig::new("iresnet50".into())`); `num_batches_tracked` is ignored.
    pub fn load_arcface_torch(self, path: &Path) -> Result<Self> {
        let format = StateFormat::of_file(path)?;
        let loaded = match format {
            StateFormat::PyTorch => {
                let tensors = crate::pytorch::read_pytorch(path)?;
                self.load_tensors(&tensors, &path.display().to_string())?
            }
            StateFormat::Safetensors => self.load_safetensors(path)?,
        };
        tracing::info!(path = %path.display(), format = format.name(), "loaded arcface_torch backbone");
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

fn count(layout: &[StateEntry], keep: impl Fn(TensorKind) -> bool) -> usize {
    layout
        .iter()
        .filter(|e| keep(e.kind))
        .map(|e| e.shape.iter().product::<usize>())
        .sum()
}
