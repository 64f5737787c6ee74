//! The pair-set builder: drawing from labels (the algorithm import-idx used for the shipped
//! Fashion-MNIST set) and building from a folder of identities.

mod common;

use std::collections::HashSet;
use std::path::Path;

use plsc_data::DataError;
use plsc_data::Resize;
use plsc_data::pairs::{MakePairsOptions, Pair, gather_images, make_pairs, sample_pairs};
use plsc_data::resize::ResizeTo;

fn src() -> &'static Path {
    Path::new("labels.idx")
}

#[test]
fn pairs_alternate_genuine_and_impostor_and_are_distinct() {
    let labels: Vec<u32> = (0..20).map(|i| i / 4).collect(); // 5 classes x 4 images
    let pairs = sample_pairs(&labels, 30, 7, src()).unwrap();
    assert_eq!(pairs.len(), 30);
    let mut seen = HashSet::new();
    for (i, p) in pairs.iter().enumerate() {
        assert_ne!(p.a, p.b);
        assert_eq!(p.same, i % 2 == 0, "pair {i}");
        assert_eq!(labels[p.a] == labels[p.b], p.same, "pair {i}: {p:?}");
        assert!(
            seen.insert((p.a.min(p.b), p.a.max(p.b))),
            "pair {i} repeats"
        );
    }
    // Every contiguous fold of 3 pairs holds both kinds.
    for fold in pairs.chunks(3) {
        assert!(fold.iter().any(|p| p.same) && fold.iter().any(|p| !p.same));
    }
    assert_eq!(sample_pairs(&labels, 30, 7, src()).unwrap(), pairs);
    assert_ne!(sample_pairs(&labels, 30, 8, src()).unwrap(), pairs);
    // All 5 x 6 = 30 genuine pairs exist, so asking for 60 pairs still works.
    assert_eq!(sample_pairs(&labels, 60, 1, src()).unwrap().len(), 60);
}

/// The pairs `plsc_eval::sample_pairs` drew before the builder moved into plsc-data (recorded
/// from that code): the shipped `datasets/fashion_mnist/fmnist_pairs.bin` was drawn by it, so
/// `import-idx` with the same inputs still writes the same set.
#[test]
fn the_drawing_is_the_one_the_shipped_set_was_made_with() {
    let labels: Vec<u32> = vec![3, 0, 0, 1, 7, 1, 2, 3, 3, 0, 5, 3, 1, 9, 9, 2];
    let as_tuples = |p: Vec<Pair>| -> Vec<(usize, usize, bool)> {
        p.into_iter().map(|p| (p.a, p.b, p.same)).collect()
    };
    assert_eq!(
        as_tuples(sample_pairs(&labels, 12, 5, src()).unwrap()),
        [
            (3, 5, true),
            (4, 6, false),
            (14, 13, true),
            (6, 12, false),
            (6, 15, true),
            (4, 13, false),
            (12, 5, true),
            (4, 10, false),
            (2, 9, true),
            (8, 2, false),
            (1, 9, true),
            (2, 4, false)
        ]
    );
    assert_eq!(
        as_tuples(sample_pairs(&labels, 7, 0, src()).unwrap()),
        [
            (8, 11, true),
            (8, 10, false),
            (1, 9, true),
            (10, 11, false),
            (14, 13, true),
            (4, 13, false),
            (15, 6, true)
        ]
    );
}

#[test]
fn impossible_requests_are_named_errors_with_the_counts() {
    let distinct: Vec<u32> = (0..10).collect();
    match sample_pairs(&distinct, 4, 0, src()) {
        Err(DataError::TooFewGenuinePairs {
            needed: 2,
            available: 0,
            identities: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let one_class = vec![3u32; 10];
    match sample_pairs(&one_class, 4, 0, src()) {
        Err(DataError::TooFewImpostorPairs {
            needed: 2,
            available: 0,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let labels: Vec<u32> = (0..6).map(|i| i / 3).collect(); // 2 classes x 3: 6 genuine pairs
    let err = sample_pairs(&labels, 14, 0, src()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            err,
            DataError::TooFewGenuinePairs {
                pairs: 14,
                needed: 7,
                available: 6,
                identities: 2,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(text.starts_with("labels.idx: 7 genuine pairs"), "{text}");
    assert!(text.contains("only 6 distinct"), "{text}");
    assert!(text.contains("at most 12 pairs"), "{text}");
    assert!(sample_pairs(&labels, 12, 0, src()).is_ok());
    let err = sample_pairs(&labels, 1, 0, src()).unwrap_err();
    assert!(err.to_string().contains("at least 2"), "{err}");
}

#[test]
fn gathered_images_follow_the_pairs_and_load_each_image_once() {
    let labels: Vec<u32> = (0..12).map(|i| i / 3).collect();
    let images: Vec<Vec<u8>> = (0..12u8)
        .map(|i| common::pgm(2, 2, |_, _| i * 10))
        .collect();
    let pairs = sample_pairs(&labels, 10, 3, src()).unwrap();
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let set = gather_images(
        &pairs,
        |i| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok(images[i].clone())
        },
        false,
    )
    .unwrap();
    assert_eq!(set.images.len(), 20);
    for (i, p) in pairs.iter().enumerate() {
        assert_eq!(set.images[2 * i], images[p.a]);
        assert_eq!(set.images[2 * i + 1], images[p.b]);
        assert_eq!(set.issame[i], p.same);
    }
    let distinct: HashSet<usize> = pairs.iter().flat_map(|p| [p.a, p.b]).collect();
    assert_eq!(calls.into_inner(), distinct.len());
    assert_eq!((set.genuine(), set.impostor()), (5, 5));
}

/// `root/<id>/<n>.png`: identity `id` has `counts[id]` images, each its own colour and 6x4 (not
/// square).
fn identity_folder(root: &Path, counts: &[usize]) {
    for (id, &n) in counts.iter().enumerate() {
        let dir = root.join(format!("person_{id:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for k in 0..n {
            let png = common::png_rgb(6, 4, |x, y| [id as u8 * 20, k as u8 * 30, (x + y) as u8]);
            std::fs::write(dir.join(format!("{k}.png")), png).unwrap();
        }
    }
}

fn opts(pairs: usize, seed: u64) -> MakePairsOptions {
    MakePairsOptions {
        pairs,
        seed,
        resize: None,
        progress: false,
    }
}

#[test]
fn a_folder_gives_half_genuine_half_impostor_reproducibly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("faces");
    // Two identities with a single image: they may only appear in impostor pairs.
    identity_folder(&root, &[3, 4, 1, 5, 1, 2]);
    std::fs::write(root.join("person_01").join("Thumbs.db"), b"\x00\x01junk").unwrap();
    let (set, summary) = make_pairs(&root, &opts(20, 4)).unwrap();
    assert_eq!(
        (summary.pairs, summary.genuine, summary.impostor),
        (20, 10, 10)
    );
    assert_eq!((set.genuine(), set.impostor()), (10, 10));
    assert_eq!(set.images.len(), 40);
    assert_eq!((summary.identities, summary.identities_with_pairs), (6, 4));
    assert_eq!(summary.images, 16);
    assert_eq!(summary.skipped.len(), 1);
    assert!(summary.skipped[0].path.ends_with("person_01/Thumbs.db"));
    // Each stored image is one of the folder's files, byte for byte; single-image identities
    // only in impostor pairs.
    let files: Vec<(Vec<u8>, String)> = walk(&root);
    let owner = |bytes: &[u8]| -> String {
        files
            .iter()
            .find(|(b, _)| b == bytes)
            .map(|(_, id)| id.clone())
            .expect("a stored image is a file of the folder")
    };
    for (i, same) in set.issame.iter().enumerate() {
        let (a, b) = (owner(&set.images[2 * i]), owner(&set.images[2 * i + 1]));
        assert_eq!(a == b, *same, "pair {i}: {a} {b}");
        if *same {
            assert!(a != "person_02" && a != "person_04", "pair {i}: {a}");
        }
    }
    // Same seed, same set; another seed, other pairs.
    assert_eq!(make_pairs(&root, &opts(20, 4)).unwrap().0, set);
    assert_ne!(
        make_pairs(&root, &opts(20, 5)).unwrap().0.images,
        set.images
    );
}

/// (bytes, identity folder name) of every file under `root`.
fn walk(root: &Path) -> Vec<(Vec<u8>, String)> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(root).unwrap() {
        let d = d.unwrap().path();
        for f in std::fs::read_dir(&d).unwrap() {
            let f = f.unwrap().path();
            out.push((
                std::fs::read(&f).unwrap(),
                d.file_name().unwrap().to_string_lossy().into_owned(),
            ));
        }
    }
    out
}

#[test]
fn a_folder_with_too_few_genuine_pairs_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("faces");
    identity_folder(&root, &[2, 3, 1, 1]); // 1 + 3 = 4 genuine pairs
    let err = make_pairs(&root, &opts(10, 0)).unwrap_err();
    assert!(
        matches!(
            &err,
            DataError::TooFewGenuinePairs {
                from,
                needed: 5,
                available: 4,
                identities: 2,
                ..
            } if from == &root
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&root.display().to_string()),
        "{err}"
    );
    assert_eq!(make_pairs(&root, &opts(8, 0)).unwrap().1.genuine, 4);
}

#[test]
fn images_are_stored_at_the_size_and_policy_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("faces");
    identity_folder(&root, &[3, 3, 3]);
    for policy in Resize::ALL {
        let mut o = opts(6, 1);
        o.resize = Some(ResizeTo::square(4, policy));
        let (set, summary) = make_pairs(&root, &o).unwrap();
        assert_eq!(summary.resized, o.resize);
        let (plain, _) = make_pairs(&root, &opts(6, 1)).unwrap();
        for (stored, original) in set.images.iter().zip(&plain.images) {
            let want = policy.apply(image::load_from_memory(original).unwrap(), 4, 4);
            let got = image::load_from_memory(stored).unwrap();
            assert_eq!(got.to_rgb8(), want.to_rgb8(), "{policy}");
        }
    }
}

#[test]
fn a_broken_image_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("faces");
    identity_folder(&root, &[2, 2]);
    // A PNG header with a cut-off body: it passes the header check, not the decoding.
    let mut png = common::png_rgb(6, 4, |x, _| [x as u8, 0, 0]);
    png.truncate(png.len() - 16);
    std::fs::write(root.join("person_00").join("0.png"), &png).unwrap();
    std::fs::write(root.join("person_00").join("1.png"), &png).unwrap();
    let err = make_pairs(&root, &opts(2, 0)).unwrap_err();
    assert!(matches!(err, DataError::ImageFile { .. }), "{err:?}");
    assert!(err.to_string().contains("person_00/"), "{err}");
    // Not a folder of identities at all.
    let err = make_pairs(&dir.path().join("nowhere"), &opts(2, 0)).unwrap_err();
    assert!(err.to_string().contains("nowhere"), "{err}");
}
