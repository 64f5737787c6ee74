//! The flip test with toy embedders.

use plsc_data::Resize;
use plsc_data::decode::ImageSpec;
use plsc_eval::{EmbedderError, EvalError, EvalOptions, PairSet, embed_with_flip, verify_pair_set};

const SPEC: ImageSpec = ImageSpec {
    height: 4,
    width: 6,
    channels: 3,
    mean: [127.5; 3],
    std: [128.0; 3],
    resize: Resize::Squash,
};

/// Embedding = [mean of the left half, mean of the right half, 1] over all channels.
fn halves(images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, EmbedderError> {
    let [n, c, h, w] = shape;
    let mut out = Vec::new();
    for img in images.chunks_exact(c * h * w).take(n) {
        let (mut left, mut right) = (0.0, 0.0);
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    let v = img[(ch * h + y) * w + x];
                    if x < w / 2 { left += v } else { right += v }
                }
            }
        }
        let half = (c * h * w / 2) as f32;
        out.extend([left / half, right / half, 1.0]);
    }
    Ok(out)
}

/// HWC pixels: white left half, black right half.
fn left_white() -> Vec<u8> {
    let mut px = Vec::new();
    for _y in 0..SPEC.height {
        for x in 0..SPEC.width {
            let v = if x < SPEC.width / 2 { 255 } else { 0 };
            px.extend([v, v, v]);
        }
    }
    px
}

#[test]
fn plain_and_flipped_embeddings_add_up() {
    let pixels: Vec<u8> = (0..6).flat_map(|_| left_white()).collect();
    let set = PairSet::from_pixels("toy", SPEC, pixels, vec![true, false, true]).unwrap();
    let mut shapes = Vec::new();
    let mut embedder = |images: &[f32], shape: [usize; 4]| {
        shapes.push(shape);
        halves(images, shape)
    };
    let options = EvalOptions {
        batch_size: 4,
        ..EvalOptions::default()
    };
    let emb = embed_with_flip(&set, &mut embedder, &options).unwrap();
    // Batches of 4 then 2, plain pass then flipped pass.
    assert_eq!(
        shapes,
        [[4, 3, 4, 6], [2, 3, 4, 6], [4, 3, 4, 6], [2, 3, 4, 6]]
    );
    assert_eq!(emb.dim, 3);
    // (255 - 127.5) / 128 = 0.99609375 on the left; (0 - 127.5) / 128 on the right.
    let a = 0.996_093_75f32;
    for i in 0..6 {
        assert_eq!(emb.plain[3 * i..3 * i + 3], [a, -a, 1.0]);
        assert_eq!(emb.flipped[3 * i..3 * i + 3], [-a, a, 1.0]);
    }
    // Summed: (0, 0, 2), normalised: (0, 0, 1).
    let combined = emb.combined_normalized();
    for i in 0..6 {
        assert_eq!(combined[3 * i..3 * i + 3], [0.0, 0.0, 1.0]);
    }
    // XNorm over all twelve raw embeddings: sqrt(2 a^2 + 1).
    let want = (2.0 * f64::from(a).powi(2) + 1.0).sqrt();
    assert!((emb.xnorm() - want).abs() < 1e-12);
}

/// Per-image quadrant colours from a hash: different pairs differ, same pairs are one image twice.
fn quadrant_image(seed: u64) -> Vec<u8> {
    let mut colours = [0u8; 12];
    let mut z = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    for c in colours.iter_mut() {
        z ^= z >> 29;
        z = z.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        *c = (z >> 56) as u8;
    }
    let mut px = Vec::new();
    for y in 0..SPEC.height {
        for x in 0..SPEC.width {
            let q = 2 * usize::from(y >= SPEC.height / 2) + usize::from(x >= SPEC.width / 2);
            px.extend_from_slice(&colours[3 * q..3 * q + 3]);
        }
    }
    px
}

/// Embedding = the image's values themselves.
fn identity(images: &[f32], _shape: [usize; 4]) -> Result<Vec<f32>, EmbedderError> {
    Ok(images.to_vec())
}

#[test]
fn end_to_end_on_separable_pairs() {
    let mut pixels = Vec::new();
    let mut issame = Vec::new();
    for p in 0..20u64 {
        let same = p % 2 == 0;
        pixels.extend(quadrant_image(2 * p));
        pixels.extend(quadrant_image(if same { 2 * p } else { 2 * p + 1 }));
        issame.push(same);
    }
    let set = PairSet::from_pixels("quadrants", SPEC, pixels, issame).unwrap();
    let options = EvalOptions {
        batch_size: 7,
        ..EvalOptions::default()
    };
    let report = verify_pair_set(&set, &mut identity, &options).unwrap();
    let m = &report.metrics;
    // Same pairs are identical images: distance 0, accepted from the second grid threshold
    // (0 < 0.01) on; different pairs are far apart. Every fold is then classified perfectly and the
    // first maximum of the training accuracy is t = 0.01.
    assert_eq!(m.fold_accuracies, vec![1.0; 10]);
    assert_eq!(m.best_thresholds, vec![0.01; 10]);
    assert_eq!((m.accuracy_mean, m.accuracy_std), (1.0, 0.0));
    // TAR: a fold's threshold lies at the smallest different-pair distance among its nine
    // training folds, so every same pair (distance 0) is accepted, and so is the one different
    // pair closer than all others, in the fold that holds it: FAR 1 there, 0 elsewhere.
    assert_eq!((m.tar_mean, m.tar_std), (1.0, 0.0));
    assert!((m.far_mean - 0.1).abs() < 1e-15, "FAR {}", m.far_mean);
    assert!(report.xnorm > 0.0);
}

#[test]
fn embedder_failures_are_named_errors() {
    let pixels: Vec<u8> = (0..4).flat_map(|_| left_white()).collect();
    let set = PairSet::from_pixels("toy", SPEC, pixels, vec![true, false]).unwrap();
    let options = EvalOptions {
        batch_size: 3,
        ..EvalOptions::default()
    };

    let mut failing = |_: &[f32], _: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        Err("out of memory".into())
    };
    let err = embed_with_flip(&set, &mut failing, &options).unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::Embedder {
                start: 0,
                end: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("out of memory"), "{err}");

    let mut short = |_: &[f32], shape: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        Ok(vec![0.5; shape[0] * 2 + 1])
    };
    let err = embed_with_flip(&set, &mut short, &options).unwrap_err();
    assert!(
        matches!(
            err,
            EvalError::EmbedderOutput {
                values: 7,
                images: 3
            }
        ),
        "{err}"
    );

    let mut nan = |_: &[f32], shape: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        Ok(vec![f32::NAN; shape[0] * 2])
    };
    let err = embed_with_flip(&set, &mut nan, &options).unwrap_err();
    assert!(matches!(err, EvalError::NonFinite { row: 0 }), "{err}");

    let zero = EvalOptions {
        batch_size: 0,
        ..EvalOptions::default()
    };
    let err = embed_with_flip(&set, &mut halves, &zero).unwrap_err();
    assert!(matches!(err, EvalError::Config(_)), "{err}");

    let err = PairSet::from_pixels("bad", SPEC, vec![0; 10], vec![true]).unwrap_err();
    assert!(matches!(err, EvalError::PairCountMismatch { .. }), "{err}");
}
