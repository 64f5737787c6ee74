//! Shuffle-and-split keeps the multiset of lines (minus dropped / plus padded), is
//! byte-identical for a seed, never touches its input, and replaces outputs atomically.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plsc_data::format::read_file_list;
use plsc_data::shuffle::{Remainder, ShuffleSplitOptions, shuffle_split};
use rand::{Rng, SeedableRng};

/// Two part files of random text lines with CRLF endings, empty lines and no final newline;
/// returns the non-empty line contents.
fn make_input(dir: &Path, n: usize) -> (Vec<PathBuf>, Vec<String>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut lines = Vec::new();
    let mut files = Vec::new();
    for f in 0..2 {
        let mut text = String::new();
        for i in 0..n {
            let len = rng.random_range(1..40);
            let body: String = (0..len)
                .map(|_| rng.random_range(b'A'..=b'z') as char)
                .collect();
            // Some duplicates, so the multiset matters.
            let line = if i % 7 == 0 {
                "dup\t1".to_string()
            } else {
                format!("{body}\t{i}")
            };
            text.push_str(&line);
            lines.push(line);
            if i + 1 < n {
                text.push_str(if i % 3 == 0 { "\r\n" } else { "\n" });
            }
            if i % 11 == 5 {
                text.push_str(if i % 2 == 0 { "\n" } else { "\r\n" });
            }
        }
        let p = dir.join(format!("in-{f}.txt"));
        std::fs::write(&p, text).unwrap();
        files.push(p);
    }
    (files, lines)
}

fn multiset(lines: impl IntoIterator<Item = String>) -> BTreeMap<String, i64> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l).or_insert(0) += 1;
    }
    m
}

fn read_output(dir: &Path) -> (Vec<Vec<u8>>, Vec<Vec<String>>) {
    let parts = read_file_list(&dir.join("file_list.txt")).unwrap();
    let bytes: Vec<Vec<u8>> = parts.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let lines = bytes
        .iter()
        .map(|b| {
            let s = String::from_utf8(b.clone()).unwrap();
            assert!(s.ends_with('\n') && !s.contains('\r') && !s.contains("\n\n"));
            s.lines().map(str::to_string).collect()
        })
        .collect();
    (bytes, lines)
}

fn opts(parts: usize, seed: u64, remainder: Remainder) -> ShuffleSplitOptions {
    ShuffleSplitOptions {
        parts,
        seed,
        remainder,
        progress: false,
        check: None,
    }
}

#[test]
fn drop_and_pad_keep_the_multiset() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, lines) = make_input(dir.path(), 50); // 100 lines over 3 parts
    let before: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let input_set = multiset(lines.clone());

    let out = dir.path().join("drop");
    let s = shuffle_split(&inputs, &out, &opts(3, 1, Remainder::Drop)).unwrap();
    assert_eq!(s.lines, 100);
    assert!(s.empty_lines > 0);
    assert_eq!((s.dropped, s.padded), (1, 0));
    assert_eq!(s.per_part, vec![33; 3]);
    let (_, parts) = read_output(&out);
    assert!(parts.iter().all(|p| p.len() == 33));
    let out_set = multiset(parts.concat());
    // out = in minus exactly `dropped` lines.
    let mut missing = 0;
    for (l, &c) in &input_set {
        let o = out_set.get(l).copied().unwrap_or(0);
        assert!(o <= c, "line {l:?} gained copies");
        missing += c - o;
    }
    assert!(out_set.keys().all(|l| input_set.contains_key(l)));
    assert_eq!(missing as u64, s.dropped);
    assert!(parts.concat() != lines, "not shuffled");

    let out = dir.path().join("pad");
    let s = shuffle_split(&inputs, &out, &opts(3, 1, Remainder::Pad)).unwrap();
    assert_eq!((s.dropped, s.padded), (0, 2));
    assert_eq!(s.per_part, vec![34; 3]);
    let (_, parts) = read_output(&out);
    let out_set = multiset(parts.concat());
    let mut extra = 0;
    for (l, &o) in &out_set {
        let c = input_set.get(l).copied().unwrap_or(0);
        assert!(c > 0, "line {l:?} invented");
        assert!(o >= c);
        extra += o - c;
    }
    assert!(input_set.keys().all(|l| out_set.contains_key(l)));
    assert_eq!(extra as u64, s.padded);

    let after: Vec<Vec<u8>> = inputs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(before, after, "input modified");
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = make_input(dir.path(), 40);
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    shuffle_split(&inputs, &a, &opts(4, 9, Remainder::Pad)).unwrap();
    shuffle_split(&inputs, &b, &opts(4, 9, Remainder::Pad)).unwrap();
    shuffle_split(&inputs, &c, &opts(4, 10, Remainder::Pad)).unwrap();
    let (ba, _) = read_output(&a);
    let (bb, _) = read_output(&b);
    let (bc, _) = read_output(&c);
    assert_eq!(ba, bb);
    assert_eq!(
        std::fs::read(a.join("file_list.txt")).unwrap(),
        std::fs::read(b.join("file_list.txt")).unwrap()
    );
    assert_ne!(ba, bc);
}

#[test]
fn file_list_input_and_replacing_an_output() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, lines) = make_input(dir.path(), 30);
    // A file_list naming the two inputs.
    std::fs::write(dir.path().join("file_list.txt"), "in-0.txt\r\nin-1.txt").unwrap();
    let out = dir.path().join("out");
    shuffle_split(&inputs, &out, &opts(5, 1, Remainder::Pad)).unwrap();
    // Replace it with a 2-part split from the file list: old parts gone, new complete.
    let s = shuffle_split(
        &[dir.path().join("file_list.txt")],
        &out,
        &opts(2, 3, Remainder::Drop),
    )
    .unwrap();
    assert_eq!(s.lines, lines.len() as u64);
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["file_list.txt", "part-00000.txt", "part-00001.txt"]);
    let (_, parts) = read_output(&out);
    assert_eq!(parts.concat().len(), 60);
    // No staging folders left behind.
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("staging"))
    );
}

#[test]
fn refuses_foreign_output_and_input_inside_output() {
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = make_input(dir.path(), 10);
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let err = shuffle_split(&inputs, &foreign, &opts(2, 0, Remainder::Pad)).unwrap_err();
    assert!(err.to_string().contains("has no file_list.txt"), "{err}");
    assert_eq!(std::fs::read(foreign.join("notes.txt")).unwrap(), b"mine");
    // The input folder itself as output: refused, input intact.
    let err = shuffle_split(&inputs, dir.path(), &opts(2, 0, Remainder::Pad)).unwrap_err();
    assert!(inputs.iter().all(|p| p.exists()), "{err}");
    // Too few lines for drop; zero parts.
    assert!(
        shuffle_split(
            &inputs,
            &dir.path().join("x"),
            &opts(100, 0, Remainder::Drop)
        )
        .is_err()
    );
    assert!(shuffle_split(&inputs, &dir.path().join("y"), &opts(0, 0, Remainder::Pad)).is_err());
    assert!(!dir.path().join("x").exists() && !dir.path().join("y").exists());
}

#[test]
fn pad_with_fewer_lines_than_parts_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tiny.txt");
    std::fs::write(&p, "a\t0\nb\t1").unwrap();
    let out = dir.path().join("o");
    let s = shuffle_split(&[p], &out, &opts(5, 2, Remainder::Pad)).unwrap();
    assert_eq!((s.per_part.clone(), s.padded), (vec![1; 5], 3));
    let (_, parts) = read_output(&out);
    let all = parts.concat();
    assert!(all.contains(&"a\t0".to_string()) && all.contains(&"b\t1".to_string()));
}

#[test]
fn checked_split_names_bad_lines_or_skips_them() {
    use plsc_data::format::encode_base64;
    use plsc_data::index::LineCheck;
    let dir = tempfile::tempdir().unwrap();
    // A minimal binary PGM is a valid image signature.
    let img = encode_base64(b"P5\n1 1\n255\n\x07");
    let p = dir.path().join("p.txt");
    std::fs::write(
        &p,
        format!("{img}\t0\r\n\r\n{img}\t1\n{img}\t7\n{img}\t2\nnot-base64!\t1\n{img}\t3"),
    )
    .unwrap();
    let mut o = opts(2, 0, Remainder::Pad);
    o.check = Some(LineCheck {
        classes: Some(5),
        skip_bad: false,
    });
    let err = shuffle_split(std::slice::from_ref(&p), &dir.path().join("a"), &o)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("p.txt:4:") && err.contains("out of range"),
        "{err}"
    );
    assert!(!dir.path().join("a").exists());
    o.check = Some(LineCheck {
        classes: Some(8),
        skip_bad: true,
    });
    let s = shuffle_split(std::slice::from_ref(&p), &dir.path().join("b"), &o).unwrap();
    assert_eq!((s.lines, s.bad.skipped), (5, 1));
    assert!(
        s.bad.examples[0].contains("p.txt:6:"),
        "{:?}",
        s.bad.examples
    );
    let (_, parts) = read_output(&dir.path().join("b"));
    assert!(parts.concat().iter().all(|l| !l.starts_with("not-base64")));
}

#[test]
fn failed_run_leaves_the_old_output_intact() {
    use plsc_data::index::LineCheck;
    let dir = tempfile::tempdir().unwrap();
    let (inputs, _) = make_input(dir.path(), 20);
    let out = dir.path().join("out");
    shuffle_split(&inputs, &out, &opts(3, 1, Remainder::Pad)).unwrap();
    let (before, _) = read_output(&out);
    // A run that fails while indexing (the text lines are not images) changes nothing.
    let mut o = opts(2, 5, Remainder::Pad);
    o.check = Some(LineCheck::default());
    assert!(shuffle_split(&inputs, &out, &o).is_err());
    let (after, _) = read_output(&out);
    assert_eq!(before, after);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 4);
    assert!(
        std::fs::read_dir(dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("staging"))
    );
}
