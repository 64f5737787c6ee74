//! Views of a shard's stored rows as the kernel reads and writes them: [`Rows`] and
//! [`RowsMut`] over the compute type or 16-bit storage (the owning `RowStore` of the storage module
//! hands them out), converting on read and rounding stochastically on write
//! ([`crate::rounding`]).

use std::borrow::Cow;
use std::ops::Range;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::cpu::HeadFloat;
use crate::rounding::{self, HalfFormat};

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
            RowsMut::Bf16(v) => rounding::round_row(
                &mut v[r * dim..(r + 1) * dim],
                &as_f32(values),
                key.row_key,
                column_keys,
            ),
            RowsMut::F16(v) => rounding::round_row(
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
