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
use std::str::FromStr;

use half::{bf16, f16};

use crate::cpu::HeadFloat;
use crate::error::HeadError;

pub use crate::cpu::stored::{RowRounding, Rows, RowsMut, column_keys};
pub use crate::head_storage::HeadStorage;

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

    /// [`HeadError::Storage`] unless these rows are stored as `expected` (rank `rank`'s tensor
    /// `tensor`): what both heads check before taking rows.
    pub fn expect_storage(
        &self,
        expected: HeadStorage,
        rank: usize,
        tensor: &'static str,
    ) -> Result<(), HeadError> {
        if self.storage() != expected {
            return Err(HeadError::Storage {
                rank,
                tensor,
                got: self.storage(),
                expected,
            });
        }
        Ok(())
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
