//! Every kind of bad line gives its named error with the right file and 1-based line number,
//! and `--skip-bad` counts instead.

mod common;

use std::path::Path;

use plsc_data::format::{ImageCheck, encode_base64};
use plsc_data::import::import_list;
use plsc_data::inspect::{inspect_one, validate_part};
use plsc_data::shuffle::Remainder;
use plsc_data::writer::WriteOptions;
use plsc_data::{DataError, LineError, Location};

fn good_line() -> String {
    format!(
        "{}\t3",
        encode_base64(&common::pgm(4, 4, |x, y| (x * 16 + y) as u8))
    )
}

/// Writes a part whose line 5 is `bad` (after good lines, an empty line and CRLF endings).
fn part_with(dir: &Path, bad: &str) -> std::path::PathBuf {
    let g = good_line();
    let text = format!("{g}\r\n{g}\n\n{g}\r\n{bad}\n{g}");
    let p = dir.join("part-00000.txt");
    std::fs::write(&p, text).unwrap();
    p
}

fn expect_line_error(bad: &str, classes: Option<u64>, check: impl Fn(&LineError) -> bool) {
    let dir = tempfile::tempdir().unwrap();
    let p = part_with(dir.path(), bad);
    let err = validate_part(&p, classes, ImageCheck::Full, false).unwrap_err();
    match &err {
        DataError::Line {
            location: Location::Line { file, line },
            error,
        } => {
            assert_eq!(file, &p);
            assert_eq!(*line, 5, "{err}");
            assert!(check(error), "unexpected error kind: {err}");
        }
        other => panic!("expected a line error, got {other}"),
    }
    assert!(err.to_string().contains("part-00000.txt:5:"), "{err}");
    // Skip mode: counted and reported, the 4 good lines kept.
    let (good, report) = validate_part(&p, classes, ImageCheck::Full, true).unwrap();
    assert_eq!(good, 4);
    assert_eq!(report.skipped, 1);
    assert!(report.examples[0].contains(":5:"), "{:?}", report.examples);
}

#[test]
fn malformed_base64() {
    expect_line_error("@@not*base64@@\t1", None, |e| {
        matches!(e, LineError::Base64(_))
    });
}

#[test]
fn missing_tab() {
    let b = encode_base64(&common::pgm(2, 2, |_, _| 0));
    expect_line_error(&format!("{b} 1"), None, |e| *e == LineError::MissingTab);
}

#[test]
fn non_integer_label() {
    let b = encode_base64(&common::pgm(2, 2, |_, _| 0));
    expect_line_error(&format!("{b}\t1.5"), None, |e| {
        *e == LineError::LabelNotInteger("1.5".into())
    });
    expect_line_error(&format!("{b}\t"), None, |e| {
        matches!(e, LineError::LabelNotInteger(_))
    });
}

#[test]
fn negative_label() {
    let b = encode_base64(&common::pgm(2, 2, |_, _| 0));
    expect_line_error(&format!("{b}\t-2"), None, |e| {
        *e == LineError::NegativeLabel(-2)
    });
}

#[test]
fn label_out_of_range() {
    let b = encode_base64(&common::pgm(2, 2, |_, _| 0));
    expect_line_error(&format!("{b}\t10"), Some(10), |e| {
        *e == LineError::LabelOutOfRange {
            label: 10,
            classes: 10,
        }
    });
}

#[test]
fn not_an_image() {
    let b = encode_base64(b"this is plain text, not an image");
    expect_line_error(&format!("{b}\t1"), None, |e| {
        matches!(e, LineError::NotAnImage(_))
    });
    // A truncated PNG: recognised format, fails on full decode.
    let png = common::png_rgb(8, 8, |x, y| [x as u8, y as u8, 7]);
    let b = encode_base64(&png[..png.len() / 2]);
    expect_line_error(&format!("{b}\t1"), None, |e| {
        matches!(e, LineError::NotAnImage(_))
    });
}

#[test]
fn inspect_reports_bad_lines_and_stats() {
    let dir = tempfile::tempdir().unwrap();
    part_with(dir.path(), "garbage-without-tab");
    std::fs::write(dir.path().join("file_list.txt"), "part-00000.txt\n").unwrap();
    let r = inspect_one(dir.path(), None).unwrap();
    assert_eq!(r.lines, 4);
    assert_eq!(r.empty_lines, 1);
    assert_eq!(r.classes, 1);
    assert_eq!((r.label_min, r.label_max), (Some(3), Some(3)));
    assert_eq!(r.image_sizes.get("4x4"), Some(&4));
    assert_eq!(r.bad.skipped, 1);
    assert!(r.bad.examples[0].contains(":5:"));
}

#[test]
fn import_list_bad_lines_name_the_list_line() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.pgm");
    std::fs::write(&img, common::pgm(3, 3, |_, _| 9)).unwrap();
    std::fs::write(dir.path().join("junk.jpg"), b"not a jpeg").unwrap();
    type Check = fn(&LineError) -> bool;
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let cases: [(&str, Check); 5] = [
        ("a.pgm x", |e| matches!(e, LineError::LabelNotInteger(_))),
        ("a.pgm -1", |e| matches!(e, LineError::NegativeLabel(-1))),
        ("junk.jpg 1", |e| matches!(e, LineError::NotAnImage(_))),
        // A missing file or a folder is named as what it is, not as undecodable bytes.
        (
            "missing.png 1",
            |e| matches!(e, LineError::UnreadableFile(m) if m.ends_with("missing.png is missing")),
        ),
        (
            "sub 1",
            |e| matches!(e, LineError::UnreadableFile(m) if m.ends_with("sub is a folder, not an image file")),
        ),
    ];
    for (bad, check) in cases {
        let list = dir.path().join("label.txt");
        std::fs::write(&list, format!("a.pgm 0\r\n\r\na.pgm 1\r\n{bad}\r\na.pgm 2")).unwrap();
        let opts = WriteOptions {
            output: dir.path().join("out"),
            parts: None,
            seed: 0,
            remainder: Remainder::Pad,
            skip_bad: false,
            progress: false,
        };
        match import_list(&list, None, &opts).unwrap_err() {
            DataError::Line {
                location: Location::Line { line, .. },
                error,
            } => {
                assert_eq!(line, 4, "{bad}");
                assert!(check(&error), "{bad}: {error}");
            }
            other => panic!("{bad}: expected a line error, got {other}"),
        }
        assert!(!opts.output.exists(), "failed import left an output");
        let s = import_list(
            &list,
            None,
            &WriteOptions {
                skip_bad: true,
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!((s.samples, s.bad.skipped), (3, 1), "{bad}");
        std::fs::remove_dir_all(&opts.output).unwrap();
    }
}
