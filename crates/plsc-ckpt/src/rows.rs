//! The head's stored rows in checkpoint files: the safetensors dtype of each storage type
//! ([`HeadStorage`]), writing a [`RowStore`] in pieces, reading rows back, and converting
//! between storage types on request (resharding with `--head-storage`).
//!
//! Weight and momentum keep their storage type on disk: f32 as `F32`, bf16 as `BF16`, f16 as
//! `F16`, each the little-endian bits of the stored values, so a save and a load give back the
//! same bits. Work is done in pieces of [`PIECE`] values: no step holds a second copy of a
//! shard.

use plsc_core::{HeadStorage, RowStore};
use safetensors::Dtype;

use crate::error::{CkptError, Result};
use crate::tensor::{extend_f32_from_le, f32_bytes};

/// Values converted or copied at a time (1 MiB of f32).
const PIECE: usize = 1 << 18;

/// The safetensors dtype the rows of `storage` are written as.
pub(crate) fn dtype(storage: HeadStorage) -> Dtype {
    match storage {
        HeadStorage::F32 => Dtype::F32,
        HeadStorage::Bf16 => Dtype::BF16,
        HeadStorage::F16 => Dtype::F16,
    }
}

/// Writes the little-endian bits of `rows` through `write`: f32 rows straight from memory (on
/// little-endian machines), 16-bit rows a piece at a time.
pub(crate) fn write_rows(
    rows: &RowStore<f32>,
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut buf = Vec::new();
    let mut half = |bits: &mut dyn Iterator<Item = u16>| -> Result<()> {
        loop {
            buf.clear();
            buf.extend(bits.take(PIECE).flat_map(u16::to_le_bytes));
            if buf.is_empty() {
                return Ok(());
            }
            write(&buf)?;
        }
    };
    match rows {
        RowStore::Full(v) => {
            for piece in v.chunks(PIECE) {
                write(&f32_bytes(piece))?;
            }
            Ok(())
        }
        RowStore::Bf16(v) => half(&mut v.iter().map(|e| e.to_bits())),
        RowStore::F16(v) => half(&mut v.iter().map(|e| e.to_bits())),
    }
}

/// Rows read back from files, range after range, into one [`RowStore`] of their storage type.
pub(crate) struct RowsBuilder {
    rows: RowStore<f32>,
}

impl RowsBuilder {
    /// An empty store of `storage` with room for `capacity` values.
    pub(crate) fn new(storage: HeadStorage, capacity: usize) -> Self {
        let rows = match storage {
            HeadStorage::F32 => RowStore::Full(Vec::with_capacity(capacity)),
            HeadStorage::Bf16 => RowStore::Bf16(Vec::with_capacity(capacity)),
            HeadStorage::F16 => RowStore::F16(Vec::with_capacity(capacity)),
        };
        Self { rows }
    }

    /// Appends the values of `bytes`, little-endian bits of the store's type.
    pub(crate) fn extend_le(&mut self, bytes: &[u8]) -> Result<()> {
        let storage = self.rows.storage();
        if let RowStore::Full(v) = &mut self.rows {
            extend_f32_from_le(v, bytes);
            return Ok(());
        }
        for piece in bytes.chunks(PIECE * storage.bytes()) {
            match (
                &mut self.rows,
                RowStore::<f32>::from_raw_bytes_le(storage, piece)?,
            ) {
                (RowStore::Bf16(v), RowStore::Bf16(p)) => v.extend_from_slice(&p),
                (RowStore::F16(v), RowStore::F16(p)) => v.extend_from_slice(&p),
                _ => unreachable!("from_raw_bytes_le returns the storage it is given"),
            }
        }
        Ok(())
    }

    /// The rows.
    pub(crate) fn finish(self) -> RowStore<f32> {
        self.rows
    }
}

/// Where converted values go, for error messages: the file and tensor written, the first class
/// of the bytes given, and the row width.
pub(crate) struct ConvertTarget<'a> {
    pub(crate) file: &'a str,
    pub(crate) tensor: &'a str,
    pub(crate) first_class: usize,
    pub(crate) width: usize,
}

/// Converts `bytes` (little-endian values of `from`) to `to` a piece at a time and writes the
/// little-endian result through `write`. To f32 the values are exact; to bf16 or f16 each is
/// rounded to the nearest representable value (ties to even), [`RowStore::from_f32_rounded`].
/// A finite value that becomes infinite (beyond f16's 65504) is an error naming the class and
/// column: nothing is clipped silently.
pub(crate) fn convert_le(
    from: HeadStorage,
    to: HeadStorage,
    bytes: &[u8],
    at: &ConvertTarget<'_>,
    mut write: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let mut done = 0usize;
    for piece in bytes.chunks(PIECE * from.bytes()) {
        let values = RowStore::<f32>::from_raw_bytes_le(from, piece)?.to_vec_f32();
        let converted = RowStore::from_f32_rounded(to, &values);
        if to != HeadStorage::F32 {
            let back = converted.to_vec_f32();
            if let Some(i) =
                (0..values.len()).find(|&i| values[i].is_finite() && !back[i].is_finite())
            {
                let k = done + i;
                return Err(CkptError::Invalid {
                    what: "head storage conversion",
                    detail: format!(
                        "{}: `{}` of class {} column {} is {}, which {to} cannot hold \
                         (it would become {}): convert to bf16 (f32's range) or keep {from}",
                        at.file,
                        at.tensor,
                        at.first_class + k / at.width,
                        k % at.width,
                        values[i],
                        back[i]
                    ),
                });
            }
        }
        write(&converted.raw_bytes_le())?;
        done += values.len();
    }
    Ok(())
}
