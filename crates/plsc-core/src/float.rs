//! The precision of the head's matrix-product operands, shared by the CPU kernel and the device
//! path. The float types the host head computes in ([`crate::cpu::HeadFloat`]: `f32`, and
//! `f64` for references and checks) belong to the CPU kernel they run on.

use serde::{Deserialize, Serialize};

/// Precision of the operands of the head's matrix products. Accumulation, softmax statistics and
/// the stored weight are always in the head's float type (f32 or f64).
///
/// On CPU the half-precision modes round each operand to f16 / bf16 and multiply in f32: the
/// products of two half-precision numbers are exact in f32, so this is the arithmetic of a GPU
/// tensor-core GEMM with f32 accumulation (its speed matters on GPU, its numbers everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" => Ok(Self::F32),
            "f16" | "fp16" => Ok(Self::F16),
            "bf16" => Ok(Self::Bf16),
            _ => Err(format!(
                "unknown precision `{s}`: expected f32, f16 or bf16"
            )),
        }
    }
}
