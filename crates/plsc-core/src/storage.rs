//! How a head shard stores its weight and momentum: [`HeadStorage`], and the rows themselves,
//! [`RowStore`].
//!
//! The storage type is independent of the products' operand precision
//! ([`crate::Precision`]) and of the backbone's mixed precision: the kernel reads stored rows,
//! converts them to its compute type tile by tile (products always accumulate in f32), and
//! writes updated rows back with stochastic rounding ([`crate::rounding`]).
//!
//! Bytes per class for weight + momentum at `D = 512`: 4 KiB in f32, 2 KiB in bf16 or f16. The
//! bias of plain softmax and its momentum stay in the compute type (one value per class).
//!
//! - **bf16** keeps f32's exponent range with 8 significant bits: nothing underflows, the
//!   safe choice.
//! - **f16** has 11 significant bits but its smallest normal number is `6.1e-5`: momentum
//!   entries of a rarely sampled class fall into the subnormal range, where stochastic rounding
//!   still keeps them unbiased but with fewer bits.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use serde::{Deserialize, Serialize};

use crate::cpu::HeadFloat;
use crate::error::HeadError;
use crate::rounding::{self, HalfFormat};

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

impl FromStr for HeadStorage {
    type Err = HeadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| HeadError::Config {
                name: "head_storage",
                detail: format!("unknown storage `{s}`: expected f32, bf16 or f16"),
            })
    }
}

/// A shard's stored rows `[C_r, D]`, row-major, in one of the [`HeadStorage`] types (`Full`
/// is the compute type `T`).
#[derive(Debug, Clone, PartialEq)]
pub enum RowStore<T> {
    Full(Vec<T>),
    Bf16(Vec<bf16>),
    F16(Vec<f16>),
}

impl<T: HeadFloat> RowStore<T> {
    /// `len` zeros in `storage`.
    pub fn zeros(storage: HeadStorage, len: usize) -> Self {
        match storage {
            HeadStorage::F32 => Self::Full(vec![T::zero(); len]),
            HeadStorage::Bf16 => Self::Bf16(vec![bf16::ZERO; len]),
            HeadStorage::F16 => Self::F16(vec![f16::ZERO; len]),
        }
    }

    /// The storage type.
    pub fn storage(&self) -> HeadStorage {
        match self {
            Self::Full(_) => HeadStorage::F32,
            Self::Bf16(_) => HeadStorage::Bf16,
            Self::F16(_) => HeadStorage::F16,
        }
    }

    /// Number of stored elements.
    pub fn len(&self) -> usize {
        self.view().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values when stored in the compute type.
    pub fn as_full(&self) -> Option<&[T]> {
        match self {
            Self::Full(v) => Some(v),
            _ => None,
        }
    }

    /// Bytes of the stored elements.
    pub fn bytes(&self) -> usize {
        self.len() * self.storage().bytes()
    }

    /// Borrowed rows.
    pub fn view(&self) -> Rows<'_, T> {
        match self {
            Self::Full(v) => Rows::Full(v),
            Self::Bf16(v) => Rows::Bf16(v),
            Self::F16(v) => Rows::F16(v),
        }
    }

    /// Mutably borrowed rows.
    pub fn view_mut(&mut self) -> RowsMut<'_, T> {
        match self {
            Self::Full(v) => RowsMut::Full(v),
            Self::Bf16(v) => RowsMut::Bf16(v),
            Self::F16(v) => RowsMut::F16(v),
        }
    }

    /// Every value converted to the compute type (exact from 16 bits).
    pub fn to_vec(&self) -> Vec<T> {
        let mut out = vec![T::zero(); self.len()];
        self.view().read(0..self.len(), &mut out);
        out
    }

    /// `values` in `storage`, rounded to nearest (checkpoint conversion on request, tests).
    pub fn from_values_rounded(storage: HeadStorage, values: &[T]) -> Self {
        match storage {
            HeadStorage::F32 => Self::Full(values.to_vec()),
            HeadStorage::Bf16 => {
                Self::Bf16(values.iter().map(|v| bf16::from_f64(v.as_f64())).collect())
            }
            HeadStorage::F16 => {
                Self::F16(values.iter().map(|v| f16::from_f64(v.as_f64())).collect())
            }
        }
    }
}

impl RowStore<f32> {
    /// Every value as f32 (exact).
    pub fn to_vec_f32(&self) -> Vec<f32> {
        self.to_vec()
    }

    /// `values` in `storage`, rounded to nearest even.
    pub fn from_f32_rounded(storage: HeadStorage, values: &[f32]) -> Self {
        match storage {
            HeadStorage::F32 => Self::Full(values.to_vec()),
            HeadStorage::Bf16 => Self::Bf16(values.iter().map(|v| bf16::from_f32(*v)).collect()),
            HeadStorage::F16 => Self::F16(values.iter().map(|v| f16::from_f32(*v)).collect()),
        }
    }

    /// The stored bits, little-endian (safetensors' layout): 4 bytes per f32, 2 per half.
    pub fn raw_bytes_le(&self) -> Cow<'_, [u8]> {
        fn le<E: Copy, const N: usize>(v: &[E], f: impl Fn(E) -> [u8; N]) -> Vec<u8> {
            v.iter().flat_map(|e| f(*e)).collect()
        }
        match self {
            Self::Full(v) => Cow::Owned(le(v, f32::to_le_bytes)),
            Self::Bf16(v) => Cow::Owned(le(v, |e: bf16| e.to_bits().to_le_bytes())),
            Self::F16(v) => Cow::Owned(le(v, |e: f16| e.to_bits().to_le_bytes())),
        }
    }

    /// Rows from their little-endian bits in `storage` (the inverse of [`Self::raw_bytes_le`]).
    pub fn from_raw_bytes_le(storage: HeadStorage, bytes: &[u8]) -> Result<Self, HeadError> {
        let width = storage.bytes();
        if !bytes.len().is_multiple_of(width) {
            return Err(HeadError::Config {
                name: "head_storage",
                detail: format!(
                    "{} bytes are not a whole number of {storage} values ({width} bytes each)",
                    bytes.len()
                ),
            });
        }
        let half = |b: &[u8]| u16::from_le_bytes([b[0], b[1]]);
        Ok(match storage {
            HeadStorage::F32 => Self::Full(
                bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            HeadStorage::Bf16 => Self::Bf16(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_bits(half(b)))
                    .collect(),
            ),
            HeadStorage::F16 => Self::F16(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_bits(half(b)))
                    .collect(),
            ),
        })
    }
}

/// Borrowed stored rows.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a, T> {
    Full(&'a [T]),
    Bf16(&'a [bf16]),
    F16(&'a [f16]),
}

impl<'a, T: HeadFloat> Rows<'a, T> {
    /// Number of stored elements.
    pub fn len(&self) -> usize {
        match self {
            Rows::Full(v) => v.len(),
            Rows::Bf16(v) => v.len(),
            Rows::F16(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values when stored in the compute type.
    pub fn full(&self) -> Option<&'a [T]> {
        match self {
            Rows::Full(v) => Some(v),
            _ => None,
        }
    }

    /// Elements `range` converted to the compute type into `out` (same length).
    #[inline]
    pub fn read(&self, range: Range<usize>, out: &mut [T]) {
        match self {
            Rows::Full(v) => out.copy_from_slice(&v[range]),
            Rows::Bf16(v) => convert_from(&v[range], out),
            Rows::F16(v) => convert_from(&v[range], out),
        }
    }

    /// Row `r` (of width `dim`): borrowed in place when stored in the compute type, else
    /// converted into `scratch`.
    #[inline]
    pub fn row<'s>(&self, r: usize, dim: usize, scratch: &'s mut Vec<T>) -> &'s [T]
    where
        'a: 's,
    {
        match self {
            Rows::Full(v) => &v[r * dim..(r + 1) * dim],
            _ => {
                scratch.resize(dim, T::zero());
                self.read(r * dim..(r + 1) * dim, scratch);
                &scratch[..dim]
            }
        }
    }

    /// The start address of row `r`, for cache prefetching.
    #[inline]
    pub fn prefetch_row(&self, r: usize, dim: usize) {
        match self {
            Rows::Full(v) => crate::cpu::rows::prefetch_row(&v[r * dim..(r + 1) * dim]),
            Rows::Bf16(v) => crate::cpu::rows::prefetch_row(&v[r * dim..(r + 1) * dim]),
            Rows::F16(v) => crate::cpu::rows::prefetch_row(&v[r * dim..(r + 1) * dim]),
        }
    }
}

/// 16-bit values into the compute type: half's slice conversion (F16C / vectorised shifts)
/// into f32, element by element into f64.
fn convert_from<H, T: HeadFloat>(src: &[H], out: &mut [T])
where
    H: HalfFormat,
    [H]: HalfFloatSliceExt,
{
    match T::slice_as_f32_mut(out) {
        Some(out) => src.convert_to_f32_slice(out),
        None => {
            for (o, s) in out.iter_mut().zip(src) {
                *o = T::from_f64(s.to_f32() as f64);
            }
        }
    }
}

/// Where stochastic rounding draws its bits for one row: the step's key for the tensor and
/// the row's global class (see [`crate::rounding`]).
#[derive(Debug, Clone, Copy)]
pub struct RowRounding {
    /// [`rounding::row_key`] of the row.
    pub row_key: u32,
}

/// Mutably borrowed stored rows.
#[derive(Debug)]
pub enum RowsMut<'a, T> {
    Full(&'a mut [T]),
    Bf16(&'a mut [bf16]),
    F16(&'a mut [f16]),
}

impl<'a, T: HeadFloat> RowsMut<'a, T> {
    /// A shared view of the same rows.
    pub fn as_rows(&self) -> Rows<'_, T> {
        match self {
            RowsMut::Full(v) => Rows::Full(v),
            RowsMut::Bf16(v) => Rows::Bf16(v),
            RowsMut::F16(v) => Rows::F16(v),
        }
    }

    /// Splits the rows at class boundaries `bounds` (`bounds[w]..bounds[w + 1]` for part `w`).
    pub fn split(self, bounds: &[usize], dim: usize) -> Vec<RowsMut<'a, T>> {
        fn cut<'b, E>(mut buf: &'b mut [E], bounds: &[usize], dim: usize) -> Vec<&'b mut [E]> {
            let mut out = Vec::with_capacity(bounds.len().saturating_sub(1));
            for w in bounds.windows(2) {
                let (mine, rest) = buf.split_at_mut((w[1] - w[0]) * dim);
                out.push(mine);
                buf = rest;
            }
            out
        }
        match self {
            RowsMut::Full(v) => cut(v, bounds, dim).into_iter().map(RowsMut::Full).collect(),
            RowsMut::Bf16(v) => cut(v, bounds, dim).into_iter().map(RowsMut::Bf16).collect(),
            RowsMut::F16(v) => cut(v, bounds, dim).into_iter().map(RowsMut::F16).collect(),
        }
    }

    /// Row `r` in place when stored in the compute type.
    #[inline]
    pub fn full_row(&mut self, r: usize, dim: usize) -> Option<&mut [T]> {
        match self {
            RowsMut::Full(v) => Some(&mut v[r * dim..(r + 1) * dim]),
            _ => None,
        }
    }

    /// Writes `values` as row `r`: copied in the compute type, stochastically rounded (bits of
    /// `key` and each column) in 16 bits.
    #[inline]
    pub fn write_row(&mut self, r: usize, values: &[T], key: RowRounding, column_keys: &[u32]) {
        let dim = values.len();
        match self {
            RowsMut::Full(v) => v[r * dim..(r + 1) * dim].copy_from_slice(values),
            RowsMut::Bf16(v) => rounding::round_row_bf16(
                &mut v[r * dim..(r + 1) * dim],
                &as_f32(values),
                key.row_key,
                column_keys,
            ),
            RowsMut::F16(v) => rounding::round_row_f16(
                &mut v[r * dim..(r + 1) * dim],
                &as_f32(values),
                key.row_key,
                column_keys,
            ),
        }
    }
}

/// Values of the compute type as f32 (borrowed when they are f32).
fn as_f32<T: HeadFloat>(values: &[T]) -> Cow<'_, [f32]> {
    match T::slice_as_f32(values) {
        Some(v) => Cow::Borrowed(v),
        None => Cow::Owned(values.iter().map(|v| v.as_f64() as f32).collect()),
    }
}

/// [`rounding::column_key`] of columns `0..dim` (computed once per step).
pub fn column_keys(dim: usize) -> Vec<u32> {
    (0..dim).map(rounding::column_key).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print() {
        for s in HeadStorage::ALL {
            assert_eq!(s.name().parse::<HeadStorage>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!(matches!(
            "fp8".parse::<HeadStorage>(),
            Err(HeadError::Config {
                name: "head_storage",
                ..
            })
        ));
        assert_eq!(HeadStorage::Bf16.shard_bytes(1, 512), 2048);
    }

    #[test]
    fn raw_bytes_round_trip_bit_for_bit() {
        let values: Vec<f32> = (0..37).map(|i| (i as f32 - 18.3) * 0.0137).collect();
        for s in HeadStorage::ALL {
            let rows = RowStore::from_f32_rounded(s, &values);
            let back = RowStore::from_raw_bytes_le(s, &rows.raw_bytes_le()).unwrap();
            assert_eq!(back, rows);
            assert_eq!(rows.raw_bytes_le().len(), values.len() * s.bytes());
        }
        assert!(RowStore::from_raw_bytes_le(HeadStorage::F32, &[0u8; 6]).is_err());
    }
}
