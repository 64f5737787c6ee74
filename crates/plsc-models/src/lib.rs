//! Backbones for plsc-rs: networks that turn a face image (3x112x112) into an embedding.
//!
//! IResNet-18/34/50/100, MobileFaceNet and a tiny CPU variant on burn, generic over the backend,
//! with a registry by name. In the flow: `data` -> **`models`** -> `core` (the head).
//!
//! - [`BackboneConfig`] (`name`, embedding size, input size and channels) builds a
//!   [`Backbone`]: `forward([N, C, S, S]) -> [N, D]`. Under `Autodiff<B>` BatchNorms use batch
//!   statistics and update their running ones; `backbone.valid()` evaluates with the running
//!   ones.
//! - State: tensors are named and shaped as in arcface_torch's `state_dict`
//!   ([`Backbone::state_layout`], [`Backbone::save_safetensors`],
//!   [`Backbone::load_arcface_torch`], which reads arcface_torch's `.pth` itself through
//!   [`pytorch`], or its safetensors conversion).
//! - [`onnx`]: the inference graph as an ONNX model (opset 17).
//! - [`grad`]: backward from the embedding with the head's gradient.
//! - [`optim`]: SGD-momentum with PyTorch semantics; [`clip`]: global-norm clipping.
//! - [`flex_conv`]: the convolutions' faster weight gradient on `Autodiff<Flex>` (CPU training);
//!   [`flex_norm`]: training-mode BatchNorm as one operation there.
//! - Replicas: `clone()` shares BatchNorm running statistics (burn's `RunningState` is an
//!   `Arc`); [`Backbone::fresh_replica`] does not.

pub mod amp;
pub mod clip;
pub mod device;
pub mod error;
pub mod flex_conv;
pub mod flex_norm;
mod format;
pub mod grad;
pub mod iresnet;
mod layers;
pub mod mobilefacenet;
pub mod norm;
pub mod onnx;
pub mod ops;
pub mod optim;
pub mod pytorch;
pub mod registry;
pub mod state;

pub use error::{ModelError, Result};
pub use format::StateFormat;
pub use registry::{
    ARCFACE_TORCH_ALIASES, Architecture, Backbone, BackboneConfig, MODEL_NAMES, Network,
    Suggestion, resolve_name, suggest_architecture,
};
pub use state::{NamedTensor, StateEntry, TensorKind};
