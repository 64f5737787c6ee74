//! `cargo xtask import-idx`: IDX image/label files (MNIST, Fashion-MNIST; gzip or plain) into
//! the base64 training layout, plus a verification pair set in InsightFace's `.bin` format drawn
//! from classes held out of training (open-set, as face verification is). Reading IDX and
//! choosing the classes is plsc-data's (`plsc_data::idx`); this command wires it to the writer
//! and the pair builder.
//!
//! The shipped `datasets/fashion_mnist` was built with the defaults, after
//! `apt-get install dataset-fashion-mnist` (Debian puts the IDX files in
//! `/usr/share/datasets/fashion-mnist`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use plsc_data::idx::{
    ClassSplit, held_out_images, hold_out_classes, no_held_out_images, read_idx_images,
    read_idx_labels,
};
use plsc_data::shuffle::Remainder;
use plsc_data::writer::{WriteOptions, write_dataset};

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

/// What to install when a default input file is missing.
fn hint(path: &Path) -> String {
    format!(
        "reading {} (Fashion-MNIST: apt-get install dataset-fashion-mnist, files in {FMNIST})",
        path.display()
    )
}

pub fn run(args: ImportIdxArgs) -> anyhow::Result<()> {
    let train = read_idx_images(&args.train_images).with_context(|| hint(&args.train_images))?;
    let labels = read_idx_labels(&args.train_labels).with_context(|| hint(&args.train_labels))?;
    if train.images.len() != labels.len() {
        bail!(
            "{} has {} images but {} has {} labels",
            args.train_images.display(),
            train.images.len(),
            args.train_labels.display(),
            labels.len()
        );
    }
    let ClassSplit { kept, chosen } = hold_out_classes(&labels, &args.holdout, args.per_class);
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
            train.png(src).map(|b| (b, label))
        },
        &[("class_map.tsv", class_map)],
        &[],
    )?;

    // The pair set: held-out classes only, from the pair images.
    let pimages = read_idx_images(&args.pair_images).with_context(|| hint(&args.pair_images))?;
    let plabels = read_idx_labels(&args.pair_labels).with_context(|| hint(&args.pair_labels))?;
    let order = held_out_images(&plabels, &args.holdout, args.seed);
    if order.is_empty() {
        return Err(no_held_out_images(&args.holdout, &args.pair_labels).into());
    }
    let encoded: Vec<Vec<u8>> = order
        .iter()
        .map(|&i| pimages.png(i))
        .collect::<plsc_data::Result<_>>()?;
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
