//! `.bin` pair sets: the pickle layouts InsightFace's files use, images inside them, errors.

mod common;

use std::path::Path;

use common::{encode, pattern, py2_pickle, py3_pickle};
use image::{GrayImage, ImageFormat, RgbImage};
use plsc_data::decode::ImageSpec;
use plsc_eval::{BinPairs, EvalError, PairSet, parse_bin, read_bin, write_bin};

fn small_case() -> (Vec<Vec<u8>>, Vec<bool>) {
    (vec![b"ab".to_vec(), vec![b'c'; 300]], vec![true])
}

/// The helpers produce the bytes Python writes. `PY3_V4` is what Python 3.11 printed for
/// `pickle.dumps(([b'ab', b'c' * 300], [True]), protocol=4)`; `py2` was checked with
/// `pickle.loads(data, encoding='bytes') == ([b'ab', b'c' * 300], [True])` and `pickletools.dis`
/// in Python 3 (Python 2's own layout for `str` items: SHORT_BINSTRING / BINSTRING, BINPUT).
#[test]
fn helpers_write_pythons_bytes() {
    let (images, labels) = small_case();
    let c300 = [b'c'; 300];

    let mut py3_v4 =
        b"\x80\x04\x95B\x01\x00\x00\x00\x00\x00\x00]\x94(C\x02ab\x94B,\x01\x00\x00".to_vec();
    py3_v4.extend_from_slice(&c300);
    py3_v4.extend_from_slice(b"\x94e]\x94\x88a\x86\x94.");
    assert_eq!(py3_pickle(&images, &labels, 4), py3_v4);

    let mut py2 = b"\x80\x02]q\x00(U\x02abq\x01T,\x01\x00\x00".to_vec();
    py2.extend_from_slice(&c300);
    py2.extend_from_slice(b"q\x02e]q\x03\x88a\x86q\x04.");
    assert_eq!(py2_pickle(&images, &labels), py2);

    for data in [py3_v4, py2] {
        let read = parse_bin(&data, Path::new("small.bin")).unwrap();
        assert_eq!(read.images, images);
        assert_eq!(read.issame, labels);
    }
}

/// Python 3 with protocol 2 writes bytes as `_codecs.encode(str, 'latin1')` calls: the bytes of
/// `pickle.dumps(([b'ab', b'\\xff\\x00'], [True]), protocol=2)` as Python 3.11 printed them.
#[test]
fn reads_python3_protocol2_codecs_encoding() {
    let data = b"\x80\x02]q\x00(c_codecs\nencode\nq\x01X\x02\x00\x00\x00abq\x02X\x06\x00\x00\x00latin1q\x03\x86q\x04Rq\x05h\x01X\x03\x00\x00\x00\xc3\xbf\x00q\x06h\x03\x86q\x07Rq\x08e]q\t\x88a\x86q\n.";
    let read = parse_bin(data, Path::new("p2.bin")).unwrap();
    assert_eq!(read.images, vec![b"ab".to_vec(), vec![0xff, 0x00]]);
    assert_eq!(read.issame, vec![true]);
}

/// Frames as Python writes them for larger files. Python 3.11's
/// `pickle.dumps((imgs, [True, False, True]), protocol=4)` with
/// `imgs = [bytes([i]) * 30000 for i in range(3)] + [b'x' * 70000, b'y' * 10, b'z' * 40000]`
/// is 200077 bytes with FRAME at 2 and 160037 and BINBYTES at 14, 30020, 60026 and 90032 (the
/// 70000-byte object, outside any frame), per `pickletools.genops`.
#[test]
fn frames_like_python() {
    let mut images: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 30000]).collect();
    images.extend([vec![b'x'; 70000], vec![b'y'; 10], vec![b'z'; 40000]]);
    let labels = [true, false, true];
    let data = py3_pickle(&images, &labels, 4);
    assert_eq!(data.len(), 200_077);
    for pos in [2, 160_037] {
        assert_eq!(data[pos], 0x95, "FRAME at {pos}");
    }
    for pos in [14, 30_020, 60_026, 90_032] {
        assert_eq!(data[pos], b'B', "BINBYTES at {pos}");
    }
    let read = parse_bin(&data, Path::new("framed.bin")).unwrap();
    assert_eq!(read.images, images);
    assert_eq!(read.issame, labels);
}

/// More than 1000 items (several APPENDS batches) and more than 256 memo entries (LONG_BINPUT).
#[test]
fn reads_long_lists_in_both_layouts() {
    let images: Vec<Vec<u8>> = (0..1002u32)
        .map(|i| (0..(i % 40 + 1)).map(|k| (i + k) as u8).collect())
        .collect();
    let labels: Vec<bool> = (0..501).map(|i| i % 3 == 0).collect();
    for data in [
        py2_pickle(&images, &labels),
        py3_pickle(&images, &labels, 4),
        py3_pickle(&images, &labels, 5),
    ] {
        let read = parse_bin(&data, Path::new("long.bin")).unwrap();
        assert_eq!(
            read,
            BinPairs {
                images: images.clone(),
                issame: labels.clone()
            }
        );
    }
}

/// Six encoded images: PNG and JPEG at 112 x 112, a 56 x 56 solid PNG (resized on load) and a
/// PPM.
fn test_images() -> (Vec<RgbImage>, Vec<Vec<u8>>) {
    let mut solid = RgbImage::new(56, 56);
    solid
        .pixels_mut()
        .for_each(|p| *p = image::Rgb([200, 100, 50]));
    // JPEG is lossy: give it a smooth gradient.
    let smooth = RgbImage::from_fn(112, 112, |x, y| {
        image::Rgb([(2 * x) as u8, (2 * y) as u8, (x + y) as u8])
    });
    let raw = vec![
        pattern(112, 112, 1),
        smooth,
        pattern(112, 112, 3),
        solid,
        pattern(112, 112, 4),
        pattern(112, 112, 5),
    ];
    let formats = [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::Png,
        ImageFormat::Pnm,
        ImageFormat::Png,
    ];
    let encoded = raw
        .iter()
        .zip(formats)
        .map(|(img, f)| encode(img.clone(), f))
        .collect();
    (raw, encoded)
}

#[test]
fn bin_files_in_insightface_layouts_load_as_pair_sets() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, encoded) = test_images();
    let labels = vec![true, false, true];
    let files = [
        ("py2.bin", py2_pickle(&encoded, &labels)),
        ("py3v4.bin", py3_pickle(&encoded, &labels, 4)),
    ];
    let ours = dir.path().join("ours.bin");
    write_bin(&ours, &encoded, &labels).unwrap();
    let mut paths = vec![ours];
    for (name, data) in files {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        paths.push(p);
    }
    for path in &paths {
        let read = read_bin(path).unwrap();
        assert_eq!(read.images, encoded, "{}", path.display());
        assert_eq!(read.issame, labels);

        let set = PairSet::load(path, &ImageSpec::default()).unwrap();
        assert_eq!(set.pairs(), 3);
        assert_eq!(set.name, path.file_stem().unwrap().to_string_lossy());
        let batch = set.batch_nchw(0..6, false);
        assert_eq!(batch.len(), 6 * 3 * 112 * 112);
        let at = |n: usize, c: usize, y: usize, x: usize| batch[((n * 3 + c) * 112 + y) * 112 + x];
        let want = |v: u8| (f32::from(v) - 127.5) / 128.0;
        // Lossless formats decode exactly, channel order RGB, NCHW.
        for n in [0usize, 2, 4, 5] {
            for (y, x) in [(0, 0), (3, 100), (111, 57), (60, 111)] {
                for c in 0..3 {
                    let v = raw[n].get_pixel(x as u32, y as u32)[c];
                    assert_eq!(at(n, c, y, x), want(v), "image {n} ({c},{y},{x})");
                }
            }
        }
        // JPEG: close to the original (mean error under 4 grey levels).
        let mut err = 0.0f64;
        for y in 0..112 {
            for x in 0..112 {
                for c in 0..3 {
                    let v = raw[1].get_pixel(x as u32, y as u32)[c];
                    err += f64::from((at(1, c, y, x) - want(v)).abs() * 128.0);
                }
            }
        }
        assert!(
            err / (112.0 * 112.0 * 3.0) < 4.0,
            "JPEG mean error {}",
            err / 37632.0
        );
        // The 56 x 56 solid image was resized to 112 x 112 and stays solid.
        for (y, x) in [(0, 0), (55, 56), (111, 111)] {
            for (c, v) in [200u8, 100, 50].into_iter().enumerate() {
                assert!((at(3, c, y, x) - want(v)).abs() * 128.0 <= 1.0);
            }
        }
    }
}

#[test]
fn grey_input_and_flipped_batches() {
    let grey = GrayImage::from_fn(4, 2, |x, y| image::Luma([(x * 10 + y * 100) as u8]));
    let encoded = vec![
        encode(grey.clone(), ImageFormat::Pnm),
        encode(grey, ImageFormat::Png),
    ];
    let pairs = BinPairs {
        images: encoded,
        issame: vec![false],
    };
    // Identity normalisation: the batch shows the decoded pixel values.
    let spec = ImageSpec {
        height: 2,
        width: 4,
        channels: 1,
        mean: [0.0; 3],
        std: [1.0; 3],
        ..ImageSpec::default()
    };
    let set = PairSet::decode("grey", &pairs, &spec, Path::new("grey.bin")).unwrap();
    assert_eq!(
        set.batch_nchw(0..1, false),
        [0.0, 10.0, 20.0, 30.0, 100.0, 110.0, 120.0, 130.0]
    );
    assert_eq!(
        set.batch_nchw(1..2, true),
        [30.0, 20.0, 10.0, 0.0, 130.0, 120.0, 110.0, 100.0]
    );
}

#[test]
fn named_sets_load_from_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (_, encoded) = test_images();
    write_bin(&dir.path().join("lfw.bin"), &encoded, &[true, false, true]).unwrap();
    write_bin(
        &dir.path().join("cfp_fp.bin"),
        &encoded[..4],
        &[false, true],
    )
    .unwrap();
    let sets = PairSet::load_named(dir.path(), &["lfw", "cfp_fp"], &ImageSpec::default()).unwrap();
    assert_eq!(sets.len(), 2);
    assert_eq!((sets[0].name.as_str(), sets[0].pairs()), ("lfw", 3));
    assert_eq!(
        (sets[1].name.as_str(), sets[1].issame.clone()),
        ("cfp_fp", vec![false, true])
    );

    let err = PairSet::load_named(dir.path(), &["agedb_30"], &ImageSpec::default()).unwrap_err();
    assert!(matches!(err, EvalError::Io { .. }));
    assert!(err.to_string().contains("agedb_30.bin"), "{err}");
}

#[test]
fn corrupt_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, encoded) = test_images();
    let path = dir.path().join("broken.bin");

    // Not a pickle at all, and a pickle cut short.
    let good = py3_pickle(&encoded[..2], &[true], 4);
    for data in [
        b"definitely not a pickle".to_vec(),
        good[..good.len() / 2].to_vec(),
    ] {
        std::fs::write(&path, data).unwrap();
        let err = read_bin(&path).unwrap_err();
        assert!(matches!(err, EvalError::Pickle { .. }), "{err}");
        assert!(err.to_string().contains("broken.bin"), "{err}");
    }

    // An odd number of images.
    std::fs::write(&path, py2_pickle(&encoded[..3], &[true])).unwrap();
    let err = read_bin(&path).unwrap_err();
    assert!(
        matches!(err, EvalError::OddImageCount { images: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("broken.bin"), "{err}");

    // Labels that do not match the images.
    std::fs::write(&path, py2_pickle(&encoded[..4], &[true])).unwrap();
    let err = read_bin(&path).unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::PairCountMismatch {
                images: 4,
                labels: 1,
                ..
            }
        ),
        "{err}"
    );

    // A pickle of something else: the int 5, and labels that are ints.
    std::fs::write(&path, b"\x80\x04K\x05.").unwrap();
    let err = read_bin(&path).unwrap_err();
    assert!(matches!(err, EvalError::BinLayout { .. }), "{err}");
    assert!(err.to_string().contains("found a int"), "{err}");
    std::fs::write(&path, b"\x80\x02](U\x01aU\x01be](K\x01e\x86.").unwrap();
    let err = read_bin(&path).unwrap_err();
    assert!(err.to_string().contains("label 0 is a int"), "{err}");

    // An image that does not decode: the error names the file and the image.
    let mut images = encoded[..2].to_vec();
    images[1] = b"\x89PNG but broken".to_vec();
    write_bin(&path, &images, &[true]).unwrap();
    let err = PairSet::load(&path, &ImageSpec::default()).unwrap_err();
    assert!(matches!(err, EvalError::Image { index: 1, .. }), "{err}");
    assert!(err.to_string().contains("broken.bin: image 1"), "{err}");

    // Writing refuses an odd image count too.
    let err = write_bin(&path, &encoded[..3], &[true]).unwrap_err();
    assert!(
        matches!(err, EvalError::OddImageCount { images: 3, .. }),
        "{err}"
    );
}
