//! Building our own pair sets from labelled images: reproducible same / different pairs, laid out
//! so that every contiguous fold holds both kinds (pair `i` is "same" when `i` is even), then
//! written in InsightFace's `.bin` layout.
//!
//! For an open-set protocol as in face verification, pass images of classes that training never
//! sees.

use std::collections::{BTreeMap, HashSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::bin_file::BinPairs;
use crate::error::{EvalError, Result};

/// One pair: indices of its two images in the caller's list, and whether they share a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// First image.
    pub a: usize,
    /// Second image.
    pub b: usize,
    /// Same class.
    pub same: bool,
}

/// Draws `pairs` distinct pairs from images with class `labels[i]`: even positions are same-class
/// pairs, odd positions different-class pairs, each drawn uniformly over classes and then over
/// images, reproducibly from `seed`.
pub fn sample_pairs(labels: &[u32], pairs: usize, seed: u64) -> Result<Vec<Pair>> {
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let classes: Vec<&Vec<usize>> = by_class.values().collect();
    let multi: Vec<&Vec<usize>> = classes.iter().copied().filter(|v| v.len() >= 2).collect();
    let need_same = pairs.div_ceil(2);
    let need_diff = pairs / 2;
    if need_same > 0 && multi.is_empty() {
        return Err(EvalError::Config(
            "no class has two images, so no same-class pair can be drawn".into(),
        ));
    }
    if need_diff > 0 && classes.len() < 2 {
        return Err(EvalError::Config(
            "fewer than two classes, so no different-class pair can be drawn".into(),
        ));
    }
    let same_avail: usize = multi.iter().map(|v| v.len() * (v.len() - 1) / 2).sum();
    let total = labels.len() * labels.len().saturating_sub(1) / 2;
    if need_same > same_avail || need_diff > total - same_avail {
        return Err(EvalError::Config(format!(
            "{pairs} distinct pairs asked for, but the images allow only {same_avail} same-class \
             and {} different-class pairs",
            total - same_avail
        )));
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::with_capacity(pairs);
    let mut out = Vec::with_capacity(pairs);
    // Rejection sampling; give up (rather than loop for ever) when distinct pairs grow rare.
    let max_tries = 1000 * pairs.max(1) + 10_000;
    let mut tries = 0;
    while out.len() < pairs {
        tries += 1;
        if tries > max_tries {
            return Err(EvalError::Config(format!(
                "could only draw {} distinct pairs of the {pairs} asked for",
                out.len()
            )));
        }
        let same = out.len() % 2 == 0;
        let (a, b) = if same {
            let class = multi[rng.random_range(0..multi.len())];
            let i = rng.random_range(0..class.len());
            let mut j = rng.random_range(0..class.len() - 1);
            if j >= i {
                j += 1;
            }
            (class[i], class[j])
        } else {
            let ca = rng.random_range(0..classes.len());
            let mut cb = rng.random_range(0..classes.len() - 1);
            if cb >= ca {
                cb += 1;
            }
            let (ca, cb) = (classes[ca], classes[cb]);
            (
                ca[rng.random_range(0..ca.len())],
                cb[rng.random_range(0..cb.len())],
            )
        };
        if seen.insert((a.min(b), a.max(b))) {
            out.push(Pair { a, b, same });
        }
    }
    Ok(out)
}

/// The `.bin` content for `pairs` over the encoded images `images` (copied, two per pair).
pub fn pairs_to_bin(images: &[Vec<u8>], pairs: &[Pair]) -> Result<BinPairs> {
    let mut out = BinPairs {
        images: Vec::with_capacity(2 * pairs.len()),
        issame: Vec::with_capacity(pairs.len()),
    };
    for (i, p) in pairs.iter().enumerate() {
        let (Some(a), Some(b)) = (images.get(p.a), images.get(p.b)) else {
            return Err(EvalError::Config(format!(
                "pair {i} names image {} or {}, but there are {} images",
                p.a,
                p.b,
                images.len()
            )));
        };
        out.images.push(a.clone());
        out.images.push(b.clone());
        out.issame.push(p.same);
    }
    Ok(out)
}
