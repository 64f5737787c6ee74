//! Decoded pair sets: images decoded once into 8-bit pixels at the model's input size, turned into
//! normalised `f32` NCHW batches (plain or horizontally flipped) on demand.
//!
//! Decoding and normalisation are plsc-data's ([`plsc_data::decode::decode_pixels`] and
//! [`plsc_data::decode::normalize_into`], the halves of the training decoder `decode_into`),
//! with the model input described by plsc-data's [`ImageSpec`] (size, channels, mean and std,
//! resize policy): verification during training, `xtask eval --model` and the server see the
//! same floats for the same image file.

use std::ops::Range;
use std::path::Path;

use plsc_data::decode::{ImageSpec, decode_pixels, normalize_into};
use rayon::prelude::*;

use crate::bin_file::{BinPairs, read_bin};
use crate::error::{EvalError, Result};

/// The four standard face-verification sets, by the names of their files (`<name>.bin`).
pub const STANDARD_SETS: [&str; 4] = ["lfw", "cfp_ff", "cfp_fp", "agedb_30"];

/// A decoded pair set.
#[derive(Debug, Clone)]
pub struct PairSet {
    /// Name used in logs and reports (e.g. `lfw`).
    pub name: String,
    /// Label of each pair.
    pub issame: Vec<bool>,
    spec: ImageSpec,
    /// Images as 8-bit HWC pixels, `spec.numel()` bytes each.
    pixels: Vec<u8>,
}

impl PairSet {
    /// Decodes every image of `pairs` (in parallel) to `spec` with plsc-data's decoder: RGB or
    /// grey, brought to the model input by `spec.resize` when its size differs. `path` names
    /// the source in errors.
    pub fn decode(name: &str, pairs: &BinPairs, spec: &ImageSpec, path: &Path) -> Result<Self> {
        check(spec)?;
        let decoded: Vec<Vec<u8>> = pairs
            .images
            .par_iter()
            .enumerate()
            .map(|(index, bytes)| {
                decode_pixels(bytes, spec).map_err(|detail| EvalError::Image {
                    path: path.to_path_buf(),
                    index,
                    detail,
                })
            })
            .collect::<Result<_>>()?;
        let mut pixels = Vec::with_capacity(decoded.len() * spec.numel());
        for d in decoded {
            pixels.extend_from_slice(&d);
        }
        Ok(Self {
            name: name.to_string(),
            issame: pairs.issame.clone(),
            spec: spec.clone(),
            pixels,
        })
    }

    /// Reads and decodes a `.bin` file to `spec` (images of another size brought to it by
    /// `spec.resize`); the set is named after the file stem.
    pub fn load(path: &Path, spec: &ImageSpec) -> Result<Self> {
        let pairs = read_bin(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let set = Self::decode(&name, &pairs, spec, path)?;
        tracing::info!(set = %set.name, pairs = set.pairs(), "loaded pair set {}", path.display());
        Ok(set)
    }

    /// Loads `<dir>/<name>.bin` for each name (e.g. [`STANDARD_SETS`]).
    pub fn load_named(dir: &Path, names: &[&str], spec: &ImageSpec) -> Result<Vec<Self>> {
        names
            .iter()
            .map(|name| Self::load(&dir.join(format!("{name}.bin")), spec))
            .collect()
    }

    /// Builds a set from already decoded 8-bit HWC pixels (`2 * issame.len()` images of `spec`).
    pub fn from_pixels(
        name: &str,
        spec: ImageSpec,
        pixels: Vec<u8>,
        issame: Vec<bool>,
    ) -> Result<Self> {
        check(&spec)?;
        if pixels.len() != 2 * issame.len() * spec.numel() {
            return Err(EvalError::PairCountMismatch {
                source_name: name.to_string(),
                images: pixels.len() / spec.numel(),
                labels: issame.len(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            issame,
            spec,
            pixels,
        })
    }

    /// Number of pairs.
    pub fn pairs(&self) -> usize {
        self.issame.len()
    }

    /// Number of images (twice the pairs).
    pub fn images(&self) -> usize {
        2 * self.issame.len()
    }

    /// The model input the images were decoded to (and are normalised by).
    pub fn spec(&self) -> &ImageSpec {
        &self.spec
    }

    /// Images `range` as a normalised NCHW `f32` batch (the spec's mean and std), mirrored
    /// left-right when `flip` is set.
    ///
    /// # Panics
    /// If `range` reaches past [`PairSet::images`] (a caller bug, not bad input).
    pub fn batch_nchw(&self, range: Range<usize>, flip: bool) -> Vec<f32> {
        let per = self.spec.numel();
        let mut out = vec![0.0f32; range.len() * per];
        out.par_chunks_exact_mut(per)
            .zip(self.pixels[range.start * per..range.end * per].par_chunks_exact(per))
            .for_each(|(dst, img)| normalize_into(img, &self.spec, flip, dst));
        out
    }
}

/// The spec's own check, as this crate's configuration error.
fn check(spec: &ImageSpec) -> Result<()> {
    spec.validate().map_err(EvalError::Config)
}
