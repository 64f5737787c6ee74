//! IDX files (plain and gzip) and the class hold-out of `xtask import-idx`.

use std::io::Write;
use std::path::Path;

use plsc_data::DataError;
use plsc_data::idx::{
    ClassSplit, held_out_images, hold_out_classes, parse_idx_images, read_idx_images,
    read_idx_labels,
};

fn idx3(images: &[Vec<u8>], rows: u32, cols: u32) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 3];
    for v in [images.len() as u32, rows, cols] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for img in images {
        out.extend_from_slice(img);
    }
    out
}

fn idx1(labels: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, 1];
    out.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    out.extend_from_slice(labels);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[test]
fn images_and_labels_read_plain_and_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let images: Vec<Vec<u8>> = (0..3u8)
        .map(|i| (0..6).map(|p| i * 10 + p).collect())
        .collect();
    let labels = [4u8, 0, 9];
    for (name, wrap) in [("plain", false), ("gz", true)] {
        let (ip, lp) = (
            dir.path().join(format!("{name}-images")),
            dir.path().join(format!("{name}-labels")),
        );
        let (i, l) = (idx3(&images, 2, 3), idx1(&labels));
        std::fs::write(&ip, if wrap { gzip(&i) } else { i }).unwrap();
        std::fs::write(&lp, if wrap { gzip(&l) } else { l }).unwrap();
        let read = read_idx_images(&ip).unwrap();
        assert_eq!((read.rows, read.cols), (2, 3), "{name}");
        assert_eq!(read.images, images, "{name}");
        assert_eq!(read_idx_labels(&lp).unwrap(), labels, "{name}");
        // PNG of image 1: decodes back to its pixels, 3 wide and 2 high.
        let png = image::load_from_memory(&read.png(1).unwrap())
            .unwrap()
            .to_luma8();
        assert_eq!(png.dimensions(), (3, 2));
        assert_eq!(png.into_raw(), images[1]);
    }
}

#[test]
fn malformed_files_are_named_errors() {
    let p = Path::new("bad-images");
    let good = idx3(&[vec![1; 4], vec![2; 4]], 2, 2);
    // Wrong magic (a label file given as images), and a file cut short.
    for (bytes, says) in [
        (idx1(&[1, 2]), "not an IDX3"),
        (
            good[..good.len() - 1].to_vec(),
            "header says 2 images of 2x2",
        ),
    ] {
        let err = parse_idx_images(&bytes, p).unwrap_err();
        assert!(matches!(err, DataError::Idx { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("bad-images") && msg.contains(says), "{msg}");
    }
    let dir = tempfile::tempdir().unwrap();
    let labels = dir.path().join("labels.gz");
    std::fs::write(&labels, [0x1f, 0x8b, 1, 2, 3]).unwrap();
    let msg = read_idx_labels(&labels).unwrap_err().to_string();
    assert!(
        msg.contains("labels.gz") && msg.contains("bad gzip"),
        "{msg}"
    );
    let missing = dir.path().join("missing");
    let err = read_idx_labels(&missing).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err}");
}

#[test]
fn held_out_classes_leave_training_and_make_the_pairs() {
    let labels = [3u8, 0, 3, 1, 0, 3, 2, 0];
    let ClassSplit { kept, chosen } = hold_out_classes(&labels, &[1, 2], 2);
    // Classes 0 and 3 stay, relabelled 0 and 1; the first two images of each.
    assert_eq!(kept, [0, 3]);
    assert_eq!(chosen, [(1, 0), (4, 0), (0, 1), (2, 1)]);

    let order = held_out_images(&labels, &[1, 2], 7);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, [3, 6]);
    assert_eq!(order, held_out_images(&labels, &[1, 2], 7), "seeded");
    assert!(held_out_images(&labels, &[9], 7).is_empty());
}
