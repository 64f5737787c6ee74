//! Shared test helpers: tiny encoded images.
#![allow(dead_code)]

use std::io::Cursor;

/// A binary PGM (P5) of `w x h` with pixel values from `f(x, y)`.
pub fn pgm(w: u32, h: u32, f: impl Fn(u32, u32) -> u8) -> Vec<u8> {
    let mut out = format!("P5\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            out.push(f(x, y));
        }
    }
    out
}

/// A PNG of `w x h` RGB with pixel `(r, g, b)` from `f(x, y)`.
pub fn png_rgb(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb(f(x, y)));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}
