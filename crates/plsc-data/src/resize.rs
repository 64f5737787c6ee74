//! The aspect-ratio policy: how an image of any size becomes the model's `width x height`.
//!
//! One policy, one implementation, shared by the training decoder ([`crate::decode`]), the
//! importers (`data import-folder --size`), the pair-set builder ([`crate::pairs`]), evaluation
//! (plsc-eval) and the server (plsc-serve, from `model.json`).
//!
//! - [`Resize::Squash`] (the default, and the behaviour before the policy existed): resize to the
//!   target size, ignoring the aspect ratio.
//! - [`Resize::Pad`]: scale to fit inside the target keeping the aspect ratio, centre, and fill
//!   the rest with [`PAD_VALUE`] (black; transparent for images with an alpha channel, which is
//!   black once converted to RGB or grey).
//! - [`Resize::CenterCrop`]: scale so that the image covers the target keeping the aspect ratio
//!   (the short side, for a square target, becomes the target side), then cut out the centre.
//!
//! Every policy resizes with the same filter, bilinear ([`FilterType::Triangle`]), and leaves an
//! image that already has the target size untouched. Where the centring cannot be exact (an odd
//! number of spare pixels), the extra pixel goes to the right or bottom.

use std::fmt;
use std::str::FromStr;

use image::DynamicImage;
use image::imageops::FilterType;
use serde::{Deserialize, Serialize};

/// The filter of every resize: bilinear.
pub const FILTER: FilterType = FilterType::Triangle;

/// Value of the padding pixels of [`Resize::Pad`], on the 0..=255 scale, in every channel.
pub const PAD_VALUE: u8 = 0;

/// How an image whose aspect ratio differs from the model input's becomes the model input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resize {
    /// Resize to the target size, ignoring the aspect ratio (the default).
    #[default]
    Squash,
    /// Fit inside the target keeping the aspect ratio; pad the rest with [`PAD_VALUE`].
    Pad,
    /// Cover the target keeping the aspect ratio; cut out the centre.
    CenterCrop,
}

impl Resize {
    /// Every policy, in the order the help lists them.
    pub const ALL: [Resize; 3] = [Resize::Squash, Resize::Pad, Resize::CenterCrop];

    /// The name used on the command line and in `model.json` (`squash`, `pad`, `center-crop`).
    pub fn name(self) -> &'static str {
        match self {
            Resize::Squash => "squash",
            Resize::Pad => "pad",
            Resize::CenterCrop => "center-crop",
        }
    }

    /// Applies the policy: `img` as a `width x height` image (of the same colour type).
    pub fn apply(self, img: DynamicImage, width: u32, height: u32) -> DynamicImage {
        let (w, h) = (img.width(), img.height());
        if (w, h) == (width, height) {
            return img;
        }
        if w == 0 || h == 0 || width == 0 || height == 0 {
            // No aspect ratio to keep (decoders do not produce such images).
            return img.resize_exact(width, height, FILTER);
        }
        match self {
            Resize::Squash => img.resize_exact(width, height, FILTER),
            Resize::Pad => {
                let (sw, sh) = scaled(w, h, width, height, false);
                let inner = if (sw, sh) == (w, h) {
                    img
                } else {
                    img.resize_exact(sw, sh, FILTER)
                };
                let mut canvas = DynamicImage::new(width, height, inner.color());
                if PAD_VALUE != 0 {
                    fill(&mut canvas, PAD_VALUE);
                }
                let (x, y) = ((width - sw) / 2, (height - sh) / 2);
                image::imageops::replace(&mut canvas, &inner, i64::from(x), i64::from(y));
                canvas
            }
            Resize::CenterCrop => {
                let (sw, sh) = scaled(w, h, width, height, true);
                let outer = if (sw, sh) == (w, h) {
                    img
                } else {
                    img.resize_exact(sw, sh, FILTER)
                };
                outer.crop_imm((sw - width) / 2, (sh - height) / 2, width, height)
            }
        }
    }
}

/// A fixed size that tools store images at (`--size` of `data import-folder` and
/// `data make-pairs`), reached by `policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResizeTo {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// How the aspect ratio is handled.
    pub policy: Resize,
}

impl ResizeTo {
    /// A square `side x side` target.
    pub fn square(side: u32, policy: Resize) -> Self {
        Self {
            width: side,
            height: side,
            policy,
        }
    }

    /// Decodes `bytes`; returns them unchanged when the image already has the target size,
    /// otherwise the image resized by the policy and encoded as PNG (lossless: the stored pixels
    /// are exactly the policy's).
    pub fn apply_encoded(&self, bytes: Vec<u8>) -> Result<Vec<u8>, image::ImageError> {
        let img = image::load_from_memory(&bytes)?;
        if (img.width(), img.height()) == (self.width, self.height) {
            return Ok(bytes);
        }
        let img = self.policy.apply(img, self.width, self.height);
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)?;
        Ok(out.into_inner())
    }
}

/// Sets every sample of `img` to `value` (8-bit images; other depths are left at zero).
fn fill(img: &mut DynamicImage, value: u8) {
    match img {
        DynamicImage::ImageLuma8(b) => b.fill(value),
        DynamicImage::ImageLumaA8(b) => b.fill(value),
        DynamicImage::ImageRgb8(b) => b.fill(value),
        DynamicImage::ImageRgba8(b) => b.fill(value),
        _ => {}
    }
}

/// The size `w x h` scales to, keeping its aspect ratio, so that it fits inside (`cover ==
/// false`) or covers (`cover == true`) `tw x th`: one side equals the target's, the other is
/// rounded to the nearest pixel (and kept inside, or outside, the target).
fn scaled(w: u32, h: u32, tw: u32, th: u32, cover: bool) -> (u32, u32) {
    let (w, h, tw, th) = (u64::from(w), u64::from(h), u64::from(tw), u64::from(th));
    // Rounded `a * b / c`.
    let mul_div = |a: u64, b: u64, c: u64| (2 * a * b + c) / (2 * c);
    // Whether the image is at least as wide (relative to its height) as the target.
    let wider = w * th >= h * tw;
    let (sw, sh) = if wider != cover {
        // Width-limited: the width becomes the target's.
        (
            tw,
            mul_div(h, tw, w).clamp(1, if cover { u64::MAX } else { th }),
        )
    } else {
        (
            mul_div(w, th, h).clamp(1, if cover { u64::MAX } else { tw }),
            th,
        )
    };
    let (sw, sh) = if cover {
        (sw.max(tw), sh.max(th))
    } else {
        (sw, sh)
    };
    (
        u32::try_from(sw).unwrap_or(u32::MAX),
        u32::try_from(sh).unwrap_or(u32::MAX),
    )
}

impl fmt::Display for Resize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Resize {
    type Err = String;

    /// Parses `squash`, `pad` or `center-crop` (`center_crop` and `centercrop` accepted).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "squash" => Ok(Resize::Squash),
            "pad" => Ok(Resize::Pad),
            "center-crop" | "centercrop" => Ok(Resize::CenterCrop),
            other => Err(format!(
                "unknown resize policy `{other}`: use squash, pad or center-crop"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaled_sizes_fit_inside_or_cover_the_target() {
        // A 4x2 image into 2x2: fit gives 2x1, cover 4x2 (no resize).
        assert_eq!(scaled(4, 2, 2, 2, false), (2, 1));
        assert_eq!(scaled(4, 2, 2, 2, true), (4, 2));
        // Tall images, and rounding to the nearest pixel.
        assert_eq!(scaled(3, 10, 112, 112, false), (34, 112));
        assert_eq!(scaled(3, 10, 112, 112, true), (112, 373));
        // A thin sliver never scales to zero pixels.
        assert_eq!(scaled(1000, 1, 10, 10, false), (10, 1));
    }

    #[test]
    fn names_round_trip_through_parse_and_serde() {
        for r in Resize::ALL {
            assert_eq!(r.name().parse::<Resize>().unwrap(), r);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
        assert_eq!("center_crop".parse::<Resize>(), Ok(Resize::CenterCrop));
        let err = "stretch".parse::<Resize>().unwrap_err();
        assert!(err.contains("squash, pad or center-crop"), "{err}");
    }
}
