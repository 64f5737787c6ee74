//! A failed data command leaves nothing it created, and says what is actually wrong: an empty
//! part file is an error naming it (shuffle-split and inspect), a list line naming a folder
//! says it is a folder.

mod common;

use std::path::Path;

use plsc_data::DataError;
use plsc_data::format::{encode_line, read_file_list};
use plsc_data::index::LineCheck;
use plsc_data::inspect::inspect;
use plsc_data::shuffle::{Remainder, ShuffleSplitOptions, shuffle_split};

fn opts(check: bool) -> ShuffleSplitOptions {
    ShuffleSplitOptions {
        parts: 2,
        seed: 1,
        remainder: Remainder::Pad,
        progress: false,
        check: check.then_some(LineCheck {
            classes: None,
            skip_bad: false,
        }),
    }
}

/// A part file of `n` valid lines (a 2x2 grey image, labels 0..n).
fn good_part(path: &Path, n: usize) {
    let img = common::pgm(2, 2, |x, y| (x * 40 + y * 80) as u8);
    let mut text = Vec::new();
    for i in 0..n {
        encode_line(&img, i as i64, &mut text);
    }
    std::fs::write(path, text).unwrap();
}

fn is_empty_part_error(e: &DataError, part: &Path) -> bool {
    matches!(e, DataError::Empty { what } if what == &format!("part file {}", part.display()))
}

#[test]
fn a_failed_shuffle_split_removes_the_folders_it_created() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty.txt");
    std::fs::write(&empty, "\n\r\n").unwrap();
    let out = tmp.path().join("new1/new2/out");
    for check in [false, true] {
        let err = shuffle_split(std::slice::from_ref(&empty), &out, &opts(check)).unwrap_err();
        assert!(is_empty_part_error(&err, &empty), "{err}");
        assert!(
            !tmp.path().join("new1").exists(),
            "new1/ created by the failed run is left behind"
        );
    }
    // A folder that was there before stays.
    std::fs::create_dir(tmp.path().join("new1")).unwrap();
    shuffle_split(std::slice::from_ref(&empty), &out, &opts(true)).unwrap_err();
    assert!(tmp.path().join("new1").is_dir());
    assert!(!tmp.path().join("new1/new2").exists());
}

#[test]
fn an_empty_part_among_good_ones_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("part-0.txt");
    good_part(&good, 6);
    let empty = tmp.path().join("part-1.txt");
    std::fs::write(&empty, "").unwrap();
    let inputs = [good.clone(), empty.clone()];
    for check in [false, true] {
        let err = shuffle_split(&inputs, &tmp.path().join("out"), &opts(check)).unwrap_err();
        assert!(is_empty_part_error(&err, &empty), "{err}");
        assert!(err.to_string().contains("part-1.txt"), "{err}");
    }
    assert!(!tmp.path().join("out").exists());

    // inspect: the same error (the command exits non-zero), not `lines: 0`.
    let err = inspect(&inputs, None).unwrap_err();
    assert!(is_empty_part_error(&err, &empty), "{err}");
    let err = inspect(std::slice::from_ref(&empty), None).unwrap_err();
    assert!(is_empty_part_error(&err, &empty), "{err}");
    assert_eq!(inspect(&[good], None).unwrap().lines, 6);
}

#[test]
fn a_file_list_line_naming_a_folder_says_it_is_a_folder() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("part-0.txt")).unwrap();
    let list = tmp.path().join("file_list.txt");
    std::fs::write(&list, "part-0.txt\nmissing.txt\n").unwrap();
    match read_file_list(&list).unwrap_err() {
        DataError::FileList { line, reason, .. } => {
            assert_eq!(line, 1);
            assert!(
                reason.ends_with("part-0.txt is a folder, not a part file"),
                "{reason}"
            );
        }
        other => panic!("{other}"),
    }
    std::fs::write(&list, "missing.txt\n").unwrap();
    match read_file_list(&list).unwrap_err() {
        DataError::FileList { reason, .. } => {
            assert!(reason.ends_with("missing.txt does not exist"), "{reason}")
        }
        other => panic!("{other}"),
    }
}
