//! Partial FC class sampling.
//!
//! Each step, rank `r` uses every class of its shard that is a label in the global batch (the
//! positives) plus uniformly random other classes of its shard, `max(#positives, ceil(ratio *
//! C_r))` classes in all, drawn reproducibly from `(seed, step, rank)`. `ratio = 1` uses the
//! whole shard (exactly the full head). As in PLSC and arcface_torch, with `ratio < 1` the sampled
//! set depends on the rank count.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The classes of this rank's shard that take part in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampledClasses {
    /// Every class of the shard (`ratio = 1`).
    All { len: usize },
    /// Local class indices (0-based within the shard), sorted ascending, positives included.
    Subset(Vec<usize>),
}

impl SampledClasses {
    /// Number of classes that take part.
    pub fn len(&self) -> usize {
        match self {
            Self::All { len } => *len,
            Self::Subset(v) => v.len(),
        }
    }
    /// Whether no class takes part.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The local class index at position `pos` of the sampled set.
    #[inline]
    pub fn class_at(&self, pos: usize) -> usize {
        match self {
            Self::All { .. } => pos,
            Self::Subset(v) => v[pos],
        }
    }
    /// The position of local class `class` in the sampled set, if it takes part.
    pub fn position_of(&self, class: usize) -> Option<usize> {
        match self {
            Self::All { len } => (class < *len).then_some(class),
            Self::Subset(v) => v.binary_search(&class).ok(),
        }
    }
}

/// Mixes `(seed, step, rank)` into one generator seed (SplitMix64 finaliser on each word).
fn stream_seed(seed: u64, step: u64, rank: u64) -> u64 {
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    mix(mix(mix(seed) ^ step) ^ rank)
}

/// Number of classes a rank with `shard_len` classes and `positives` positives samples.
pub fn sample_count(shard_len: usize, positives: usize, ratio: f64) -> usize {
    let wanted = (ratio * shard_len as f64).ceil() as usize;
    wanted.max(positives).min(shard_len)
}

/// Samples the classes of one rank for one step.
///
/// `positives`: sorted, de-duplicated local indices (`< shard_len`) of the shard's classes that
/// are labels in the global batch.
pub fn sample_classes(
    shard_len: usize,
    positives: &[usize],
    ratio: f64,
    seed: u64,
    step: u64,
    rank: usize,
) -> SampledClasses {
    if ratio >= 1.0 {
        return SampledClasses::All { len: shard_len };
    }
    let count = sample_count(shard_len, positives.len(), ratio);
    let negatives_wanted = count - positives.len();
    let negatives_available = shard_len - positives.len();
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, step, rank as u64));
    // Indices into the list of non-positive classes, mapped back to class indices below.
    let mut picks =
        rand::seq::index::sample(&mut rng, negatives_available, negatives_wanted).into_vec();
    picks.sort_unstable();
    let mut out = Vec::with_capacity(count);
    let (mut pi, mut skipped) = (0usize, 0usize);
    for pick in picks {
        // The pick-th non-positive class is pick + (number of positives at or below it).
        let mut class = pick + skipped;
        while pi < positives.len() && positives[pi] <= class {
            out.push(positives[pi]);
            pi += 1;
            skipped += 1;
            class = pick + skipped;
        }
        out.push(class);
    }
    out.extend_from_slice(&positives[pi..]);
    SampledClasses::Subset(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_every_positive_right_count_sorted_and_reproducible() {
        let positives = vec![0, 3, 4, 17, 98, 99];
        for ratio in [0.01, 0.1, 0.5, 0.9] {
            let s = sample_classes(100, &positives, ratio, 5, 11, 2);
            let SampledClasses::Subset(v) = &s else {
                panic!("subset expected")
            };
            assert_eq!(v.len(), sample_count(100, positives.len(), ratio));
            assert!(v.windows(2).all(|w| w[0] < w[1]), "sorted and unique");
            assert!(v.iter().all(|&c| c < 100));
            for p in &positives {
                assert!(s.position_of(*p).is_some(), "positive {p} missing");
            }
            assert_eq!(s, sample_classes(100, &positives, ratio, 5, 11, 2));
        }
        assert_ne!(
            sample_classes(100, &positives, 0.5, 5, 11, 2),
            sample_classes(100, &positives, 0.5, 5, 12, 2)
        );
    }

    #[test]
    fn ratio_one_is_the_whole_shard() {
        assert_eq!(
            sample_classes(10, &[1], 1.0, 0, 0, 0),
            SampledClasses::All { len: 10 }
        );
        assert_eq!(sample_count(10, 3, 0.1), 3);
        assert_eq!(sample_count(10, 0, 0.25), 3);
    }

    #[test]
    fn negatives_are_uniform() {
        let mut hits = [0usize; 20];
        for step in 0..4000 {
            if let SampledClasses::Subset(v) = sample_classes(20, &[5], 0.25, 1, step, 0) {
                for c in v {
                    hits[c] += 1;
                }
            }
        }
        assert_eq!(hits[5], 4000);
        for (c, h) in hits.iter().enumerate().filter(|(c, _)| *c != 5) {
            // 4 negatives from 19 classes: expected 4000 * 4 / 19 = 842 each.
            assert!((*h as f64 - 842.1).abs() < 120.0, "class {c}: {h}");
        }
    }
}
