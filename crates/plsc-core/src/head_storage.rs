//! [`HeadStorage`]: the element type of a head shard's stored weight and momentum (the rows
//! themselves and their rounding are in [`crate::storage`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The element type of a shard's stored weight and momentum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadStorage {
    /// The compute type itself (f32 in training), updated exactly.
    #[default]
    F32,
    /// bfloat16, stochastically rounded updates.
    Bf16,
    /// IEEE half, stochastically rounded updates.
    F16,
}

impl HeadStorage {
    /// Every storage type, in the order of their names.
    pub const ALL: [HeadStorage; 3] = [HeadStorage::F32, HeadStorage::Bf16, HeadStorage::F16];

    /// Bytes of one stored element.
    pub fn bytes(self) -> usize {
        match self {
            HeadStorage::F32 => 4,
            HeadStorage::Bf16 | HeadStorage::F16 => 2,
        }
    }

    /// The name in configs, checkpoints and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            HeadStorage::F32 => "f32",
            HeadStorage::Bf16 => "bf16",
            HeadStorage::F16 => "f16",
        }
    }

    /// Whether updates are stochastically rounded (16-bit storage).
    pub fn is_half(self) -> bool {
        self != HeadStorage::F32
    }

    /// Bytes of a shard's stored weight and momentum: `2 * classes * dim * bytes()`.
    pub fn shard_bytes(self, classes: usize, dim: usize) -> u64 {
        2 * classes as u64 * dim as u64 * self.bytes() as u64
    }
}

impl fmt::Display for HeadStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
