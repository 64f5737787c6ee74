//! [`crate::rounding`]'s stochastic rounding as burn tensor operations, for the device head's
//! 16-bit storage ([`crate::DeviceHead`]).
//!
//! The same rule and the same random bits as the CPU kernel:
//!
//! - the bits: `mix31(row_key ^ column_key) >> 7` with the row keys (one per updated row) and
//!   the column keys computed on the host ([`crate::rounding`]) and the last mix on the device,
//!   on 32-bit integers with every value kept below `2^31` (burn-flex and burn-cuda both use
//!   `i32`; the operations give the same bits on `i64`);
//! - the rounding: `r = RN(x)`, the gap to the neighbour on `x`'s side found with exact float
//!   operations (below), `p = |x - r| / gap`, the neighbour when `u < p`.
//!
//! The gap without bit access: for a stored magnitude `a` with `P` significant bits,
//! `a * 2^-P` lies in `[ulp/2, ulp)`, so `s = RN(a + a 2^-P)` is `a + ulp` unless `a` is a power
//! of two (a tie, rounded to even: `s = a`), where `ulp = a 2^-(P-1)`. Below a power of two the
//! spacing halves. Every sum is exact in f32 (at most `2P <= 22` significant bits), so the gap
//! is exact, and so are `p` (a division by a power of two) and `u` (24-bit integers): the
//! decisions are the CPU kernel's. Below the format's smallest normal number the gap is its
//! smallest subnormal.

use burn::tensor::backend::Backend;
use burn::tensor::{DType, ElementConversion, FloatDType, Int, Tensor, TensorData};

use crate::rounding::{MASK31, RoundedTensor, row_key, step_key};
use crate::storage::{HeadStorage, column_keys};

/// Significant bits and smallest subnormal of a 16-bit storage format.
fn format(storage: HeadStorage) -> Option<(i32, f32, FloatDType)> {
    match storage {
        HeadStorage::F32 => None,
        HeadStorage::Bf16 => Some((8, 2f32.powi(-133), FloatDType::BF16)),
        HeadStorage::F16 => Some((11, 2f32.powi(-24), FloatDType::F16)),
    }
}

/// The burn dtype of `storage`.
pub fn storage_dtype(storage: HeadStorage) -> DType {
    match storage {
        HeadStorage::F32 => DType::F32,
        HeadStorage::Bf16 => DType::BF16,
        HeadStorage::F16 => DType::F16,
    }
}

/// `t` in f32 (a no-op when it already is).
pub fn to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Tensor<B, D> {
    if t.dtype() == DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    }
}

fn int<B: Backend>(v: u32) -> B::IntElem {
    (v as i64).elem()
}

/// [`crate::rounding::mix31`] on integer tensors.
fn mix31<B: Backend, const D: usize>(x: Tensor<B, D, Int>) -> Tensor<B, D, Int> {
    let m = int::<B>(MASK31);
    let xorshift = |x: Tensor<B, D, Int>, k: u32| {
        x.clone()
            .bitwise_xor(x.bitwise_right_shift_scalar(int::<B>(k)))
    };
    let times = |x: Tensor<B, D, Int>, k: u32| {
        (x.clone()
            + x.bitwise_left_shift_scalar(int::<B>(k))
                .bitwise_and_scalar(m))
        .bitwise_and_scalar(m)
    };
    let x = x.bitwise_and_scalar(m);
    let x = times(xorshift(x, 16), 9);
    let x = times(xorshift(x, 13), 5);
    let x = times(xorshift(x, 11), 15);
    xorshift(x, 16)
}

/// The uniforms `u [K, D]` in `[0, 1)` of rows `classes` (global) of `tensor` at `step`.
pub fn uniforms<B: Backend>(
    seed: u64,
    step: u64,
    tensor: RoundedTensor,
    classes: &[usize],
    dim: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let key = step_key(seed, step, tensor);
    let rows: Vec<i32> = classes
        .iter()
        .map(|c| row_key(key, *c as u64) as i32)
        .collect();
    let cols: Vec<i32> = column_keys(dim).into_iter().map(|k| k as i32).collect();
    let rows = Tensor::<B, 2, Int>::from_data(TensorData::new(rows, [classes.len(), 1]), device);
    let cols = Tensor::<B, 2, Int>::from_data(TensorData::new(cols, [1, dim]), device);
    let bits = mix31(rows.bitwise_xor(cols)).bitwise_right_shift_scalar(int::<B>(7));
    bits.float().mul_scalar(1.0 / 16_777_216.0)
}

/// `x` (f32) stochastically rounded to `storage` with uniforms `u`, returned in the storage
/// dtype (`x` itself for f32 storage).
pub fn round_stochastic<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    u: Tensor<B, D>,
    storage: HeadStorage,
) -> Tensor<B, D> {
    let Some((bits, min_gap, dtype)) = format(storage) else {
        return x;
    };
    let nearest = |t: Tensor<B, D>| t.cast(dtype).cast(FloatDType::F32);
    let r = nearest(x.clone());
    let d = x.clone() - r.clone();
    let a = r.clone().abs();
    let s = nearest(a.clone() + a.clone().mul_scalar(2f32.powi(-bits)));
    let power_of_two = s.clone().equal(a.clone());
    let up = (s - a.clone()).mask_where(
        power_of_two.clone(),
        a.clone().mul_scalar(2f32.powi(1 - bits)),
    );
    let down = up
        .clone()
        .mask_where(power_of_two, a.clone().mul_scalar(2f32.powi(-bits)));
    let away = x.abs().greater(a);
    let gap = down.mask_where(away, up).clamp_min(min_gap);
    let p = d.clone().abs() / gap.clone();
    let other = r.clone() + d.sign() * gap;
    r.mask_where(u.lower(p), other).cast(dtype)
}
