//! Synthetic class-conditional images: every class has its own pattern (stripe orientation
//! and frequency, colours, a blob position), every sample varies it (phase, shift,
//! brightness, noise). Deterministic in (seed, class, sample).

use std::io::Cursor;

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};
use crate::writer::{WriteOptions, WriteSummary, write_dataset};

/// Encoding of synthetic images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SynthFormat {
    /// Baseline JPEG.
    Jpeg,
    /// PNG.
    Png,
}

impl std::str::FromStr for SynthFormat {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "jpeg" | "jpg" => Ok(SynthFormat::Jpeg),
            "png" => Ok(SynthFormat::Png),
            _ => Err(DataError::Config(format!(
                "format must be jpeg or png, not {s:?}"
            ))),
        }
    }
}

/// Options of the generator.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Number of classes.
    pub classes: u64,
    /// Images per class.
    pub per_class: u64,
    /// Image side (square images).
    pub size: u32,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// Encoding.
    pub format: SynthFormat,
    /// JPEG quality (1..=100).
    pub quality: u8,
    /// Seed of the variation.
    pub seed: u64,
}

impl Default for SynthOptions {
    fn default() -> Self {
        Self {
            classes: 10,
            per_class: 10,
            size: 112,
            channels: 3,
            format: SynthFormat::Jpeg,
            quality: 90,
            seed: 0,
        }
    }
}

struct ClassPattern {
    angle: f32,
    freq: f32,
    phase: f32,
    base: [f32; 3],
    amp: [f32; 3],
    blob: (f32, f32, f32),
    blob_col: [f32; 3],
}

fn class_pattern(class: u64) -> ClassPattern {
    // The class pattern depends on the class only, never on the seed.
    let mut r = ChaCha8Rng::seed_from_u64(class.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xc1a55);
    ClassPattern {
        angle: r.random_range(0.0..std::f32::consts::PI),
        freq: r.random_range(1.5..7.0),
        phase: r.random_range(0.0..std::f32::consts::TAU),
        base: [0; 3].map(|_| r.random_range(60.0..190.0)),
        amp: [0; 3].map(|_| r.random_range(20.0..60.0)),
        blob: (
            r.random_range(0.25..0.75),
            r.random_range(0.25..0.75),
            r.random_range(0.08..0.2),
        ),
        blob_col: [0; 3].map(|_| r.random_range(-80.0..80.0)),
    }
}

/// Renders sample `sample` of `class` and encodes it.
pub fn synth_image(opts: &SynthOptions, class: u64, sample: u64) -> Result<Vec<u8>> {
    let p = class_pattern(class);
    let mut r = ChaCha8Rng::seed_from_u64(
        opts.seed
            ^ class.wrapping_mul(0xa076_1d64_78bd_642f)
            ^ sample.wrapping_mul(0xe703_7ed1_a0b4_28db),
    );
    let phase: f32 = p.phase + r.random_range(-0.4..0.4);
    let (dx, dy): (f32, f32) = (r.random_range(-0.03..0.03), r.random_range(-0.03..0.03));
    let bright: f32 = r.random_range(-15.0..15.0);
    let n = opts.size as f32;
    let (s, c) = p.angle.sin_cos();
    let mut px = vec![0u8; (opts.size * opts.size) as usize * opts.channels];
    for y in 0..opts.size {
        for x in 0..opts.size {
            let (u, v) = (x as f32 / n - dx, y as f32 / n - dy);
            let wave = (std::f32::consts::TAU * p.freq * (u * c + v * s) + phase).sin();
            let (bx, by, br) = p.blob;
            let d2 = ((u - bx).powi(2) + (v - by).powi(2)) / (br * br);
            let blob = (-d2).exp();
            let at = ((y * opts.size + x) as usize) * opts.channels;
            for ch in 0..opts.channels {
                let noise: f32 = r.random_range(-8.0..8.0);
                let val = p.base[ch] + p.amp[ch] * wave + p.blob_col[ch] * blob + bright + noise;
                px[at + ch] = val.clamp(0.0, 255.0) as u8;
            }
        }
    }
    let img = if opts.channels == 1 {
        DynamicImage::ImageLuma8(
            GrayImage::from_raw(opts.size, opts.size, px).expect("buffer sized for the image"),
        )
    } else {
        DynamicImage::ImageRgb8(
            RgbImage::from_raw(opts.size, opts.size, px).expect("buffer sized for the image"),
        )
    };
    let mut out = Cursor::new(Vec::new());
    match opts.format {
        SynthFormat::Png => img
            .write_to(&mut out, ImageFormat::Png)
            .map_err(|e| DataError::Encode(e.to_string()))?,
        SynthFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, opts.quality);
            img.write_with_encoder(enc)
                .map_err(|e| DataError::Encode(e.to_string()))?
        }
    }
    Ok(out.into_inner())
}

/// Writes `classes * per_class` synthetic images (labels = class ids) as a data folder.
pub fn synth(opts: &SynthOptions, write: &WriteOptions) -> Result<WriteSummary> {
    if opts.classes == 0 || opts.per_class == 0 || opts.size == 0 {
        return Err(DataError::Config(
            "classes, per-class and size must be positive".into(),
        ));
    }
    if !matches!(opts.channels, 1 | 3) {
        return Err(DataError::Config(format!(
            "channels must be 1 or 3, not {}",
            opts.channels
        )));
    }
    let n = opts.classes * opts.per_class;
    write_dataset(
        write,
        n as usize,
        |i| {
            let (class, sample) = (i as u64 / opts.per_class, i as u64 % opts.per_class);
            Ok((synth_image(opts, class, sample)?, class as i64))
        },
        &[],
        &[],
    )
}
