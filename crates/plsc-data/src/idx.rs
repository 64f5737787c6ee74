//! IDX files (MNIST, Fashion-MNIST; gzip or plain) and the class hold-out of an open-set split:
//! what `cargo xtask import-idx` reads and chooses before it writes the training layout and a
//! verification pair set of classes never trained on.
//!
//! IDX: a big-endian header (magic `0 0 8 3` for unsigned-byte images `[n, rows, cols]`,
//! `0 0 8 1` for unsigned-byte labels `[n]`), then the bytes. A file that starts with gzip's
//! magic (`1f 8b`) is read through gzip.

use std::io::{Cursor, Read};
use std::path::Path;

use image::{GrayImage, ImageFormat};
use rand::SeedableRng;
use rand::seq::SliceRandom;

use crate::error::{DataError, Result};

/// Images of an IDX3 file: `images[i]` holds `rows * cols` grey pixels, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// The images, in file order.
    pub images: Vec<Vec<u8>>,
    /// Height in pixels.
    pub rows: u32,
    /// Width in pixels.
    pub cols: u32,
}

impl IdxImages {
    /// Image `i` as a PNG file's bytes.
    pub fn png(&self, i: usize) -> Result<Vec<u8>> {
        gray_png(&self.images[i], self.rows, self.cols)
    }
}

fn bad(path: &Path, reason: String) -> DataError {
    DataError::Idx {
        path: path.to_path_buf(),
        reason,
    }
}

/// Reads an IDX3 unsigned-byte image file (gzip or plain).
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    parse_idx_images(&read_maybe_gz(path)?, path)
}

/// Parses the bytes of an IDX3 unsigned-byte image file; `path` names it in errors.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<IdxImages> {
    if bytes.len() < 16 || bytes[..4] != [0, 0, 8, 3] {
        return Err(bad(
            path,
            format!(
                "not an IDX3 unsigned-byte file (magic {:?}, expected [0, 0, 8, 3])",
                &bytes[..bytes.len().min(4)]
            ),
        ));
    }
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (n, rows, cols) = (be(4) as usize, be(8), be(12));
    let size = rows as usize * cols as usize;
    if size == 0 || n.checked_mul(size).and_then(|b| b.checked_add(16)) != Some(bytes.len()) {
        return Err(bad(
            path,
            format!(
                "header says {n} images of {rows}x{cols}, file has {} bytes",
                bytes.len()
            ),
        ));
    }
    Ok(IdxImages {
        images: bytes[16..].chunks(size).map(<[u8]>::to_vec).collect(),
        rows,
        cols,
    })
}

/// Reads an IDX1 unsigned-byte label file (gzip or plain).
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    parse_idx_labels(&read_maybe_gz(path)?, path)
}

/// Parses the bytes of an IDX1 unsigned-byte label file; `path` names it in errors.
pub fn parse_idx_labels(bytes: &[u8], path: &Path) -> Result<Vec<u8>> {
    if bytes.len() < 8 || bytes[..4] != [0, 0, 8, 1] {
        return Err(bad(
            path,
            "not an IDX1 unsigned-byte file (magic expected [0, 0, 8, 1])".into(),
        ));
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if bytes.len() != 8 + n {
        return Err(bad(
            path,
            format!("header says {n} labels, file has {} bytes", bytes.len()),
        ));
    }
    Ok(bytes[8..].to_vec())
}

/// The bytes of `path`, through gzip when it starts with gzip's magic.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .read_to_end(&mut out)
        .map_err(|e| bad(path, format!("bad gzip data: {e}")))?;
    Ok(out)
}

/// Grey `pixels` (`rows * cols`, row-major) as a PNG file's bytes.
pub fn gray_png(pixels: &[u8], rows: u32, cols: u32) -> Result<Vec<u8>> {
    let img = GrayImage::from_raw(cols, rows, pixels.to_vec()).ok_or_else(|| {
        DataError::Encode(format!(
            "{} pixels are not a {rows}x{cols} image",
            pixels.len()
        ))
    })?;
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .map_err(|e| DataError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

/// The training side of an open-set split: which original classes are kept and which images
/// train, with their new labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSplit {
    /// The kept original classes, ascending; class `kept[i]` trains as label `i`.
    pub kept: Vec<u8>,
    /// `(image index, new label)` of the training images: per kept class (in `kept`'s order),
    /// its first `per_class` images in file order.
    pub chosen: Vec<(usize, i64)>,
}

/// Keeps every class of `labels` (0..=255) not in `holdout`, relabelled `0..kept.len()` in
/// the order of the original labels, and the first `per_class` images of each.
pub fn hold_out_classes(labels: &[u8], holdout: &[u8], per_class: usize) -> ClassSplit {
    let kept: Vec<u8> = (0u8..=255)
        .filter(|c| !holdout.contains(c) && labels.contains(c))
        .collect();
    let mut chosen = Vec::new();
    for (new, &old) in kept.iter().enumerate() {
        chosen.extend(
            (0..labels.len())
                .filter(|&i| labels[i] == old)
                .take(per_class)
                .map(|i| (i, new as i64)),
        );
    }
    ClassSplit { kept, chosen }
}

/// The images of the `holdout` classes (indices into `labels`), in an order shuffled by
/// `seed`: what the verification pairs are drawn from. Empty when no label is held out.
pub fn held_out_images(labels: &[u8], holdout: &[u8], seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..labels.len())
        .filter(|&i| holdout.contains(&labels[i]))
        .collect();
    // The seed of the shipped datasets/fashion_mnist pair set: keep it.
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1d8_5eed);
    order.shuffle(&mut rng);
    order
}

/// The error of [`held_out_images`] finding nothing, naming the label file.
pub fn no_held_out_images(holdout: &[u8], labels_file: &Path) -> DataError {
    DataError::Config(format!(
        "no image of the held-out classes {holdout:?} in {}",
        labels_file.display()
    ))
}
