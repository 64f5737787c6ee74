//! Lossless global shuffle-and-split: one seeded shuffle over every line of every input, then
//! N parts of equal line count written in parallel, published atomically with a new
//! `file_list.txt`. Only the `u64` line offsets are held in memory; inputs are memory-mapped.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::{DataError, Result};
use crate::format::BadReport;
use crate::format::{part_name, resolve_inputs};
use crate::index::{LineCheck, LineIndex};
use crate::output::StagedOutput;

/// What to do with the lines that do not fill the last round of parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Remainder {
    /// Repeat lines, drawn in the shuffled order, until every part has `ceil(lines / N)`.
    #[default]
    Pad,
    /// Drop the tail of the shuffled order so every part has `floor(lines / N)`.
    Drop,
}

impl std::str::FromStr for Remainder {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "pad" => Ok(Remainder::Pad),
            "drop" => Ok(Remainder::Drop),
            _ => Err(DataError::Config(format!(
                "remainder must be `pad` or `drop`, not {s:?}"
            ))),
        }
    }
}

/// Options of [`shuffle_split`].
#[derive(Debug, Clone)]
pub struct ShuffleSplitOptions {
    /// Number of output parts (>= 1).
    pub parts: usize,
    /// Seed of the shuffle.
    pub seed: u64,
    /// Pad or drop the remainder.
    pub remainder: Remainder,
    /// Show a progress bar on stderr (hidden when stderr is not a terminal).
    pub progress: bool,
    /// Check every line (tab, label, base64, image signature) while indexing; `None` shuffles
    /// lines as opaque text.
    pub check: Option<LineCheck>,
}

/// What [`shuffle_split`] did.
#[derive(Debug, Clone, Serialize)]
pub struct ShuffleSplitSummary {
    /// The new `file_list.txt`.
    pub file_list: PathBuf,
    /// Input part files read.
    pub input_files: usize,
    /// Non-empty input lines (samples).
    pub lines: u64,
    /// Empty input lines (not samples, not written).
    pub empty_lines: u64,
    /// Input bytes.
    pub input_bytes: u64,
    /// Output bytes (all parts).
    pub output_bytes: u64,
    /// Lines in each part.
    pub per_part: Vec<u64>,
    /// Lines written twice to pad the parts to equal length.
    pub padded: u64,
    /// Lines dropped so the parts have equal length.
    pub dropped: u64,
    /// Bad lines skipped under `skip_bad` (they are not written).
    pub bad: BadReport,
    /// Seconds spent indexing (and checking) the input.
    pub index_seconds: f64,
    /// Seconds spent shuffling and writing the parts (including `fsync`).
    pub write_seconds: f64,
    /// Wall time in seconds.
    pub seconds: f64,
}

/// Shuffles every line of `inputs` (folders, `file_list.txt` files or part files) with `seed`
/// and writes `opts.parts` equal parts plus a `file_list.txt` to `output`. A part file without
/// a sample line is an error naming it; a failed run leaves nothing it created.
pub fn shuffle_split(
    inputs: &[PathBuf],
    output: &Path,
    opts: &ShuffleSplitOptions,
) -> Result<ShuffleSplitSummary> {
    let t0 = Instant::now();
    let parts = resolve_inputs(inputs)?;
    let mut protect = parts.clone();
    protect.extend(inputs.iter().cloned());
    let staged = StagedOutput::begin(output, &protect)?;
    tracing::info!("indexing {} input file(s)", parts.len());
    let (mut index, bad) = LineIndex::build_checked(&parts, opts.check.as_ref())?;
    if let Some(empty) = index.first_file_without_lines() {
        return Err(crate::format::empty_part(empty));
    }
    let index_seconds = t0.elapsed().as_secs_f64();
    let mut summary = shuffle_split_index(&mut index, &staged, opts)?;
    summary.bad = bad;
    summary.index_seconds = index_seconds;
    let names: Vec<String> = (0..opts.parts).map(part_name).collect();
    summary.file_list = staged.commit(&names)?;
    summary.seconds = t0.elapsed().as_secs_f64();
    Ok(summary)
}

/// Shuffles `index` in place and writes the parts into `staged` (not committed).
pub fn shuffle_split_index(
    index: &mut LineIndex,
    staged: &StagedOutput,
    opts: &ShuffleSplitOptions,
) -> Result<ShuffleSplitSummary> {
    if opts.parts == 0 {
        return Err(DataError::Config("--parts must be at least 1".into()));
    }
    let n = index.len() as u64;
    if n == 0 {
        return Err(DataError::Empty {
            what: "shuffle-split input".into(),
        });
    }
    let parts = opts.parts as u64;
    let per = match opts.remainder {
        Remainder::Pad => n.div_ceil(parts),
        Remainder::Drop => n / parts,
    };
    if per == 0 {
        return Err(DataError::Config(format!(
            "{n} lines cannot fill {parts} parts with --remainder drop"
        )));
    }
    let written = per * parts;
    let (padded, dropped) = (written.saturating_sub(n), n.saturating_sub(written));

    let t0 = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    index.starts_mut().shuffle(&mut rng);
    index.advise_random();

    let bar = if opts.progress {
        ProgressBar::new(written)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} lines ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let index = &*index;
    let bytes: Vec<u64> = (0..opts.parts)
        .into_par_iter()
        .map(|j| {
            let path = staged.dir().join(part_name(j));
            write_part(index, &path, j as u64 * per, per, &bar)
        })
        .collect::<Result<_>>()?;
    bar.finish_and_clear();
    Ok(ShuffleSplitSummary {
        file_list: PathBuf::new(),
        input_files: index.files().len(),
        lines: n,
        empty_lines: index.empty_lines(),
        input_bytes: index.bytes(),
        output_bytes: bytes.iter().sum(),
        per_part: vec![per; opts.parts],
        padded,
        dropped,
        bad: BadReport::default(),
        index_seconds: 0.0,
        write_seconds: t0.elapsed().as_secs_f64(),
        seconds: 0.0,
    })
}

/// Writes shuffled positions `[first, first + count)` (wrapping for padding) to `path`.
fn write_part(
    index: &LineIndex,
    path: &Path,
    first: u64,
    count: u64,
    bar: &ProgressBar,
) -> Result<u64> {
    let n = index.len() as u64;
    let file = File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut bytes = 0u64;
    let mut pending = 0u64;
    for p in first..first + count {
        let (_, line) = index.line_at(index.starts()[(p % n) as usize]);
        w.write_all(line)
            .and_then(|_| w.write_all(b"\n"))
            .map_err(|e| DataError::io(path, e))?;
        bytes += line.len() as u64 + 1;
        pending += 1;
        if pending == 4096 {
            bar.inc(pending);
            pending = 0;
        }
    }
    bar.inc(pending);
    let file = w
        .into_inner()
        .map_err(|e| DataError::io(path, e.into_error()))?;
    file.sync_all().map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}
