//! `data inspect`: what a data folder holds, and which lines are bad.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::format::{BadPolicy, BadReport, ImageCheck, resolve_inputs, validate_line};
use crate::index::MappedFile;

/// Per-class sample counts, summarised.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Histogram {
    /// Fewest samples of a class present.
    pub min: u64,
    /// Median samples per class present.
    pub median: u64,
    /// Most samples of a class.
    pub max: u64,
    /// Mean samples per class present.
    pub mean: f64,
    /// Labels in `0..=label_max` that have no sample.
    pub empty_classes: u64,
}

/// What `inspect` found.
#[derive(Debug, Clone, Serialize)]
pub struct InspectReport {
    /// Part files read.
    pub parts: Vec<PathBuf>,
    /// Good sample lines.
    pub lines: u64,
    /// Empty lines.
    pub empty_lines: u64,
    /// Bytes of all parts.
    pub bytes: u64,
    /// Smallest label.
    pub label_min: Option<i64>,
    /// Largest label.
    pub label_max: Option<i64>,
    /// Distinct labels.
    pub classes: u64,
    /// Samples per class.
    pub per_class: Histogram,
    /// Image sizes `"WxH"` and how many samples have each.
    pub image_sizes: BTreeMap<String, u64>,
    /// Bad lines (counted; the first few named).
    pub bad: BadReport,
}

/// Reads every line of the data named by `input` (folder, `file_list.txt` or part files),
/// checking base64, label (against `classes` when given) and the image header. A part file
/// without any sample line is an error naming it.
pub fn inspect(inputs: &[PathBuf], classes: Option<u64>) -> Result<InspectReport> {
    let parts = resolve_inputs(inputs)?;
    struct Acc {
        lines: u64,
        empty: u64,
        bytes: u64,
        labels: BTreeMap<i64, u64>,
        sizes: BTreeMap<String, u64>,
        bad: BadPolicy,
    }
    let per_part: Vec<Acc> = parts
        .par_iter()
        .map(|p| -> Result<Acc> {
            let f = MappedFile::open(p)?;
            let mut acc = Acc {
                lines: 0,
                empty: 0,
                bytes: f.bytes().len() as u64,
                labels: BTreeMap::new(),
                sizes: BTreeMap::new(),
                bad: BadPolicy::new(true),
            };
            for (line_no, _, content) in crate::format::lines(f.bytes()) {
                if content.is_empty() {
                    acc.empty += 1;
                    continue;
                }
                match validate_line(content, classes, ImageCheck::Header) {
                    Ok((_, label, dims)) => {
                        acc.lines += 1;
                        *acc.labels.entry(label).or_default() += 1;
                        if let Some((w, h)) = dims {
                            *acc.sizes.entry(format!("{w}x{h}")).or_default() += 1;
                        }
                    }
                    Err(e) => acc.bad.handle(DataError::line(p, line_no, e))?,
                }
            }
            if acc.lines == 0 && acc.bad.report().skipped == 0 {
                return Err(crate::format::empty_part(p));
            }
            Ok(acc)
        })
        .collect::<Result<_>>()?;
    let mut labels: BTreeMap<i64, u64> = BTreeMap::new();
    let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut lines, mut empty, mut bytes) = (0, 0, 0);
    let mut bad = BadPolicy::new(true);
    for acc in per_part {
        lines += acc.lines;
        empty += acc.empty;
        bytes += acc.bytes;
        for (k, v) in acc.labels {
            *labels.entry(k).or_default() += v;
        }
        for (k, v) in acc.sizes {
            *sizes.entry(k).or_default() += v;
        }
        bad.merge(acc.bad);
    }
    let label_min = labels.keys().next().copied();
    let label_max = labels.keys().next_back().copied();
    let mut counts: Vec<u64> = labels.values().copied().collect();
    counts.sort_unstable();
    let per_class = if counts.is_empty() {
        Histogram::default()
    } else {
        Histogram {
            min: counts[0],
            median: counts[counts.len() / 2],
            max: counts[counts.len() - 1],
            mean: lines as f64 / counts.len() as f64,
            empty_classes: label_max.map_or(0, |m| m as u64 + 1) - counts.len() as u64,
        }
    };
    Ok(InspectReport {
        parts,
        lines,
        empty_lines: empty,
        bytes,
        label_min,
        label_max,
        classes: labels.len() as u64,
        per_class,
        image_sizes: sizes,
        bad: bad.report(),
    })
}

/// Convenience: inspect one `file_list.txt` or folder.
pub fn inspect_one(input: &Path, classes: Option<u64>) -> Result<InspectReport> {
    inspect(&[input.to_path_buf()], classes)
}

/// Checks every line of one part file: base64, label (against `classes`) and the image as
/// `check` says. Without `skip_bad` the first bad line is an error naming the file and line;
/// with it, bad lines are counted and reported. Returns the number of good lines.
pub fn validate_part(
    path: &Path,
    classes: Option<u64>,
    check: ImageCheck,
    skip_bad: bool,
) -> Result<(u64, BadReport)> {
    let f = MappedFile::open(path)?;
    let mut bad = BadPolicy::new(skip_bad);
    let mut good = 0u64;
    for (line_no, _, content) in crate::format::lines(f.bytes()) {
        if content.is_empty() {
            continue;
        }
        match validate_line(content, classes, check) {
            Ok(_) => good += 1,
            Err(e) => bad.handle(DataError::line(path, line_no, e))?,
        }
    }
    Ok((good, bad.report()))
}
