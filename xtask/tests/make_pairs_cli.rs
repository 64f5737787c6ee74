//! `xtask data make-pairs` end to end: a folder of identities (non-square photos, identities
//! with one image, a stray non-image file) -> a `.bin` pair set -> `xtask eval --model`, which
//! must read back the pair count and the genuine/impostor split make-pairs printed, and apply
//! the resize policy the model's `model.json` records. Also `data import-folder` listing what it
//! skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use plsc_data::decode::ImageSpec;
use plsc_eval::{EmbedderError, EvalOptions, PairSet, Resize};
use plsc_models::{Backbone, BackboneConfig};

const SIZE: usize = 28;
const DIM: usize = 8;

fn xtask(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `root/<person>/<k>.png`, 40x28 (wider than tall), identity `i` holding `counts[i]` images;
/// plus `notes.txt`, which is not an image, in the first identity.
fn identity_folder(root: &Path, counts: &[u32]) {
    for (i, &n) in counts.iter().enumerate() {
        let dir = root.join(format!("person_{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..n {
            let img = image::RgbImage::from_fn(40, 28, |x, y| {
                image::Rgb([
                    (i as u32 * 40 + x * 3) as u8,
                    (k * 50 + y * 5) as u8,
                    ((x * y) % 256) as u8,
                ])
            });
            img.save(dir.join(format!("{k}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("person_0").join("notes.txt"), "taken on holiday").unwrap();
}

/// The numbers on the line of `text` that starts with `label`.
fn numbers_on(text: &str, label: &str) -> Vec<u64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in\n{text}"));
    line.split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn make_pairs(folder: &Path, pairs: &str, seed: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "data".as_ref(),
        "make-pairs".as_ref(),
        "--folder".as_ref(),
        folder.as_os_str(),
        "--pairs".as_ref(),
        pairs.as_ref(),
        "--seed".as_ref(),
        seed.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--no-progress".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    xtask(&args)
}

/// A seeded `iresnet_tiny` written as a model directory whose `model.json` records `resize`.
fn model_dir(dir: &Path, resize: Resize) -> (PathBuf, Backbone<Flex>) {
    let model: Backbone<Flex> = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(DIM)
        .with_input_size(SIZE)
        .init_seeded(5, &Default::default())
        .unwrap();
    let out = dir.join(format!("model_{resize}"));
    plsc_serve::write_model_dir(
        &model,
        "iresnet_tiny",
        vec![127.5; 3],
        vec![128.0; 3],
        0,
        &out,
    )
    .unwrap();
    let json = out.join("model.json");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    doc["resize"] = serde_json::json!(resize.name());
    std::fs::write(&json, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    (out, model)
}

/// `eval --model M --bin SET --json [extra]`: the one set's report.
fn eval(model: &Path, set: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "eval".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--bin".as_ref(),
        set.as_os_str(),
        "--folds".as_ref(),
        "5".as_ref(),
        "--json".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let doc: serde_json::Value = serde_json::from_str(&ok(&xtask(&args))).unwrap();
    doc.as_array().unwrap()[0].clone()
}

#[test]
fn make_pairs_is_read_back_by_eval_with_the_split_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("faces");
    identity_folder(&folder, &[4, 3, 1, 5, 1, 3]);
    let set = dir.path().join("mine.bin");
    // An odd count: the split is 11 genuine, 10 impostor, so a swapped count shows.
    let text = ok(&make_pairs(&folder, "21", "3", &set, &[]));
    let split = numbers_on(&text, "pairs:");
    let (pairs, genuine, impostor) = (split[0], split[1], split[2]);
    assert_eq!(pairs, 21, "{text}");
    assert_eq!(genuine + impostor, pairs, "{text}");
    assert_eq!(genuine, impostor + 1, "{text}");
    assert!(
        text.contains("notes.txt"),
        "the stray file is listed:\n{text}"
    );
    assert_eq!(numbers_on(&text, "skipped:")[0], 1, "{text}");

    // eval reads the same counts back.
    let (model, backbone) = model_dir(dir.path(), Resize::Squash);
    let report = eval(&model, &set, &[]);
    assert_eq!(report["pairs"], pairs, "{report}");
    assert_eq!(report["genuine"], genuine, "{report}");
    assert_eq!(report["impostor"], impostor, "{report}");

    // The same seed gives the same bytes; another seed other pairs.
    let again = dir.path().join("again.bin");
    ok(&make_pairs(&folder, "21", "3", &again, &[]));
    assert_eq!(std::fs::read(&again).unwrap(), std::fs::read(&set).unwrap());
    let other = dir.path().join("other.bin");
    ok(&make_pairs(&folder, "21", "4", &other, &[]));
    let (a, b) = (
        plsc_eval::read_bin(&set).unwrap(),
        plsc_eval::read_bin(&other).unwrap(),
    );
    assert_eq!(a.issame, b.issame, "the genuine/impostor layout is fixed");
    assert_ne!(a.images, b.images);

    // An existing file is not replaced without --overwrite.
    let before = std::fs::read(&other).unwrap();
    let out = make_pairs(&folder, "21", "3", &other, &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(&other).unwrap(), before);
    ok(&make_pairs(&folder, "21", "3", &other, &["--overwrite"]));
    assert_eq!(std::fs::read(&other).unwrap(), std::fs::read(&set).unwrap());

    // The images are 40x28: eval brings them to 28x28 by the policy model.json records, or
    // the one --resize names, and its figures equal those of the library on that policy.
    let (padded_model, _) = model_dir(dir.path(), Resize::Pad);
    let device = Default::default();
    let mut embed = |x: &[f32], shape: [usize; 4]| -> Result<Vec<f32>, EmbedderError> {
        let t = Tensor::<Flex, 4>::from_data(TensorData::new(x.to_vec(), shape), &device);
        Ok(backbone.forward(t).into_data().into_vec::<f32>().unwrap())
    };
    let spec = ImageSpec {
        height: SIZE as u32,
        width: SIZE as u32,
        ..ImageSpec::default()
    };
    let options = EvalOptions {
        verify: plsc_eval::VerifyConfig {
            folds: 5,
            ..Default::default()
        },
        ..EvalOptions::default()
    };
    let mut xnorms = Vec::new();
    for (model, flag, policy) in [
        (&model, None, Resize::Squash),
        (&padded_model, None, Resize::Pad),
        (&model, Some("center-crop"), Resize::CenterCrop),
    ] {
        let extra: Vec<&str> = flag.map(|f| vec!["--resize", f]).unwrap_or_default();
        let got = eval(model, &set, &extra)["xnorm"].as_f64().unwrap();
        let spec = ImageSpec {
            resize: policy,
            ..spec.clone()
        };
        let lib = PairSet::load(&set, &spec).unwrap();
        let want = plsc_eval::verify_pair_set(&lib, &mut embed, &options)
            .unwrap()
            .xnorm;
        assert!(
            (got - want).abs() < 1e-6 * want,
            "{policy}: eval says {got}, the library {want}"
        );
        xnorms.push(got);
    }
    assert!(
        (xnorms[0] - xnorms[1]).abs() > 1e-4 && (xnorms[1] - xnorms[2]).abs() > 1e-4,
        "the policies give different inputs: {xnorms:?}"
    );
}

#[test]
fn make_pairs_errors_name_the_folder_and_give_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("faces");
    identity_folder(&folder, &[2, 3, 1]); // 1 + 3 = 4 genuine pairs at most
    let set = dir.path().join("set.bin");
    let out = make_pairs(&folder, "10", "0", &set, &[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&folder.display().to_string()), "{err}");
    assert!(err.contains("5 genuine pairs are needed"), "{err}");
    assert!(err.contains("only 4 distinct"), "{err}");
    assert!(!set.exists(), "a failed command leaves nothing");

    // --resize without --size is refused by the parser, naming the missing option.
    let out = make_pairs(&folder, "4", "0", &set, &["--resize", "pad"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
    // With --size the set holds 16x16 images.
    let text = ok(&make_pairs(
        &folder,
        "4",
        "0",
        &set,
        &["--size", "16", "--resize", "center-crop"],
    ));
    assert!(text.contains("16x16 (center-crop)"), "{text}");
    for img in plsc_eval::read_bin(&set).unwrap().images {
        let img = image::load_from_memory(&img).unwrap();
        assert_eq!((img.width(), img.height()), (16, 16));
    }
}

#[test]
fn import_folder_lists_the_files_it_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("faces");
    identity_folder(&folder, &[2, 1]);
    let out_dir = dir.path().join("data");
    let text = ok(&xtask(&[
        "data".as_ref(),
        "import-folder".as_ref(),
        folder.as_os_str(),
        "--output".as_ref(),
        out_dir.as_os_str(),
        "--no-progress".as_ref(),
    ]));
    assert_eq!(numbers_on(&text, "samples:")[0], 3, "{text}");
    assert_eq!(numbers_on(&text, "skipped:")[0], 1, "{text}");
    assert!(
        text.contains(
            &folder
                .join("person_0")
                .join("notes.txt")
                .display()
                .to_string()
        ),
        "{text}"
    );
    let help = ok(&xtask(&[
        "data".as_ref(),
        "import-folder".as_ref(),
        "--help".as_ref(),
    ]));
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("[default: squash]"), "{help}");
}
