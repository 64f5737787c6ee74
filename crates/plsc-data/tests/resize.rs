//! The aspect-ratio policy on a small non-square image with known colours, directly and through
//! the training decoder.

mod common;

use plsc_data::Resize;
use plsc_data::decode::{ImageSpec, decode_into};
use plsc_data::resize::PAD_VALUE;

const R: [u8; 3] = [255, 0, 0];
const B: [u8; 3] = [0, 0, 255];

/// 4 wide, 2 tall: columns red, red, blue, blue; both rows alike.
fn four_by_two() -> image::DynamicImage {
    let img = image::RgbImage::from_fn(4, 2, |x, _| image::Rgb(if x < 2 { R } else { B }));
    image::DynamicImage::ImageRgb8(img)
}

/// The rows of an RGB image as lists of pixels.
fn rows(img: &image::DynamicImage) -> Vec<Vec<[u8; 3]>> {
    let rgb = img.to_rgb8();
    (0..rgb.height())
        .map(|y| (0..rgb.width()).map(|x| rgb.get_pixel(x, y).0).collect())
        .collect()
}

#[test]
fn each_policy_gives_the_expected_pixels_on_a_4x2_image() {
    let black = [PAD_VALUE; 3];
    let content = vec![R, R, B, B];

    // squash: the 4x2 image stretched to 4x4, every row the original row.
    let squash = Resize::Squash.apply(four_by_two(), 4, 4);
    assert_eq!(rows(&squash), vec![content.clone(); 4]);

    // pad: no scaling needed (4 wide fits), centred vertically, one padding row above and below.
    let pad = Resize::Pad.apply(four_by_two(), 4, 4);
    assert_eq!(
        rows(&pad),
        vec![
            vec![black; 4],
            content.clone(),
            content.clone(),
            vec![black; 4]
        ]
    );

    // center-crop: the short side 2 -> 4 (image 8x4), then the centre 4 columns: bilinear
    // upscaling puts output column x at input x' = (x + 0.5) / 2 - 0.5, so columns 2..6 of the
    // 8 sit at 0.75, 1.25, 1.75, 2.25 between the input's R, R | B, B: R, 3:1 R:B, 1:3 R:B, B.
    let crop = Resize::CenterCrop.apply(four_by_two(), 4, 4);
    let mix = |r: f32| {
        [
            (255.0 * r).round() as u8,
            0,
            (255.0 * (1.0 - r)).round() as u8,
        ]
    };
    assert_eq!(rows(&crop), vec![vec![R, mix(0.75), mix(0.25), B]; 4]);

    // Into a 2x2 target: crop takes the centre columns unscaled; pad halves the image (2x1) and
    // pads the row below.
    assert_eq!(
        rows(&Resize::CenterCrop.apply(four_by_two(), 2, 2)),
        vec![vec![R, B]; 2]
    );
    let pad = rows(&Resize::Pad.apply(four_by_two(), 2, 2));
    assert_eq!(pad[1], vec![black; 2]);
    assert!(
        pad[0][0][0] > pad[0][0][2] && pad[0][1][2] > pad[0][1][0],
        "{pad:?}"
    );

    // A tall image pads left and right instead.
    let tall = Resize::Pad.apply(
        image::DynamicImage::ImageRgb8(four_by_two().to_rgb8()).rotate90(),
        4,
        4,
    );
    let tall = rows(&tall);
    for row in &tall {
        assert_eq!((row[0], row[3]), (black, black), "{tall:?}");
    }
}

#[test]
fn an_image_of_the_target_size_is_left_as_it_is_by_every_policy() {
    for policy in Resize::ALL {
        let img = policy.apply(four_by_two(), 4, 2);
        assert_eq!(rows(&img), rows(&four_by_two()), "{policy}");
    }
}

#[test]
fn the_training_decoder_applies_the_specs_policy() {
    let png = common::png_rgb(4, 2, |x, _| if x < 2 { R } else { B });
    let spec = |resize| ImageSpec {
        height: 4,
        width: 4,
        channels: 3,
        mean: [0.0; 3],
        std: [1.0; 3],
        resize,
    };
    for policy in Resize::ALL {
        let spec = spec(policy);
        let mut out = vec![0f32; spec.numel()];
        decode_into(&png, &spec, false, &mut out).unwrap();
        let want = policy.apply(four_by_two(), 4, 4).to_rgb8();
        // CHW planes against the HWC pixels of the policy.
        for (i, px) in want.pixels().enumerate() {
            for c in 0..3 {
                assert_eq!(out[c * 16 + i], f32::from(px.0[c]), "{policy} pixel {i}");
            }
        }
    }
    assert_eq!(ImageSpec::default().resize, Resize::Squash);
}
