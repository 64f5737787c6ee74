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
    let s = plsc_data::import::import_folder(&root, &wopts(out.clone(), None), None).unwrap();
    assert_eq!(s.written.samples, 6);
    assert!(s.skipped.is_empty());
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
    let s = plsc_data::import::import_folder(&root, &wopts(out.clone(), Some(2)), None).unwrap();
    assert_eq!(s.written.split.unwrap().per_part, vec![3, 3]);
    assert!(out.join("class_map.tsv").exists());
    // Files that are not images (by their header, whatever their name) are skipped and listed,
    // as is a sub-folder; an image with a misleading name is taken.
    std::fs::write(root.join("mid").join("notes.txt"), "hello").unwrap();
    std::fs::write(root.join("mid").join("fake.png"), "not a png").unwrap();
    std::fs::create_dir(root.join("mid").join("nested")).unwrap();
    std::fs::write(
        root.join("alpha").join("photo.dat"),
        common::pgm(4, 4, |_, _| 10),
    )
    .unwrap();
    let s =
        plsc_data::import::import_folder(&root, &wopts(dir.path().join("o2"), None), None).unwrap();
    assert_eq!((s.written.samples, s.written.bad.skipped), (7, 0));
    let skipped: Vec<&std::path::Path> = s.skipped.iter().map(|k| k.path.as_path()).collect();
    assert_eq!(
        skipped,
        [
            root.join("mid").join("fake.png"),
            root.join("mid").join("nested"),
            root.join("mid").join("notes.txt"),
        ]
    );
    assert!(s.skipped.iter().all(|k| !k.reason.is_empty()));
}

#[test]
fn import_folder_stores_images_at_the_size_and_policy_asked_for() {
    use plsc_data::Resize;
    use plsc_data::resize::ResizeTo;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("a")).unwrap();
    // 4x2: left half 200, right half 50.
    let wide = common::pgm(4, 2, |x, _| if x < 2 { 200 } else { 50 });
    std::fs::write(root.join("a").join("wide.pgm"), &wide).unwrap();
    std::fs::write(
        root.join("a").join("square.pgm"),
        common::pgm(4, 4, |_, _| 9),
    )
    .unwrap();
    for policy in Resize::ALL {
        let out = dir.path().join(policy.name());
        let to = ResizeTo::square(4, policy);
        let s =
            plsc_data::import::import_folder(&root, &wopts(out.clone(), None), Some(to)).unwrap();
        assert_eq!(s.resized, Some(to));
        let src = Base64Source::open(&read_file_list(&out.join("file_list.txt")).unwrap()).unwrap();
        // An image already at the size is stored byte for byte; the other is the policy's.
        let (square, _) = src.get(0).unwrap();
        assert_eq!(square, common::pgm(4, 4, |_, _| 9), "{policy}");
        let (stored, _) = src.get(1).unwrap();
        let stored = image::load_from_memory(&stored).unwrap();
        let want = policy.apply(image::load_from_memory(&wide).unwrap(), 4, 4);
        assert_eq!(stored.to_luma8(), want.to_luma8(), "{policy}");
    }
    // A file with an image header but a broken body is an error naming it.
    let mut broken = common::png_rgb(8, 8, |x, y| [x as u8, y as u8, 0]);
    broken.truncate(broken.len() - 20);
    std::fs::write(root.join("a").join("broken.png"), &broken).unwrap();
    let err = plsc_data::import::import_folder(
        &root,
        &wopts(dir.path().join("o"), None),
        Some(ResizeTo::square(4, Resize::Pad)),
    )
    .unwrap_err();
    assert!(err.to_string().contains("broken.png"), "{err}");
    assert!(
        !dir.path().join("o").exists(),
        "a failed import leaves nothing"
    );
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
