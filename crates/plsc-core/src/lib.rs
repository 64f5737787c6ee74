//! The class-sharded classification head of plsc-rs: margin softmax (ArcFace, CosFace,
//! SphereFace, any combined `m1/m2/m3`, plain softmax) computed as a distributed softmax over
//! class shards, chunked so it never holds the batch-by-classes matrix, with Partial FC sampling.
//!
//! In the flow: `models` (embedding) -> **`core`** (loss, feature gradient, sparse weight
//! update) -> back into `models`; collectives through `comm`. Start at [`ShardedHead`] (the
//! CPU kernel, host memory) or [`DeviceHead`] (burn tensors on the backend's device).

pub mod burn_path;
pub mod capacity;
pub mod check;
pub mod cpu;
mod device_head;
pub mod device_rounding;
mod error;
mod fast_exp;
pub mod float;
mod head;
pub mod head_storage;
pub mod init;
pub mod loss;
pub mod margin;
pub mod reference;
pub mod rounding;
pub mod sampling;
pub mod sgd;
pub mod shard;
pub mod storage;

pub use cpu::HeadFloat;
pub use device_head::{DeviceHead, DeviceHeadOutput, DeviceUpdate, HeadGradient};
pub use error::HeadError;
pub use float::Precision;
pub use head::{
    Accuracy, DEFAULT_MEMORY_BUDGET, HeadConfig, HeadOutput, HeadPath, HeadTimings, ShardedHead,
    WeightUpdate,
};
pub use loss::{LossConfig, LossKind, MarginParams};
pub use sgd::SparseSgdConfig;
pub use shard::ClassShard;
pub use storage::{HeadStorage, RowStore};
