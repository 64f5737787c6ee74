//! Decoded pair sets: images decoded once into 8-bit pixels at the model's input size, turned into
//! normalised `f32` NCHW batches (plain or horizontally flipped) on demand.

use std::ops::Range;
use std::path::Path;

use plsc_data::Resize;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bin_file::{BinPairs, read_bin};
use crate::error::{EvalError, Result};

/// The four standard face-verification sets, by the names of their files (`<name>.bin`).
pub const STANDARD_SETS: [&str; 4] = ["lfw", "cfp_ff", "cfp_fp", "agedb_30"];

/// The model's input: height, width and channel count (3 = RGB, 1 = grey).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSpec {
    /// Height in pixels.
    pub height: usize,
    /// Width in pixels.
    pub width: usize,
    /// 3 (RGB) or 1 (grey).
    pub channels: usize,
}

impl ImageSpec {
    /// The face-recognition input: 112 x 112 RGB.
    pub const FACE_112: ImageSpec = ImageSpec {
        height: 112,
        width: 112,
        channels: 3,
    };

    fn pixels(&self) -> usize {
        self.height * self.width * self.channels
    }

    fn check(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 || !matches!(self.channels, 1 | 3) {
            return Err(EvalError::Config(format!(
                "image size {}x{} with {} channels: sizes must be positive, channels 1 or 3",
                self.height, self.width, self.channels
            )));
        }
        Ok(())
    }
}

/// Pixel normalisation `(x - mean) * scale`; the default `(x - 127.5) / 128` is InsightFace's
/// (MXNet) and PLSC's, and plsc-data's training default.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Subtracted from each 0..=255 pixel value.
    pub mean: f32,
    /// Multiplied after the subtraction.
    pub scale: f32,
}

impl Default for Normalize {
    fn default() -> Self {
        Self {
            mean: 127.5,
            scale: 1.0 / 128.0,
        }
    }
}

/// A decoded pair set.
#[derive(Debug, Clone)]
pub struct PairSet {
    /// Name used in logs and reports (e.g. `lfw`).
    pub name: String,
    /// Label of each pair.
    pub issame: Vec<bool>,
    spec: ImageSpec,
    /// Images as 8-bit HWC pixels, `spec.pixels()` bytes each.
    pixels: Vec<u8>,
}

impl PairSet {
    /// Decodes every image of `pairs` (in parallel) to `spec`: RGB or grey, squashed to the
    /// model input with a bilinear filter when its size differs ([`PairSet::decode_resized`]
    /// with [`Resize::Squash`]). `path` names the source in errors.
    pub fn decode(name: &str, pairs: &BinPairs, spec: ImageSpec, path: &Path) -> Result<Self> {
        Self::decode_resized(name, pairs, spec, Resize::Squash, path)
    }

    /// Decodes every image of `pairs` (in parallel) to `spec`: RGB or grey, brought to the model
    /// input by the `resize` policy (plsc-data's, as training and the server apply it) when its
    /// size differs. `path` names the source in errors.
    pub fn decode_resized(
        name: &str,
        pairs: &BinPairs,
        spec: ImageSpec,
        resize: Resize,
        path: &Path,
    ) -> Result<Self> {
        spec.check()?;
        let decoded: Vec<Vec<u8>> = pairs
            .images
            .par_iter()
            .enumerate()
            .map(|(index, bytes)| {
                decode_one(bytes, spec, resize).map_err(|source| EvalError::Image {
                    path: path.to_path_buf(),
                    index,
                    source,
                })
            })
            .collect::<Result<_>>()?;
        let mut pixels = Vec::with_capacity(decoded.len() * spec.pixels());
        for d in decoded {
            pixels.extend_from_slice(&d);
        }
        Ok(Self {
            name: name.to_string(),
            issame: pairs.issame.clone(),
            spec,
            pixels,
        })
    }

    /// Reads and decodes a `.bin` file, squashing images of another size to `spec`; the set is
    /// named after the file stem.
    pub fn load(path: &Path, spec: ImageSpec) -> Result<Self> {
        Self::load_resized(path, spec, Resize::Squash)
    }

    /// Reads and decodes a `.bin` file, bringing images of another size to `spec` by the
    /// `resize` policy; the set is named after the file stem.
    pub fn load_resized(path: &Path, spec: ImageSpec, resize: Resize) -> Result<Self> {
        let pairs = read_bin(path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let set = Self::decode_resized(&name, &pairs, spec, resize, path)?;
        tracing::info!(set = %set.name, pairs = set.pairs(), "loaded pair set {}", path.display());
        Ok(set)
    }

    /// Loads `<dir>/<name>.bin` for each name (e.g. [`STANDARD_SETS`]).
    pub fn load_named(dir: &Path, names: &[&str], spec: ImageSpec) -> Result<Vec<Self>> {
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
        spec.check()?;
        if pixels.len() != 2 * issame.len() * spec.pixels() {
            return Err(EvalError::PairCountMismatch {
                source_name: name.to_string(),
                images: pixels.len() / spec.pixels(),
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

    /// The input size the images were decoded to.
    pub fn spec(&self) -> ImageSpec {
        self.spec
    }

    /// Images `range` as a normalised NCHW `f32` batch, mirrored left-right when `flip` is set.
    ///
    /// # Panics
    /// If `range` reaches past [`PairSet::images`] (a caller bug, not bad input).
    pub fn batch_nchw(&self, range: Range<usize>, flip: bool, norm: Normalize) -> Vec<f32> {
        let ImageSpec {
            height: h,
            width: w,
            channels: c,
        } = self.spec;
        let per = self.spec.pixels();
        let lut: Vec<f32> = (0..=255u8)
            .map(|v| (f32::from(v) - norm.mean) * norm.scale)
            .collect();
        let mut out = vec![0.0f32; range.len() * per];
        out.par_chunks_exact_mut(per)
            .zip(self.pixels[range.start * per..range.end * per].par_chunks_exact(per))
            .for_each(|(dst, img)| {
                for (y, src_row) in img.chunks_exact(w * c).enumerate() {
                    for ch in 0..c {
                        let dst_row = &mut dst[(ch * h + y) * w..(ch * h + y + 1) * w];
                        for (x, d) in dst_row.iter_mut().enumerate() {
                            let sx = if flip { w - 1 - x } else { x };
                            *d = lut[usize::from(src_row[sx * c + ch])];
                        }
                    }
                }
            });
        out
    }
}

fn decode_one(
    bytes: &[u8],
    spec: ImageSpec,
    resize: Resize,
) -> std::result::Result<Vec<u8>, image::ImageError> {
    let img = image::load_from_memory(bytes)?;
    let img = resize.apply(img, spec.width as u32, spec.height as u32);
    Ok(if spec.channels == 3 {
        img.into_rgb8().into_raw()
    } else {
        img.into_luma8().into_raw()
    })
}
