//! Stochastic rounding of updated head rows to 16-bit storage, keyed by
//! `(seed, step, tensor, class, column)`.
//!
//! With weight and momentum stored in bf16 or f16 ([`crate::HeadStorage`]), a round-to-nearest
//! update `w - lr v` loses every change smaller than half a unit in the last place: at bf16's 8
//! significant bits, an update below `2^-9 |w|` vanishes, which is most of a late-training SGD
//! step. Stochastic rounding keeps the update **in expectation**: a value `x` between the two
//! neighbouring storage values `lo <= x <= hi` is stored as `hi` with probability
//! `p = (x - lo) / (hi - lo)` and as `lo` otherwise, so `E[stored] = x` exactly.
//!
//! # The rule, exactly
//!
//! For an f32 value `x` and a uniform `u` in `[0, 1)`:
//!
//! ```text
//! r   = RN(x)                  round to nearest even in the storage format
//! d   = x - r                  exact in f32
//! gap = |o - r|                o: the storage neighbour of r on x's side (a power of two)
//! p   = |d| / gap              exact: a power-of-two division
//! stored = o  if u < p,  else r
//! ```
//!
//! which is the same distribution as "`hi` with probability `(x - lo) / (hi - lo)`": when `r`
//! is `lo`, `p = (x - lo) / gap`; when `r` is `hi`, `o = lo` is taken with probability
//! `(hi - x) / gap`. Every quantity is exact, so the decision depends on `x` and `u` only, not on
//! how the arithmetic is carried out: the device path ([`crate::DeviceHead`]) computes `gap`
//! with float operations and takes the same decisions.
//!
//! # The random bits
//!
//! `u = (h >> 7) / 2^24`, with `h` a 31-bit hash of `(seed, step, tensor, class, column)`:
//! `class` is the **global** class index and `column` the embedding coordinate, `tensor` tells
//! weight from momentum. Nothing depends on the rank count, the thread count or which worker
//! updates a row, so runs stay bit-reproducible across thread counts, resume and resharding.
//!
//! The hash, [`mix31`], is a bijection of 31-bit integers built from xor-shifts and
//! multiplications by odd constants written as shift-and-add. It uses only operations that give
//! the same bits on 32-bit and 64-bit integer tensors (values kept below `2^31`, sums masked),
//! which is what lets the device path compute it with burn's integer tensors.

use half::{bf16, f16};

/// The low 31 bits.
pub const MASK31: u32 = 0x7FFF_FFFF;

/// Which tensor a value belongs to (part of the rounding key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundedTensor {
    Weight = 1,
    Momentum = 2,
}

/// A bijective mix of 31-bit integers (`x < 2^31`; the result is below `2^31` too).
#[inline(always)]
pub fn mix31(mut x: u32) -> u32 {
    x &= MASK31;
    x ^= x >> 16;
    x = (x + ((x << 9) & MASK31)) & MASK31;
    x ^= x >> 13;
    x = (x + ((x << 5) & MASK31)) & MASK31;
    x ^= x >> 11;
    x = (x + ((x << 15) & MASK31)) & MASK31;
    x ^= x >> 16;
    x
}

/// Folds a 64-bit value into 31 bits (every input bit reaches the result).
#[inline(always)]
pub fn fold31(v: u64) -> u32 {
    ((v ^ (v >> 31) ^ (v >> 62)) as u32) & MASK31
}

/// The part of the key shared by a whole step and tensor: `mix31(seed ^ mix31(step ^
/// mix31(tensor)))` (each folded to 31 bits).
#[inline]
pub fn step_key(seed: u64, step: u64, tensor: RoundedTensor) -> u32 {
    mix31(fold31(seed) ^ mix31(fold31(step) ^ mix31(tensor as u32)))
}

/// The key of one row: `mix31(step_key ^ class)` (`class` global, below `2^31`).
#[inline(always)]
pub fn row_key(step_key: u32, class: u64) -> u32 {
    mix31(step_key ^ fold31(class))
}

/// The key of one column, shared by every row: `mix31(column ^ 0x2545F491)`.
#[inline(always)]
pub fn column_key(column: usize) -> u32 {
    mix31((column as u32 & MASK31) ^ 0x2545_F491)
}

/// The 24 uniform bits of one element: `mix31(row_key ^ column_key) >> 7`.
#[inline(always)]
pub fn element_bits(row_key: u32, column_key: u32) -> u32 {
    mix31(row_key ^ column_key) >> 7
}

/// `u` in `[0, 1)` from 24 bits (exact in f32).
#[inline(always)]
pub fn uniform(bits24: u32) -> f32 {
    bits24 as f32 * (1.0 / 16_777_216.0)
}

/// A 16-bit float format of the head's storage.
pub trait HalfFormat: Copy + Send + Sync + 'static {
    /// Round to nearest even.
    fn nearest(x: f32) -> Self;
    fn to_f32(self) -> f32;
    fn to_bits(self) -> u16;
    fn from_bits(bits: u16) -> Self;
    /// Whether [`Self::round_bits`] takes `x` (else the scalar [`round_stochastic`] does).
    fn fast_takes(x: f32) -> bool;
    /// [`round_stochastic`] on the bits of `x` (`xb`) with `u = bits24 / 2^24`, branch-free.
    fn round_bits(xb: u32, bits24: u32) -> u16;
}

impl HalfFormat for bf16 {
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        bf16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn to_bits(self) -> u16 {
        bf16::to_bits(self)
    }
    #[inline(always)]
    fn from_bits(bits: u16) -> Self {
        bf16::from_bits(bits)
    }
    #[inline(always)]
    fn fast_takes(x: f32) -> bool {
        x.abs() < BF16_FAST_LIMIT
    }
    #[inline(always)]
    fn round_bits(xb: u32, bits24: u32) -> u16 {
        round_bf16_bits(xb, bits24)
    }
}

impl HalfFormat for f16 {
    #[inline(always)]
    fn nearest(x: f32) -> Self {
        f16::from_f32(x)
    }
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn to_bits(self) -> u16 {
        f16::to_bits(self)
    }
    #[inline(always)]
    fn from_bits(bits: u16) -> Self {
        f16::from_bits(bits)
    }
    #[inline(always)]
    fn fast_takes(x: f32) -> bool {
        f16_fast(x)
    }
    #[inline(always)]
    fn round_bits(xb: u32, bits24: u32) -> u16 {
        round_f16_bits(xb, bits24)
    }
}

/// `x` stochastically rounded to the format `H` with `u` in `[0, 1)` (see the
/// [module doc](self)). Non-finite values and values beyond the format's range round to
/// nearest.
#[inline(always)]
pub fn round_stochastic<H: HalfFormat>(x: f32, u: f32) -> H {
    let r = H::nearest(x);
    let rf = r.to_f32();
    if rf == x || !x.is_finite() || !rf.is_finite() {
        return r;
    }
    // The neighbour of r on x's side, by one step of the magnitude bits.
    let mag = r.to_bits() & 0x7FFF;
    let mag = if rf == 0.0 {
        1
    } else if x.abs() > rf.abs() {
        mag + 1
    } else {
        mag - 1
    };
    // Zero is stored as +0 (what `r + sign(d) gap` gives on the device).
    let sign = if x < 0.0 && mag != 0 { 0x8000u16 } else { 0 };
    let o = H::from_bits(sign | mag);
    let of = o.to_f32();
    if !of.is_finite() {
        return r;
    }
    let p = (x - rf).abs() / (of - rf).abs();
    if u < p { o } else { r }
}

/// [`round_stochastic`] to bf16 on the bits of `x`, for `|x|` below bf16's largest finite
/// value: branch-free integer operations that the compiler vectorises.
///
/// With `m` the magnitude bits of `x`, bf16's neighbours of `x` are `lo = m >> 16` and
/// `lo + 1`, `frac = m & 0xFFFF` is `x`'s distance from `lo` in units of `2^-16` gaps, so
/// `p = frac / 2^16` (or `(2^16 - frac) / 2^16` when nearest-even picks `lo + 1`) and
/// `u < p` is `bits24 < p 2^24`. Zero reached from a non-zero nearest value is `+0`, as in
/// [`round_stochastic`].
#[inline(always)]
fn round_bf16_bits(xb: u32, bits24: u32) -> u16 {
    let sign = (xb >> 16) & 0x8000;
    let m = xb & 0x7FFF_FFFF;
    let frac = m & 0xFFFF;
    let lo = m >> 16;
    let nearest_is_hi = frac > 0x8000 || (frac == 0x8000 && lo & 1 == 1);
    let dist = if nearest_is_hi { 0x1_0000 - frac } else { frac };
    let other = bits24 < (dist << 8);
    let mag = lo + u32::from(nearest_is_hi != other);
    let sign = if mag == 0 && nearest_is_hi { 0 } else { sign };
    (sign | mag) as u16
}

/// The largest magnitude [`round_bf16_bits`] takes: both neighbours finite.
const BF16_FAST_LIMIT: f32 = 3.38e38;

/// `dst[i] = round_stochastic(values[i], u)` in `H` with the bits of `row_key` and
/// `column_keys[i]`: the kernel's write-back of an updated row, on the values' bits
/// ([`HalfFormat::round_bits`]), vectorised (AVX2 when the CPU has it, chosen at run time); a
/// row holding a value the bit path does not take goes through the scalar rule.
pub fn round_row<H: HalfFormat>(dst: &mut [H], values: &[f32], row_key: u32, column_keys: &[u32]) {
    #[inline(always)]
    fn body<H: HalfFormat>(dst: &mut [H], values: &[f32], row_key: u32, column_keys: &[u32]) {
        let n = dst.len().min(values.len()).min(column_keys.len());
        let (dst, values, keys) = (&mut dst[..n], &values[..n], &column_keys[..n]);
        if values.iter().all(|v| H::fast_takes(*v)) {
            for i in 0..n {
                let bits = element_bits(row_key, keys[i]);
                dst[i] = H::from_bits(H::round_bits(values[i].to_bits(), bits));
            }
        } else {
            for i in 0..n {
                let u = uniform(element_bits(row_key, keys[i]));
                dst[i] = round_stochastic::<H>(values[i], u);
            }
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<H: HalfFormat>(dst: &mut [H], values: &[f32], row_key: u32, column_keys: &[u32]) {
            body(dst, values, row_key, column_keys)
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            return unsafe { avx2(dst, values, row_key, column_keys) };
        }
    }
    body(dst, values, row_key, column_keys)
}

/// [`round_stochastic`] to f16 on the bits of `x`, for `x = 0` or `2^-37 <= |x| < 65504`.
///
/// The f16 value below `|x|` is `lo` and `x`'s distance from it is `frac / 2^shift` gaps:
/// for normal f16 values (`|x| >= 2^-14`) `lo = (m >> 13) - (112 << 10)` (the exponent
/// rebiased) and `shift = 13`; below, `lo = significand >> shift` with
/// `shift = 126 - exponent` (subnormal steps of `2^-24`). Then as [`round_bf16_bits`].
#[inline(always)]
fn round_f16_bits(xb: u32, bits24: u32) -> u16 {
    let sign = ((xb >> 16) & 0x8000) as u16;
    let m = xb & 0x7FFF_FFFF;
    let exponent = m >> 23;
    let normal = m >= 0x3880_0000;
    let shift = if normal {
        13
    } else {
        126u32.saturating_sub(exponent).min(40)
    };
    let significand = (m & 0x7F_FFFF) | 0x80_0000;
    let lo = if normal {
        (m >> 13) - (112 << 10)
    } else {
        significand >> shift.min(31)
    };
    let frac = if normal {
        u64::from(m & 0x1FFF)
    } else {
        u64::from(significand) & ((1u64 << shift) - 1)
    };
    let half = 1u64 << (shift - 1);
    let nearest_is_hi = frac > half || (frac == half && lo & 1 == 1);
    let dist = if nearest_is_hi {
        (1u64 << shift) - frac
    } else {
        frac
    };
    let other = u64::from(bits24) << shift < dist << 24;
    let mag = lo + u32::from(nearest_is_hi != other);
    let sign = if mag == 0 && nearest_is_hi { 0 } else { sign };
    let out = sign | mag as u16;
    // Zero stays the zero it is.
    if m == 0 { (xb >> 16) as u16 } else { out }
}

/// Whether [`round_f16_bits`] takes `x`.
#[inline(always)]
fn f16_fast(x: f32) -> bool {
    let a = x.abs();
    a == 0.0 || (F16_FAST_MIN..65504.0).contains(&a)
}

/// The smallest non-zero magnitude [`round_f16_bits`] takes.
const F16_FAST_MIN: f32 = 7.275_958e-12; // 2^-37

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_paths_take_the_rules_decisions() {
        let mut xs = vec![
            0.0f32, -0.0, 1.0, -1.0, 3.0e38, -3.3e38, 1e-40, -1e-40, 1e-45,
        ];
        let mut state = 0x1234_5678u32;
        for _ in 0..20_000 {
            state = mix31(state.wrapping_add(0x9E37_79B9) & MASK31);
            let e = (state % 60) as i32 - 40;
            let m = (state >> 8) as f32 / (1u32 << 23) as f32;
            let sign = if state & 1 == 1 { -1.0 } else { 1.0 };
            xs.push(sign * (1.0 + m) * 2f32.powi(e));
        }
        // Ties and exact bf16 values, both signs.
        for k in 0..200u32 {
            let b = f32::from_bits(0x3F80_0000 + (k << 15));
            xs.push(b);
            xs.push(-b);
        }
        // f16: its whole range, subnormals and ties included.
        for k in 0..2000u32 {
            let f = f16::from_bits(((k * 31) & 0x7BFF) as u16).to_f32();
            let next = f16::from_bits((((k * 31) & 0x7BFF) + 1) as u16).to_f32();
            for t in [0.0f32, 0.25, 0.5, 0.75] {
                xs.push(f + (next - f) * t);
                xs.push(-(f + (next - f) * t));
            }
        }
        for (i, x) in xs.iter().enumerate() {
            for bits in [
                0u32,
                1,
                0x7F_FFFF,
                0x80_0000,
                0xFF_FFFF,
                (i as u32 * 7919) & 0xFF_FFFF,
            ] {
                let u = uniform(bits);
                if x.abs() < BF16_FAST_LIMIT {
                    let fast = round_bf16_bits(x.to_bits(), bits);
                    let rule = round_stochastic::<bf16>(*x, u).to_bits();
                    assert_eq!(
                        fast,
                        rule,
                        "bf16: x = {x:e} ({:#x}), bits {bits:#x}",
                        x.to_bits()
                    );
                }
                if f16_fast(*x) {
                    let fast = round_f16_bits(x.to_bits(), bits);
                    let rule = round_stochastic::<f16>(*x, u).to_bits();
                    assert_eq!(
                        fast,
                        rule,
                        "f16: x = {x:e} ({:#x}), bits {bits:#x}",
                        x.to_bits()
                    );
                }
            }
        }
    }

    #[test]
    fn mix31_is_a_bijection_on_a_sample_and_stays_in_31_bits() {
        let mut seen = std::collections::HashSet::new();
        for x in (0..200_000u32).map(|i| i.wrapping_mul(10_007) & MASK31) {
            let h = mix31(x);
            assert!(h <= MASK31);
            seen.insert(h);
        }
        assert_eq!(seen.len(), 200_000);
    }

    #[test]
    fn exact_values_are_kept_and_neighbours_are_the_only_outcomes() {
        for &x in &[1.0f32, -2.5, 0.0, 3.0e-3] {
            let h = bf16::from_f32(x).to_f32();
            for u in [0.0, 0.5, 0.999] {
                assert_eq!(round_stochastic::<bf16>(h, u).to_f32(), h);
            }
        }
        // 1 + 2^-9 lies a quarter of the way from bf16's 1 to 1 + 2^-7.
        let x = 1.0 + 2f32.powi(-9);
        assert_eq!(round_stochastic::<bf16>(x, 0.3).to_f32(), 1.0);
        assert_eq!(
            round_stochastic::<bf16>(x, 0.2).to_f32(),
            1.0 + 2f32.powi(-7)
        );
        // Below a power of two the spacing halves: 1 - 2^-10 lies between 1 - 2^-8 and 1.
        let x = 1.0 - 2f32.powi(-10);
        assert_eq!(
            round_stochastic::<bf16>(x, 0.2).to_f32(),
            1.0 - 2f32.powi(-8)
        );
        assert_eq!(round_stochastic::<bf16>(x, 0.3).to_f32(), 1.0);
        // f16 subnormals: spacing 2^-24.
        let x = 2f32.powi(-26);
        assert_eq!(round_stochastic::<f16>(x, 0.2).to_f32(), 2f32.powi(-24));
        assert_eq!(round_stochastic::<f16>(x, 0.3).to_f32(), 0.0);
        assert_eq!(round_stochastic::<f16>(-x, 0.2).to_f32(), -(2f32.powi(-24)));
    }
}
