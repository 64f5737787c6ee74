//! The float types the head computes in (`f32`, and `f64` for references and checks), and the
//! precision of its matrix-product operands.

use plsc_comm::Element;
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

/// A float the head computes in. Implemented for `f32` and `f64`.
pub trait HeadFloat:
    num_traits::Float
    + Element
    + std::fmt::Debug
    + std::iter::Sum
    + Send
    + Sync
    + 'static
    + crate::cpu::Kernel
{
    fn from_f64(v: f64) -> Self;
    fn as_f64(self) -> f64;
    /// Rounds to the operand precision (identity for `F32` and for `f64`).
    fn round_to(self, p: Precision) -> Self;
    /// `out[i] = exp(x[i])` for `x[i] <= 0` (softmax numerators after the max is subtracted).
    fn exp_nonpositive_in_place(x: &mut [Self]);
}

impl HeadFloat for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn round_to(self, p: Precision) -> Self {
        match p {
            Precision::F32 => self,
            Precision::F16 => half::f16::from_f32(self).to_f32(),
            Precision::Bf16 => half::bf16::from_f32(self).to_f32(),
        }
    }
    fn exp_nonpositive_in_place(x: &mut [Self]) {
        crate::fast_exp::exp_in_place(x)
    }
}

impl HeadFloat for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn round_to(self, _p: Precision) -> Self {
        self
    }
    fn exp_nonpositive_in_place(x: &mut [Self]) {
        for v in x {
            *v = v.exp();
        }
    }
}
