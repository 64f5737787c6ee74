//! Verification pair sets from labelled images: `N` pairs, half genuine (two images of one
//! identity) and half impostor (images of two identities), reproducible from a seed, laid out so
//! that every contiguous fold of a 10-fold evaluation holds both kinds (pair `i` is genuine when
//! `i` is even).
//!
//! One builder serves `data make-pairs` (a folder of identities, [`make_pairs`]) and
//! `import-idx` (Fashion-MNIST's held-out classes, [`sample_pairs`] + [`gather_images`]). The
//! result, [`PairImages`], is the content of an InsightFace `.bin` (a pickle of the list of
//! encoded images and the list of bools), which plsc-eval writes (`plsc_eval::write_bin`).
//!
//! For an open-set protocol as in face verification, use identities that training never sees.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::folder::{Skipped, scan_class_folder};
use crate::import::read_image_file;
use crate::resize::ResizeTo;

/// One pair: indices of its two images in the caller's list, and whether they share a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pair {
    /// First image.
    pub a: usize,
    /// Second image.
    pub b: usize,
    /// Same class (a genuine pair).
    pub same: bool,
}

/// The images and labels of a pair set: pair `i` is `images[2i]`, `images[2i + 1]`, genuine when
/// `issame[i]`. What an InsightFace `.bin` holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairImages {
    /// Encoded images, two per pair.
    pub images: Vec<Vec<u8>>,
    /// Whether each pair shows one identity.
    pub issame: Vec<bool>,
}

impl PairImages {
    /// Genuine pairs.
    pub fn genuine(&self) -> usize {
        self.issame.iter().filter(|&&s| s).count()
    }

    /// Impostor pairs.
    pub fn impostor(&self) -> usize {
        self.issame.len() - self.genuine()
    }
}

/// Draws `pairs` distinct pairs from images with class `labels[i]`: `ceil(pairs / 2)` genuine
/// pairs at even positions and `floor(pairs / 2)` impostor pairs at odd positions. A genuine
/// pair draws a class with two or more images, then two of its images; an impostor pair draws
/// two classes, then one image of each (so identities with one image serve only impostor
/// pairs). Reproducible from `seed` (ChaCha8). `from` names the images' source in errors.
pub fn sample_pairs(labels: &[u32], pairs: usize, seed: u64, from: &Path) -> Result<Vec<Pair>> {
    if pairs < 2 {
        return Err(DataError::Config(format!(
            "{}: {pairs} pairs asked for; a pair set needs at least 2 (one genuine, one impostor)",
            from.display()
        )));
    }
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_class.entry(l).or_default().push(i);
    }
    let classes: Vec<&Vec<usize>> = by_class.values().collect();
    let multi: Vec<&Vec<usize>> = classes.iter().copied().filter(|v| v.len() >= 2).collect();
    let need_same = pairs.div_ceil(2);
    let need_diff = pairs / 2;
    let same_avail: usize = multi.iter().map(|v| v.len() * (v.len() - 1) / 2).sum();
    let total = labels.len() * labels.len().saturating_sub(1) / 2;
    if need_same > same_avail {
        return Err(DataError::TooFewGenuinePairs {
            from: from.to_path_buf(),
            pairs,
            needed: need_same,
            available: same_avail,
            identities: multi.len(),
        });
    }
    if need_diff > total - same_avail {
        return Err(DataError::TooFewImpostorPairs {
            from: from.to_path_buf(),
            pairs,
            needed: need_diff,
            available: total - same_avail,
            identities: classes.len(),
        });
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::with_capacity(pairs);
    let mut out = Vec::with_capacity(pairs);
    // Rejection sampling; give up (rather than loop for ever) when distinct pairs grow rare.
    let max_tries = 1000 * pairs + 10_000;
    let mut tries = 0;
    while out.len() < pairs {
        tries += 1;
        if tries > max_tries {
            return Err(DataError::PairSampling {
                from: from.to_path_buf(),
                drawn: out.len(),
                pairs,
            });
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

/// The pair set's images: `load(i)` gives the encoded image `i`, called once per distinct image
/// (in parallel), then copied into the pairs' order.
pub fn gather_images<F>(pairs: &[Pair], load: F, progress: bool) -> Result<PairImages>
where
    F: Fn(usize) -> Result<Vec<u8>> + Sync,
{
    let mut used: Vec<usize> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    used.sort_unstable();
    used.dedup();
    let bar = if progress {
        ProgressBar::new(used.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} images")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let loaded: Vec<Vec<u8>> = used
        .par_iter()
        .map(|&i| {
            let r = load(i);
            bar.inc(1);
            r
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    let at: HashMap<usize, usize> = used.iter().enumerate().map(|(k, &i)| (i, k)).collect();
    let mut out = PairImages {
        images: Vec::with_capacity(2 * pairs.len()),
        issame: Vec::with_capacity(pairs.len()),
    };
    for p in pairs {
        out.images.push(loaded[at[&p.a]].clone());
        out.images.push(loaded[at[&p.b]].clone());
        out.issame.push(p.same);
    }
    Ok(out)
}

/// Settings of [`make_pairs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MakePairsOptions {
    /// Pairs in all (half genuine, half impostor; the odd one out is genuine).
    pub pairs: usize,
    /// Seed of the drawing: the same folder and seed give the same set, byte for byte.
    pub seed: u64,
    /// Store the images at this size and policy (PNG when resized); `None` keeps them as they
    /// are.
    pub resize: Option<ResizeTo>,
    /// Show a progress bar while reading images.
    pub progress: bool,
}

/// What [`make_pairs`] found and drew.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MakePairsSummary {
    /// The folder of identities.
    pub folder: PathBuf,
    /// Identities (class folders).
    pub identities: usize,
    /// Identities with two or more images (the only ones genuine pairs come from).
    pub identities_with_pairs: usize,
    /// Image files found.
    pub images: usize,
    /// Distinct images the pairs use.
    pub images_used: usize,
    /// Pairs drawn.
    pub pairs: usize,
    /// Genuine (same-identity) pairs.
    pub genuine: usize,
    /// Impostor (different-identity) pairs.
    pub impostor: usize,
    /// The seed.
    pub seed: u64,
    /// The stored size and policy, when the images were resized.
    pub resized: Option<ResizeTo>,
    /// Files of the class folders that are not images, not used.
    pub skipped: Vec<Skipped>,
}

/// Builds a pair set from `root/<identity>/<image>` (the layout of `data import-folder`): the
/// images are found and checked as [`scan_class_folder`] does, pairs drawn by [`sample_pairs`],
/// and each image used is read (fully decoded, so a broken file is an error naming it) and,
/// with [`MakePairsOptions::resize`], stored at that size.
pub fn make_pairs(root: &Path, opts: &MakePairsOptions) -> Result<(PairImages, MakePairsSummary)> {
    let folder = scan_class_folder(root)?;
    let labels = folder.labels();
    let pairs = sample_pairs(&labels, opts.pairs, opts.seed, root)?;
    let images = &folder.images;
    let set = gather_images(
        &pairs,
        |i| {
            let path = &images[i].0;
            let bytes = read_image_file(path, opts.resize)?;
            if opts.resize.is_none() {
                // The header was checked; decode the rest too, so that the set never holds an
                // image evaluation cannot read.
                image::load_from_memory(&bytes).map_err(|e| DataError::ImageFile {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            }
            Ok(bytes)
        },
        opts.progress,
    )?;
    let mut count = vec![0usize; folder.classes.len()];
    for &l in &labels {
        count[l as usize] += 1;
    }
    let mut used: Vec<usize> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    used.sort_unstable();
    used.dedup();
    let summary = MakePairsSummary {
        folder: root.to_path_buf(),
        identities: folder.classes.len(),
        identities_with_pairs: count.iter().filter(|&&c| c >= 2).count(),
        images: images.len(),
        images_used: used.len(),
        pairs: set.issame.len(),
        genuine: set.genuine(),
        impostor: set.impostor(),
        seed: opts.seed,
        resized: opts.resize,
        skipped: folder.skipped,
    };
    tracing::info!(
        "{}: {} pairs ({} genuine, {} impostor) from {} images of {} identities",
        root.display(),
        summary.pairs,
        summary.genuine,
        summary.impostor,
        summary.images_used,
        summary.identities
    );
    Ok((set, summary))
}
