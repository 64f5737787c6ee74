//! Our own pair sets: drawing pairs from labelled images and writing them as `.bin`.

mod common;

use std::collections::HashSet;

use common::{encode, pattern};
use image::ImageFormat;
use plsc_eval::{EvalError, pairs_to_bin, read_bin, sample_pairs, write_bin};

#[test]
fn pairs_alternate_same_and_different_and_are_distinct() {
    let labels: Vec<u32> = (0..20).map(|i| i / 4).collect(); // 5 classes x 4 images
    let pairs = sample_pairs(&labels, 30, 7).unwrap();
    assert_eq!(pairs.len(), 30);
    let mut seen = HashSet::new();
    for (i, p) in pairs.iter().enumerate() {
        assert_ne!(p.a, p.b);
        assert_eq!(p.same, i % 2 == 0, "pair {i}");
        assert_eq!(labels[p.a] == labels[p.b], p.same, "pair {i}: {p:?}");
        assert!(
            seen.insert((p.a.min(p.b), p.a.max(p.b))),
            "pair {i} repeats"
        );
    }
    // Every contiguous fold of 3 pairs holds both kinds.
    for fold in pairs.chunks(3) {
        assert!(fold.iter().any(|p| p.same) && fold.iter().any(|p| !p.same));
    }
    assert_eq!(sample_pairs(&labels, 30, 7).unwrap(), pairs);
    assert_ne!(sample_pairs(&labels, 30, 8).unwrap(), pairs);
    // All 5 x 6 = 30 same-class pairs exist, so asking for 60 pairs still works.
    assert_eq!(sample_pairs(&labels, 60, 1).unwrap().len(), 60);
}

#[test]
fn impossible_requests_are_errors() {
    let distinct: Vec<u32> = (0..10).collect();
    assert!(matches!(
        sample_pairs(&distinct, 4, 0),
        Err(EvalError::Config(_))
    ));
    let one_class = vec![3u32; 10];
    assert!(matches!(
        sample_pairs(&one_class, 4, 0),
        Err(EvalError::Config(_))
    ));
    let labels: Vec<u32> = (0..6).map(|i| i / 3).collect(); // 2 classes x 3: 6 same pairs
    let err = sample_pairs(&labels, 14, 0).unwrap_err();
    assert!(err.to_string().contains("only 6 same-class"), "{err}");
}

#[test]
fn sampled_pairs_write_and_read_as_bin() {
    let labels: Vec<u32> = (0..12).map(|i| i / 3).collect();
    let images: Vec<Vec<u8>> = (0..12)
        .map(|i| encode(pattern(8, 8, i), ImageFormat::Png))
        .collect();
    let pairs = sample_pairs(&labels, 10, 3).unwrap();
    let bin = pairs_to_bin(&images, &pairs).unwrap();
    assert_eq!(bin.images.len(), 20);
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(bin.images[2 * i], images[p.a]);
        assert_eq!(bin.images[2 * i + 1], images[p.b]);
        assert_eq!(bin.issame[i], p.same);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("own.bin");
    write_bin(&path, &bin.images, &bin.issame).unwrap();
    assert_eq!(read_bin(&path).unwrap(), bin);

    let mut bad = pairs.clone();
    bad[3].b = 99;
    let err = pairs_to_bin(&images, &bad).unwrap_err();
    assert!(err.to_string().contains("pair 3"), "{err}");
}
