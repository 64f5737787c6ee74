//! Folder importer, synthetic data.

mod common;

use plsc_data::decode::{ImageSpec, decode_into};
use plsc_data::format::read_file_list;
use plsc_data::inspect::inspect_one;
use plsc_data::shuffle::Remainder;
use plsc_data::source::{Base64Source, SampleSource};
use plsc_data::synth::{SynthFormat, SynthOptions, synth, synth_image};
use plsc_data::writer::WriteOptions;

fn wopts(output: std::path::PathBuf, parts: Option<usize>) -> WriteOptions {
    WriteOptions {
        output,
        parts,
        seed: 3,
        remainder: Remainder::Pad,
        skip_bad: false,
        progress: false,
    }
}

#[test]
fn import_folder_assigns_ids_by_sorted_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for (name, n, v) in [("zeta", 2, 200u8), ("alpha", 3, 10), ("mid", 1, 100)] {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..n {
            std::fs::write(
                root.join(name).join(format!("{i}.pgm")),
                common::pgm(4, 4, |_, _| v),
            )
            .unwrap();
        }
    }
    let out = dir.path().join("out");
    let s = plsc_data::import::import_folder(&root, &wopts(out.clone(), None)).unwrap();
    assert_eq!(s.samples, 6);
    assert_eq!(
        std::fs::read_to_string(out.join("class_map.tsv")).unwrap(),
        "0\talpha\n1\tmid\n2\tzeta\n"
    );
    let src = Base64Source::open(&read_file_list(&out.join("file_list.txt")).unwrap()).unwrap();
    let spec = ImageSpec {
        height: 4,
        width: 4,
        channels: 1,
        ..ImageSpec::default()
    };
    for i in 0..src.len() {
        let (bytes, label) = src.get(i).unwrap();
        let mut px = vec![0f32; 16];
        decode_into(&bytes, &spec, false, &mut px).unwrap();
        let v = [10.0f32, 100.0, 200.0][label as usize];
        assert_eq!(px[0], (v - 127.5) / 128.0, "sample {i}");
    }
    // Re-import over the previous output (it holds the class map too) with 2 parts.
    let s = plsc_data::import::import_folder(&root, &wopts(out.clone(), Some(2))).unwrap();
    assert_eq!(s.split.unwrap().per_part, vec![3, 3]);
    assert!(out.join("class_map.tsv").exists());
    // A non-image file is a named error, or skipped with skip-bad.
    std::fs::write(root.join("mid").join("notes.txt"), "hello").unwrap();
    let err =
        plsc_data::import::import_folder(&root, &wopts(dir.path().join("o2"), None)).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    let mut o = wopts(dir.path().join("o3"), None);
    o.skip_bad = true;
    let s = plsc_data::import::import_folder(&root, &o).unwrap();
    assert_eq!((s.samples, s.bad.skipped), (6, 1));
}

#[test]
fn synth_is_class_conditional_and_deterministic() {
    let opts = SynthOptions {
        classes: 4,
        per_class: 3,
        size: 24,
        channels: 3,
        format: SynthFormat::Png,
        quality: 90,
        seed: 1,
    };
    assert_eq!(
        synth_image(&opts, 2, 1).unwrap(),
        synth_image(&opts, 2, 1).unwrap()
    );
    assert_ne!(
        synth_image(&opts, 2, 1).unwrap(),
        synth_image(&opts, 2, 2).unwrap()
    );
    let spec = ImageSpec {
        height: 24,
        width: 24,
        channels: 3,
        ..ImageSpec::default()
    };
    let img = |c, s| {
        let mut v = vec![0f32; spec.numel()];
        decode_into(&synth_image(&opts, c, s).unwrap(), &spec, false, &mut v).unwrap();
        v
    };
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
    let mut within = 0.0;
    let mut between = 0.0;
    for c in 0..4 {
        within += dist(&img(c, 0), &img(c, 1));
        between += dist(&img(c, 0), &img((c + 1) % 4, 0));
    }
    assert!(within * 2.0 < between, "within {within} between {between}");

    let dir = tempfile::tempdir().unwrap();
    let jpeg = SynthOptions {
        format: SynthFormat::Jpeg,
        channels: 1,
        ..opts
    };
    let s = synth(&jpeg, &wopts(dir.path().join("d"), Some(2))).unwrap();
    assert_eq!(s.samples, 12);
    let r = inspect_one(&dir.path().join("d"), Some(4)).unwrap();
    assert_eq!((r.lines, r.classes, r.bad.skipped), (12, 4, 0));
    assert_eq!(r.image_sizes.get("24x24"), Some(&12));
    assert_eq!((r.per_class.min, r.per_class.max), (3, 3));
}
