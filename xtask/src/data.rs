//! `cargo xtask data ...`: shuffle-and-split, importers, synthetic data, inspection.
//! The logic lives in `plsc-data`; this module parses arguments and prints summaries.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use plsc_data::index::LineCheck;
use plsc_data::shuffle::{Remainder, ShuffleSplitOptions, ShuffleSplitSummary};
use plsc_data::synth::{SynthFormat, SynthOptions};
use plsc_data::writer::{WriteOptions, WriteSummary};

/// Data tools for the PLSC base64 layout (`file_list.txt` + parts of `<base64>\t<label>`).
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// One global shuffle over all lines of the input, then N parts of equal line count and a
    /// new file_list.txt. Input is never modified; output appears atomically.
    ShuffleSplit(ShuffleSplitArgs),
    /// Import an MXNet RecordIO .rec (+ .idx) as InsightFace ships MS1M, Glint360K, WebFace.
    ImportRec(ImportRecArgs),
    /// Import ROOT/<class>/<image> (class ids by sorted folder name; writes class_map.tsv).
    ImportFolder(ImportFolderArgs),
    /// Import PLSC's label.txt: `path label` lines, paths relative to the list's folder.
    ImportList(ImportListArgs),
    /// Class-conditional synthetic images (each class its own pattern, each sample varied).
    Synth(SynthArgs),
    /// Lines, label range, class count and histogram, image sizes and bad lines of a data set.
    Inspect(InspectArgs),
}

/// Arguments of `data shuffle-split`.
#[derive(Args, Debug)]
pub struct ShuffleSplitArgs {
    /// A data folder, a file_list.txt, or part files (several allowed).
    #[arg(long, required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Output folder (new, empty, or a previous output, which is replaced atomically).
    #[arg(long)]
    output: PathBuf,
    /// Number of parts (usually the number of ranks).
    #[arg(long)]
    parts: usize,
    /// Shuffle seed; the same input and seed give byte-identical output.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `pad`: repeat lines (drawn from the shuffled order) to fill the last round;
    /// `drop`: drop the tail. The summary says how many.
    #[arg(long, default_value = "pad")]
    remainder: Remainder,
    /// Class count: labels at or above it are bad lines.
    #[arg(long)]
    classes: Option<u64>,
    /// Skip bad lines (not written), count them and report them, instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Do not check lines (tab, label, base64, image signature): shuffle them as opaque text.
    #[arg(long, conflicts_with_all = ["skip_bad", "classes"])]
    no_check: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

/// Output options shared by the importers and `synth`.
#[derive(Args, Debug)]
pub struct OutArgs {
    /// Output folder (new, empty, or a previous output, which is replaced atomically).
    #[arg(long)]
    output: PathBuf,
    /// Shuffle globally and split into this many parts; without it one part in input order.
    #[arg(long)]
    parts: Option<usize>,
    /// Shuffle seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Remainder of the split: pad or drop.
    #[arg(long, default_value = "pad")]
    remainder: Remainder,
    /// Skip bad samples, count them and report them at the end, instead of failing.
    #[arg(long)]
    skip_bad: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

impl OutArgs {
    fn options(&self) -> WriteOptions {
        WriteOptions {
            output: self.output.clone(),
            parts: self.parts,
            seed: self.seed,
            remainder: self.remainder,
            skip_bad: self.skip_bad,
            progress: !self.no_progress,
        }
    }
}

/// Arguments of `data import-rec`.
#[derive(Args, Debug)]
pub struct ImportRecArgs {
    /// The .rec file.
    #[arg(long)]
    rec: PathBuf,
    /// The .idx file [default: the .rec's name with .idx, when it exists].
    #[arg(long)]
    idx: Option<PathBuf>,
    #[command(flatten)]
    out: OutArgs,
}

/// Arguments of `data import-folder`.
#[derive(Args, Debug)]
pub struct ImportFolderArgs {
    /// Folder with one sub-folder of images per class.
    root: PathBuf,
    #[command(flatten)]
    out: OutArgs,
}

/// Arguments of `data import-list`.
#[derive(Args, Debug)]
pub struct ImportListArgs {
    /// The label list (`path label` per line).
    list: PathBuf,
    /// Class count: labels must be below it.
    #[arg(long)]
    classes: Option<u64>,
    #[command(flatten)]
    out: OutArgs,
}

/// Arguments of `data synth`.
#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Number of classes.
    #[arg(long)]
    classes: u64,
    /// Images per class.
    #[arg(long)]
    per_class: u64,
    /// Image side in pixels (square).
    #[arg(long, default_value_t = 112)]
    size: u32,
    /// 1 (grayscale) or 3 (RGB).
    #[arg(long, default_value_t = 3)]
    channels: usize,
    /// jpeg or png.
    #[arg(long, default_value = "jpeg")]
    format: SynthFormat,
    /// JPEG quality.
    #[arg(long, default_value_t = 90)]
    quality: u8,
    #[command(flatten)]
    out: OutArgs,
}

/// Arguments of `data inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// A file_list.txt, a data folder, or part files.
    #[arg(required = true, num_args = 1..)]
    input: Vec<PathBuf>,
    /// Class count: labels at or above it are reported as bad.
    #[arg(long)]
    classes: Option<u64>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(cmd: DataCommand) -> anyhow::Result<()> {
    match cmd {
        DataCommand::ShuffleSplit(a) => {
            let s = plsc_data::shuffle::shuffle_split(
                &a.input,
                &a.output,
                &ShuffleSplitOptions {
                    parts: a.parts,
                    seed: a.seed,
                    remainder: a.remainder,
                    progress: !a.no_progress,
                    check: (!a.no_check).then_some(LineCheck {
                        classes: a.classes,
                        skip_bad: a.skip_bad,
                    }),
                },
            )?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_split(&s);
            }
        }
        DataCommand::ImportRec(a) => {
            let idx = a.idx.clone().or_else(|| {
                let guess = a.rec.with_extension("idx");
                guess.is_file().then_some(guess)
            });
            let s = plsc_data::import::import_rec(&a.rec, idx.as_deref(), &a.out.options())
                .with_context(|| format!("importing {}", a.rec.display()))?;
            print_write(&s, a.out.json)?;
        }
        DataCommand::ImportFolder(a) => {
            let s = plsc_data::import::import_folder(&a.root, &a.out.options())
                .with_context(|| format!("importing {}", a.root.display()))?;
            print_write(&s, a.out.json)?;
        }
        DataCommand::ImportList(a) => {
            let s = plsc_data::import::import_list(&a.list, a.classes, &a.out.options())
                .with_context(|| format!("importing {}", a.list.display()))?;
            print_write(&s, a.out.json)?;
        }
        DataCommand::Synth(a) => {
            let opts = SynthOptions {
                classes: a.classes,
                per_class: a.per_class,
                size: a.size,
                channels: a.channels,
                format: a.format,
                quality: a.quality,
                seed: a.out.seed,
            };
            let s = plsc_data::synth::synth(&opts, &a.out.options())?;
            print_write(&s, a.out.json)?;
        }
        DataCommand::Inspect(a) => {
            let r = plsc_data::inspect::inspect(&a.input, a.classes)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("parts:        {}", r.parts.len());
                println!("lines:        {} ({} empty)", r.lines, r.empty_lines);
                println!("bytes:        {}", r.bytes);
                match (r.label_min, r.label_max) {
                    (Some(lo), Some(hi)) => println!("labels:       {lo}..={hi}"),
                    _ => println!("labels:       none"),
                }
                println!(
                    "classes:      {} (per class min {} / median {} / max {} / mean {:.1}; {} ids without samples)",
                    r.classes,
                    r.per_class.min,
                    r.per_class.median,
                    r.per_class.max,
                    r.per_class.mean,
                    r.per_class.empty_classes
                );
                let sizes: Vec<String> = r
                    .image_sizes
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect();
                println!("image sizes:  {}", sizes.join(", "));
                println!("bad lines:    {}", r.bad.skipped);
                for e in &r.bad.examples {
                    println!("  {e}");
                }
            }
            if r.bad.skipped > 0 {
                anyhow::bail!("{} bad line(s)", r.bad.skipped);
            }
        }
    }
    Ok(())
}

fn print_split(s: &ShuffleSplitSummary) {
    println!("file list:    {}", s.file_list.display());
    println!(
        "lines:        {} from {} file(s) ({} empty lines skipped)",
        s.lines, s.input_files, s.empty_lines
    );
    println!("bytes:        {} in, {} out", s.input_bytes, s.output_bytes);
    println!(
        "parts:        {} x {} lines",
        s.per_part.len(),
        s.per_part.first().copied().unwrap_or(0)
    );
    println!("padded:       {}", s.padded);
    println!("dropped:      {}", s.dropped);
    println!("bad skipped:  {}", s.bad.skipped);
    for e in &s.bad.examples {
        println!("  {e}");
    }
    println!(
        "time:         {:.2} s ({:.1} MB/s; index {:.2} s, write {:.2} s)",
        s.seconds,
        s.input_bytes as f64 / 1e6 / s.seconds.max(1e-9),
        s.index_seconds,
        s.write_seconds
    );
}

fn print_write(s: &WriteSummary, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(s)?);
        return Ok(());
    }
    println!("file list:    {}", s.file_list.display());
    println!("samples:      {} ({} bytes of lines)", s.samples, s.bytes);
    println!("bad skipped:  {}", s.bad.skipped);
    for e in &s.bad.examples {
        println!("  {e}");
    }
    if let Some(split) = &s.split {
        println!(
            "parts:        {} x {} lines (padded {}, dropped {})",
            split.per_part.len(),
            split.per_part.first().copied().unwrap_or(0),
            split.padded,
            split.dropped
        );
    }
    println!("time:         {:.2} s", s.seconds);
    Ok(())
}
