//! Decoding and augmentation: encoded JPEG/PNG/PNM bytes -> resized (by the spec's
//! [`Resize`] policy), optionally flipped, normalised CHW `f32`.

use image::{DynamicImage, GenericImageView};

use crate::resize::Resize;

/// How samples become model input.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSpec {
    /// Model input height.
    pub height: u32,
    /// Model input width.
    pub width: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Per-channel mean subtracted from 0..255 pixel values (index 0 used for grayscale).
    pub mean: [f32; 3],
    /// Per-channel divisor after subtracting the mean.
    pub std: [f32; 3],
    /// How an image of another size or aspect ratio becomes `width x height`.
    pub resize: Resize,
}

impl Default for ImageSpec {
    /// 112x112 RGB, `(x - 127.5) / 128` (InsightFace / PLSC), squashed to size.
    fn default() -> Self {
        Self {
            height: 112,
            width: 112,
            channels: 3,
            mean: [127.5; 3],
            std: [128.0; 3],
            resize: Resize::Squash,
        }
    }
}

impl ImageSpec {
    /// Floats per image (`channels * height * width`).
    pub fn numel(&self) -> usize {
        self.channels * self.height as usize * self.width as usize
    }

    /// Checks that the sizes are positive and the channels 1 or 3; the message says what is
    /// wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.height == 0 || self.width == 0 || !matches!(self.channels, 1 | 3) {
            return Err(format!(
                "image size {}x{} with {} channels: sizes must be positive, channels 1 or 3",
                self.height, self.width, self.channels
            ));
        }
        Ok(())
    }
}

/// Decodes `bytes` and brings the image to the spec: resized by its [`Resize`] policy when the
/// size differs (bilinear), converted to RGB or grey. Returns the 8-bit pixels in HWC order
/// (`spec.numel()` bytes): what [`normalize_into`] turns into model input. Pair sets keep their
/// images in this form (a quarter of the memory of floats) and normalise batch by batch.
pub fn decode_pixels(bytes: &[u8], spec: &ImageSpec) -> Result<Vec<u8>, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    let img = spec.resize.apply(img, spec.width, spec.height);
    debug_assert_eq!(img.dimensions(), (spec.width, spec.height));
    match spec.channels {
        1 => Ok(match img {
            DynamicImage::ImageLuma8(g) => g.into_raw(),
            other => other.to_luma8().into_raw(),
        }),
        3 => Ok(match img {
            DynamicImage::ImageRgb8(c) => c.into_raw(),
            other => other.to_rgb8().into_raw(),
        }),
        c => Err(format!("channels must be 1 or 3, not {c}")),
    }
}

/// Writes the normalised CHW image of 8-bit HWC `pixels` (as [`decode_pixels`] gives them)
/// into `out` (`spec.numel()` floats): `(pixel - mean[c]) * (1 / std[c])`, mirrored
/// left-right when `flip`.
pub fn normalize_into(pixels: &[u8], spec: &ImageSpec, flip: bool, out: &mut [f32]) {
    debug_assert_eq!(pixels.len(), spec.numel());
    debug_assert_eq!(out.len(), spec.numel());
    let w = spec.width as usize;
    let plane = w * spec.height as usize;
    if spec.channels == 1 {
        let (m, s) = (spec.mean[0], 1.0 / spec.std[0]);
        for (y, row) in pixels.chunks_exact(w).enumerate() {
            let dst = &mut out[y * w..(y + 1) * w];
            for (x, &v) in row.iter().enumerate() {
                let xx = if flip { w - 1 - x } else { x };
                dst[xx] = (v as f32 - m) * s;
            }
        }
        return;
    }
    let inv = [1.0 / spec.std[0], 1.0 / spec.std[1], 1.0 / spec.std[2]];
    for (y, row) in pixels.chunks_exact(3 * w).enumerate() {
        for (x, px) in row.chunks_exact(3).enumerate() {
            let xx = if flip { w - 1 - x } else { x };
            let at = y * w + xx;
            for c in 0..3 {
                out[c * plane + at] = (px[c] as f32 - spec.mean[c]) * inv[c];
            }
        }
    }
}

/// Decodes `bytes`, resizes to the spec by its [`Resize`] policy when the size differs
/// (bilinear), flips horizontally when `flip`, and writes the normalised CHW image into `out`
/// (`spec.numel()` floats): [`decode_pixels`] then [`normalize_into`], the one image pipeline
/// of training, evaluation (plsc-eval) and the server (plsc-serve).
pub fn decode_into(
    bytes: &[u8],
    spec: &ImageSpec,
    flip: bool,
    out: &mut [f32],
) -> Result<(), String> {
    debug_assert_eq!(out.len(), spec.numel());
    let pixels = decode_pixels(bytes, spec)?;
    normalize_into(&pixels, spec, flip, out);
    Ok(())
}
