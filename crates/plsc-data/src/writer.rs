//! Writing a data folder from a sequence of samples: straight into one part, or through a
//! temporary unshuffled file and the global shuffle-and-split when `parts` is given.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::format::{BadPolicy, BadReport, encode_line, part_name};
use crate::index::LineIndex;
use crate::output::StagedOutput;
use crate::shuffle::{Remainder, ShuffleSplitOptions, ShuffleSplitSummary, shuffle_split_index};

/// Where and how a tool writes its data folder.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The output folder.
    pub output: PathBuf,
    /// Shuffle and split into this many parts; `None` writes one part in input order.
    pub parts: Option<usize>,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Remainder policy of the split.
    pub remainder: Remainder,
    /// Skip, count and report bad samples instead of failing.
    pub skip_bad: bool,
    /// Show progress bars.
    pub progress: bool,
}

/// What a writing tool did.
#[derive(Debug, Clone, Serialize)]
pub struct WriteSummary {
    /// The new `file_list.txt`.
    pub file_list: PathBuf,
    /// Samples written (before padding or dropping).
    pub samples: u64,
    /// Bytes of the unshuffled lines.
    pub bytes: u64,
    /// Bad samples skipped (only with skip-bad).
    pub bad: BadReport,
    /// The shuffle-and-split, when `parts` was given.
    pub split: Option<ShuffleSplitSummary>,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Samples handed out in parallel chunks of this size.
const CHUNK: usize = 512;

/// Writes `n` samples produced by `load(i)` (encoded image, label) into a data folder.
/// `side_files` are `(name, contents)` written next to `file_list.txt`. `protect` lists inputs
/// that must not lie inside the output folder.
pub fn write_dataset<F>(
    opts: &WriteOptions,
    n: usize,
    load: F,
    side_files: &[(&str, String)],
    protect: &[PathBuf],
) -> Result<WriteSummary>
where
    F: Fn(usize) -> Result<(Vec<u8>, i64)> + Sync,
{
    let t0 = Instant::now();
    let staged = StagedOutput::begin(&opts.output, protect)?;
    let raw_path = match opts.parts {
        Some(_) => staged.dir().join(".unshuffled.tmp"),
        None => staged.dir().join(part_name(0)),
    };
    let mut bad = BadPolicy::new(opts.skip_bad);
    let bar = if opts.progress {
        ProgressBar::new(n as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} samples")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (samples, bytes) = write_raw(&raw_path, n, &load, &mut bad, &bar)?;
    bar.finish_and_clear();
    if samples == 0 {
        return Err(DataError::Empty {
            what: "import".into(),
        });
    }
    for (name, text) in side_files {
        let p = staged.dir().join(name);
        std::fs::write(&p, text).map_err(|e| DataError::io(&p, e))?;
    }
    let (names, split) = match opts.parts {
        Some(parts) => {
            let mut index = LineIndex::build(std::slice::from_ref(&raw_path))?;
            let split = shuffle_split_index(
                &mut index,
                &staged,
                &ShuffleSplitOptions {
                    parts,
                    seed: opts.seed,
                    remainder: opts.remainder,
                    progress: opts.progress,
                    check: None,
                },
            )?;
            drop(index);
            std::fs::remove_file(&raw_path).map_err(|e| DataError::io(&raw_path, e))?;
            ((0..parts).map(part_name).collect(), Some(split))
        }
        None => (vec![part_name(0)], None),
    };
    let file_list = staged.commit(&names)?;
    let mut split = split;
    if let Some(s) = split.as_mut() {
        s.file_list = file_list.clone();
    }
    Ok(WriteSummary {
        file_list,
        samples,
        bytes,
        bad: bad.report(),
        split,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn write_raw<F>(
    path: &Path,
    n: usize,
    load: &F,
    bad: &mut BadPolicy,
    bar: &ProgressBar,
) -> Result<(u64, u64)>
where
    F: Fn(usize) -> Result<(Vec<u8>, i64)> + Sync,
{
    let file = File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let (mut samples, mut bytes) = (0u64, 0u64);
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        let lines: Vec<Result<Vec<u8>>> = (start..end)
            .into_par_iter()
            .map(|i| {
                let (img, label) = load(i)?;
                let mut line = Vec::with_capacity(img.len() * 4 / 3 + 16);
                encode_line(&img, label, &mut line);
                Ok(line)
            })
            .collect();
        for line in lines {
            match line {
                Ok(line) => {
                    w.write_all(&line).map_err(|e| DataError::io(path, e))?;
                    samples += 1;
                    bytes += line.len() as u64;
                }
                Err(e) => bad.handle(e)?,
            }
        }
        bar.inc((end - start) as u64);
    }
    let file = w
        .into_inner()
        .map_err(|e| DataError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| DataError::io(path, e))?;
    Ok((samples, bytes))
}
