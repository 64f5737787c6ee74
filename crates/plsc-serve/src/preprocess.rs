//! Request images -> model input: base64 -> bytes -> decoded, resized, converted and
//! normalised CHW `f32`, with plsc-data's training decoder (`decode_into`), so that the server
//! sees exactly what training and evaluation see.

use std::io::Cursor;

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use plsc_data::decode::{ImageSpec, decode_into};

use crate::error::{Result, ServeError};

/// Standard base64, padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes one base64 string, after dropping a `data:<type>;base64,` prefix and ASCII
/// whitespace (line breaks of wrapped base64). `index` names the image in errors.
pub fn decode_base64(text: &str, index: usize) -> Result<Vec<u8>> {
    let body = match text.strip_prefix("data:") {
        Some(rest) => rest.split_once(',').map(|(_, b)| b).unwrap_or(rest),
        None => text,
    };
    let decoded = if body.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = body.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        BASE64.decode(compact)
    } else {
        BASE64.decode(body)
    };
    let bytes = decoded.map_err(|e| ServeError::BadImage {
        index,
        detail: format!("invalid base64: {e}"),
    })?;
    if bytes.is_empty() {
        return Err(ServeError::BadImage {
            index,
            detail: "empty image".into(),
        });
    }
    Ok(bytes)
}

/// Appends the model input of one encoded image (and, with `flip`, of its mirror image) to
/// `out`. Images of any size and of 1 to 4 channels are accepted; their header is read first,
/// and images over `max_pixels` are refused before any pixel is decoded.
pub fn push_image(
    bytes: &[u8],
    index: usize,
    spec: &ImageSpec,
    flip: bool,
    max_pixels: u64,
    out: &mut Vec<f32>,
) -> Result<()> {
    let bad = |detail: String| ServeError::BadImage { index, detail };
    let reader = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("reading the image header: {e}")))?;
    if reader.format().is_none() {
        return Err(bad(
            "not an image (the bytes are not JPEG, PNG or PNM)".into()
        ));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| bad(format!("not a readable image: {e}")))?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(bad(format!("image is {w}x{h} pixels")));
    }
    if pixels > max_pixels {
        return Err(bad(format!(
            "image is {w}x{h} = {pixels} pixels, more than the limit of {max_pixels}"
        )));
    }
    let numel = spec.numel();
    let start = out.len();
    out.resize(start + numel, 0.0);
    if let Err(e) = decode_into(bytes, spec, false, &mut out[start..]) {
        out.truncate(start);
        return Err(bad(format!("not a decodable image: {e}")));
    }
    if flip {
        // The mirror image: every row reversed (what `decode_into(.., flip = true, ..)` gives,
        // without decoding twice).
        out.extend_from_within(start..start + numel);
        let width = spec.width as usize;
        for row in out[start + numel..].chunks_exact_mut(width) {
            row.reverse();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| Rgb([(x * 20) as u8, (y * 30) as u8, 7]));
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(img)
            .write_to(&mut out, ImageFormat::Png)
            .unwrap();
        out.into_inner()
    }

    fn spec() -> ImageSpec {
        ImageSpec {
            height: 8,
            width: 8,
            channels: 3,
            mean: [127.5; 3],
            std: [128.0; 3],
            ..ImageSpec::default()
        }
    }

    #[test]
    fn base64_accepts_padding_variants_data_urls_and_line_breaks() {
        let bytes = png(5, 4);
        let plain = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let unpadded = plain.trim_end_matches('=').to_string();
        let wrapped: String = plain
            .as_bytes()
            .chunks(20)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\r\n");
        let url = format!("data:image/png;base64,{plain}");
        for text in [&plain, &unpadded, &wrapped, &url] {
            assert_eq!(decode_base64(text, 0).unwrap(), bytes, "{text}");
        }
        let err = decode_base64("ab$d", 3).unwrap_err();
        assert!(
            matches!(err, ServeError::BadImage { index: 3, .. }),
            "{err}"
        );
        assert!(
            decode_base64("", 0)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
    }

    #[test]
    fn flip_rows_equal_the_training_decoders_mirror_image() {
        let bytes = png(11, 9);
        let spec = spec();
        let mut out = Vec::new();
        push_image(&bytes, 0, &spec, true, 1 << 20, &mut out).unwrap();
        let mut plain = vec![0.0; spec.numel()];
        let mut mirror = vec![0.0; spec.numel()];
        decode_into(&bytes, &spec, false, &mut plain).unwrap();
        decode_into(&bytes, &spec, true, &mut mirror).unwrap();
        assert_eq!(out.len(), 2 * spec.numel());
        assert_eq!(&out[..spec.numel()], &plain[..]);
        assert_eq!(&out[spec.numel()..], &mirror[..]);
    }

    #[test]
    fn images_over_the_pixel_limit_are_refused_before_decoding() {
        let spec = spec();
        let mut out = vec![1.0];
        let err = push_image(&png(40, 30), 2, &spec, false, 1199, &mut out).unwrap_err();
        assert!(err.to_string().contains("40x30 = 1200 pixels"), "{err}");
        assert_eq!(out, [1.0], "nothing appended");
        push_image(&png(40, 30), 2, &spec, false, 1200, &mut out).unwrap();
        assert_eq!(out.len(), 1 + spec.numel());
    }
}
