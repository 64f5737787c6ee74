//! Our own pair sets: plsc-data's builder, written as `.bin` by this crate and read back; and
//! evaluation bringing non-square images to the model input by plsc-data's resize policy.

mod common;

use common::{encode, pattern};
use image::ImageFormat;
use plsc_data::decode::ImageSpec;
use plsc_data::pairs::{gather_images, sample_pairs};
use plsc_eval::{BinPairs, PairSet, Resize, read_bin, write_bin};

#[test]
fn built_pairs_write_and_read_as_bin() {
    let labels: Vec<u32> = (0..12).map(|i| i / 3).collect();
    let images: Vec<Vec<u8>> = (0..12)
        .map(|i| encode(pattern(8, 8, i), ImageFormat::Png))
        .collect();
    let pairs = sample_pairs(&labels, 10, 3, std::path::Path::new("test")).unwrap();
    let set = gather_images(&pairs, |i| Ok(images[i].clone()), false).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.bin");
    write_bin(&path, &set.images, &set.issame).unwrap();
    assert_eq!(
        read_bin(&path).unwrap(),
        BinPairs {
            images: set.images,
            issame: set.issame
        }
    );
}

#[test]
fn evaluation_applies_the_resize_policy_of_plsc_data() {
    // A 6x4 image (wider than tall) into an 4x4 model input.
    let img = encode(pattern(6, 4, 1), ImageFormat::Png);
    let pairs = BinPairs {
        images: vec![img.clone(), img.clone()],
        issame: vec![true],
    };
    // Identity normalisation: the batch shows the decoded pixel values.
    let spec = ImageSpec {
        height: 4,
        width: 4,
        channels: 3,
        mean: [0.0; 3],
        std: [1.0; 3],
        ..ImageSpec::default()
    };
    let mut seen = Vec::new();
    for policy in Resize::ALL {
        let spec = ImageSpec {
            resize: policy,
            ..spec.clone()
        };
        let set = PairSet::decode("t", &pairs, &spec, std::path::Path::new("t.bin")).unwrap();
        let got = set.batch_nchw(0..1, false);
        let want = policy
            .apply(image::load_from_memory(&img).unwrap(), 4, 4)
            .to_rgb8();
        for (i, px) in want.pixels().enumerate() {
            for c in 0..3 {
                assert_eq!(got[c * 16 + i], f32::from(px.0[c]), "{policy} pixel {i}");
            }
        }
        seen.push(got);
    }
    // The three policies give three different inputs, and the default is squash.
    assert_ne!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2]);
    assert_ne!(seen[0], seen[2]);
    assert_eq!(spec.resize, Resize::Squash);
    let squash = PairSet::decode("t", &pairs, &spec, std::path::Path::new("t.bin")).unwrap();
    assert_eq!(squash.batch_nchw(0..1, false), seen[0]);
}
