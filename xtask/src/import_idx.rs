//! `cargo xtask import-idx`: IDX image/label files (MNIST, Fashion-MNIST; gzip or plain) into
//! the base64 training layout, plus a verification pair set in InsightFace's `.bin` format drawn
//! from classes held out of training (open-set, as face verification is).
//!
//! The shipped `datasets/fashion_mnist` was built with the defaults, after
//! `apt-get install dataset-fashion-mnist` (Debian puts the IDX files in
//! `/usr/share/datasets/fashion-mnist`).

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use image::{GrayImage, ImageFormat};
use plsc_data::shuffle::Remainder;
use plsc_data::writer::{WriteOptions, write_dataset};
use rand::SeedableRng;
use rand::seq::SliceRandom;

const FMNIST: &str = "/usr/share/datasets/fashion-mnist";

/// Fashion-MNIST class names, by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

#[derive(Args, Debug)]
pub struct ImportIdxArgs {
    /// Training images (IDX3, optionally gzip).
    #[arg(
        long,
        default_value = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"
    )]
    train_images: PathBuf,
    /// Training labels (IDX1, optionally gzip).
    #[arg(
        long,
        default_value = "/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz"
    )]
    train_labels: PathBuf,
    /// Images the pair set is drawn from (IDX3): by default the test split, so no pair image
    /// was ever a training image.
    #[arg(
        long,
        default_value = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
    )]
    pair_images: PathBuf,
    /// Labels of `--pair-images`.
    #[arg(
        long,
        default_value = "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz"
    )]
    pair_labels: PathBuf,
    /// Classes held out of training; the pair set uses only these.
    #[arg(long, value_delimiter = ',', default_values_t = [2u8, 9])]
    holdout: Vec<u8>,
    /// Training images per (kept) class, the first ones in file order.
    #[arg(long, default_value_t = 600)]
    per_class: usize,
    /// Pairs in the verification set (half same-class, half different-class).
    #[arg(long, default_value_t = 600)]
    pairs: usize,
    /// Parts of the training data (one per rank gives each rank its own part).
    #[arg(long, default_value_t = 2)]
    parts: usize,
    /// Output folder: `train/` (file_list.txt + parts) and `<name>.bin` go here.
    #[arg(long, default_value = "datasets/fashion_mnist")]
    output: PathBuf,
    /// Name of the pair set file (without `.bin`).
    #[arg(long, default_value = "fmnist_pairs")]
    name: String,
    /// Seed of the shuffle and of the pair sampling.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// Images `[n][rows*cols]` and the side length.
fn read_idx_images(path: &Path) -> anyhow::Result<(Vec<Vec<u8>>, u32, u32)> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 16 || bytes[..4] != [0, 0, 8, 3] {
        bail!(
            "{}: not an IDX3 unsigned-byte file (magic {:?})",
            path.display(),
            &bytes[..bytes.len().min(4)]
        );
    }
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let (n, rows, cols) = (be(4) as usize, be(8), be(12));
    let size = (rows * cols) as usize;
    if bytes.len() != 16 + n * size {
        bail!(
            "{}: header says {n} images of {rows}x{cols}, file has {} bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok((
        bytes[16..].chunks(size).map(<[u8]>::to_vec).collect(),
        rows,
        cols,
    ))
}

fn read_idx_labels(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 8 || bytes[..4] != [0, 0, 8, 1] {
        bail!("{}: not an IDX1 unsigned-byte file", path.display());
    }
    let n = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
    if bytes.len() != 8 + n {
        bail!(
            "{}: header says {n} labels, file has {} bytes",
            path.display(),
            bytes.len()
        );
    }
    Ok(bytes[8..].to_vec())
}

fn read_maybe_gz(path: &Path) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| {
        format!(
            "reading {} (Fashion-MNIST: apt-get install dataset-fashion-mnist, files in {FMNIST})",
            path.display()
        )
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: bad gzip data", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn png(pixels: &[u8], rows: u32, cols: u32) -> anyhow::Result<Vec<u8>> {
    let img = GrayImage::from_raw(cols, rows, pixels.to_vec()).context("image size")?;
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)?;
    Ok(out.into_inner())
}

pub fn run(args: ImportIdxArgs) -> anyhow::Result<()> {
    let (images, rows, cols) = read_idx_images(&args.train_images)?;
    let labels = read_idx_labels(&args.train_labels)?;
    if images.len() != labels.len() {
        bail!("{} images but {} labels", images.len(), labels.len());
    }
    let kept: Vec<u8> = (0u8..10)
        .filter(|c| !args.holdout.contains(c) && labels.contains(c))
        .collect();
    // Training labels are 0..kept.len(), in the order of the original ones.
    let mut chosen: Vec<(usize, i64)> = Vec::new();
    for (new, &old) in kept.iter().enumerate() {
        let idx: Vec<usize> = (0..labels.len())
            .filter(|&i| labels[i] == old)
            .take(args.per_class)
            .collect();
        chosen.extend(idx.into_iter().map(|i| (i, new as i64)));
    }
    let class_map: String = kept
        .iter()
        .enumerate()
        .map(|(new, &old)| {
            format!(
                "{new}\t{old}\t{}\n",
                FASHION_MNIST_CLASSES.get(old as usize).unwrap_or(&"?")
            )
        })
        .collect();
    let opts = WriteOptions {
        output: args.output.join("train"),
        parts: Some(args.parts),
        seed: args.seed,
        remainder: Remainder::Drop,
        skip_bad: false,
        progress: false,
    };
    std::fs::create_dir_all(&args.output)?;
    let summary = write_dataset(
        &opts,
        chosen.len(),
        |i| {
            let (src, label) = chosen[i];
            png(&images[src], rows, cols)
                .map(|b| (b, label))
                .map_err(|e| plsc_data::DataError::Config(format!("image {src}: {e}")))
        },
        &[("class_map.tsv", class_map)],
        &[],
    )?;

    // The pair set: held-out classes only, from the pair images.
    let (pimages, prows, pcols) = read_idx_images(&args.pair_images)?;
    let plabels = read_idx_labels(&args.pair_labels)?;
    let held: Vec<usize> = (0..plabels.len())
        .filter(|&i| args.holdout.contains(&plabels[i]))
        .collect();
    if held.is_empty() {
        bail!(
            "no image of the held-out classes {:?} in {}",
            args.holdout,
            args.pair_labels.display()
        );
    }
    let mut rng = rand_chacha_seed(args.seed);
    let mut order = held.clone();
    order.shuffle(&mut rng);
    let encoded: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| png(&pimages[i], prows, pcols))
        .collect::<anyhow::Result<_>>()?;
    let pair_labels: Vec<u32> = order.iter().map(|&i| u32::from(plabels[i])).collect();
    // The builder of `data make-pairs`, on the held-out images.
    let pairs =
        plsc_data::pairs::sample_pairs(&pair_labels, args.pairs, args.seed, &args.pair_labels)?;
    let bin = plsc_data::pairs::gather_images(&pairs, |i| Ok(encoded[i].clone()), false)?;
    let bin_path = args.output.join(format!("{}.bin", args.name));
    plsc_eval::write_bin(&bin_path, &bin.images, &bin.issame)?;
    let bin_bytes = std::fs::metadata(&bin_path)?.len();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "train": {
                "file_list": summary.file_list,
                "samples": summary.samples,
                "parts": args.parts,
                "classes": kept.len(),
                "original_classes": kept,
                "per_class": args.per_class,
                "bytes": summary.bytes,
            },
            "pairs": {
                "file": bin_path,
                "pairs": bin.issame.len(),
                "held_out_classes": args.holdout,
                "bytes": bin_bytes,
            },
        }))?
    );
    Ok(())
}

fn rand_chacha_seed(seed: u64) -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(seed ^ 0x1d8_5eed)
}
