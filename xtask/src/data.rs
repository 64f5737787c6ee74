//! `cargo xtask data ...`: shuffle-and-split, importers, synthetic data, inspection, pair sets.
//! The logic lives in `plsc-data`; this module parses arguments and prints summaries.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use plsc_data::Resize;
use plsc_data::folder::Skipped;
use plsc_data::index::LineCheck;
use plsc_data::pairs::MakePairsOptions;
use plsc_data::resize::ResizeTo;
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
    /// Only image files (JPEG, PNG, PNM, told by their header) are taken; the others are
    /// skipped and listed.
    ImportFolder(ImportFolderArgs),
    /// Import PLSC's label.txt: `path label` lines, paths relative to the list's folder.
    ImportList(ImportListArgs),
    /// Class-conditional synthetic images (each class its own pattern, each sample varied).
    Synth(SynthArgs),
    /// Lines, label range, class count and histogram, image sizes and bad lines of a data set.
    Inspect(InspectArgs),
    /// A verification pair set (InsightFace .bin) from DIR/<identity>/<image>: N pairs, half
    /// genuine, half impostor, reproducible from the seed; `eval --bin` reads it.
    MakePairs(MakePairsArgs),
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
    size: SizeArgs,
    #[command(flatten)]
    out: OutArgs,
}

/// The stored image size and its aspect-ratio policy, shared by `import-folder` and
/// `make-pairs`.
#[derive(Args, Debug)]
pub struct SizeArgs {
    /// Store every image at SIZE x SIZE pixels (re-encoded as PNG; images already that size are
    /// kept byte for byte). Without it images are stored as they are, and training and
    /// evaluation bring them to the model input with squash.
    #[arg(long, value_name = "SIZE")]
    size: Option<u32>,
    /// How an image of another aspect ratio reaches SIZE x SIZE: squash (resize ignoring the
    /// aspect ratio; the default), pad (fit inside, pad with black) or center-crop (cover,
    /// cut out the centre).
    #[arg(long, value_name = "POLICY", default_value_t = Resize::Squash, requires = "size")]
    resize: Resize,
}

impl SizeArgs {
    fn resize_to(&self) -> anyhow::Result<Option<ResizeTo>> {
        match self.size {
            Some(0) => anyhow::bail!("--size must be at least 1 pixel"),
            Some(side) => Ok(Some(ResizeTo::square(side, self.resize))),
            None => Ok(None),
        }
    }
}

/// Arguments of `data make-pairs`.
#[derive(Args, Debug)]
pub struct MakePairsArgs {
    /// Folder with one sub-folder of images per identity (the layout of import-folder).
    /// Identities with a single image serve only impostor pairs; files that are not images are
    /// skipped and listed.
    #[arg(long, value_name = "DIR")]
    folder: PathBuf,
    /// Pairs in all: half genuine (same identity), half impostor (an odd one out is genuine),
    /// alternating so that every fold of a 10-fold evaluation holds both kinds.
    #[arg(long, value_name = "N")]
    pairs: usize,
    /// Seed of the drawing: the same folder and seed give the same file, byte for byte.
    #[arg(long, value_name = "S", default_value_t = 0)]
    seed: u64,
    /// The pair set to write (InsightFace .bin: a pickle of the encoded images and the labels).
    #[arg(long, value_name = "SET.bin")]
    out: PathBuf,
    /// Replace --out if it exists (without it, an existing file is an error).
    #[arg(long)]
    overwrite: bool,
    #[command(flatten)]
    size: SizeArgs,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
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
            let s =
                plsc_data::import::import_folder(&a.root, &a.out.options(), a.size.resize_to()?)
                    .with_context(|| format!("importing {}", a.root.display()))?;
            if a.out.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print_write(&s.written, false)?;
                if let Some(r) = &s.resized {
                    println!("stored at:    {}x{} ({})", r.width, r.height, r.policy);
                }
                print_skipped(&s.skipped);
            }
        }
        DataCommand::MakePairs(a) => make_pairs(&a)?,
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

/// `data make-pairs`: the builder of plsc-data, the `.bin` writer of plsc-eval.
fn make_pairs(a: &MakePairsArgs) -> anyhow::Result<()> {
    if a.out.exists() && !a.overwrite {
        anyhow::bail!("{} exists; pass --overwrite to replace it", a.out.display());
    }
    let opts = MakePairsOptions {
        pairs: a.pairs,
        seed: a.seed,
        resize: a.size.resize_to()?,
        progress: !a.no_progress,
    };
    let (set, summary) = plsc_data::pairs::make_pairs(&a.folder, &opts)
        .with_context(|| format!("making pairs from {}", a.folder.display()))?;
    plsc_eval::write_bin(&a.out, &set.images, &set.issame)
        .with_context(|| format!("writing {}", a.out.display()))?;
    let bytes = std::fs::metadata(&a.out)
        .with_context(|| format!("reading back {}", a.out.display()))?
        .len();
    if a.json {
        let doc = serde_json::json!({ "file": a.out, "bytes": bytes, "summary": summary });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("pair set:     {} ({bytes} bytes)", a.out.display());
    println!(
        "pairs:        {} ({} genuine, {} impostor), seed {}",
        summary.pairs, summary.genuine, summary.impostor, summary.seed
    );
    println!(
        "identities:   {} ({} with two or more images)",
        summary.identities, summary.identities_with_pairs
    );
    println!(
        "images:       {} found, {} used",
        summary.images, summary.images_used
    );
    match &summary.resized {
        Some(r) => println!("stored at:    {}x{} ({})", r.width, r.height, r.policy),
        None => println!("stored at:    original size (evaluation resizes them)"),
    }
    print_skipped(&summary.skipped);
    Ok(())
}

/// The files that were not taken as images, one per line.
fn print_skipped(skipped: &[Skipped]) {
    println!(
        "skipped:      {} file(s) that are not images",
        skipped.len()
    );
    for s in skipped {
        println!("  {s}");
    }
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
