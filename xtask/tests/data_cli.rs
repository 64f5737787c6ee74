//! `xtask data ...` end to end: synth -> shuffle-split -> inspect, and a bad line's exit.

use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
fn synth_split_inspect() {
    let dir = tempfile::tempdir().unwrap();
    let synth = dir.path().join("synth");
    let out = xtask()
        .args([
            "data",
            "synth",
            "--classes",
            "5",
            "--per-class",
            "3",
            "--size",
            "16",
        ])
        .args(["--format", "png", "--json", "--no-progress", "--output"])
        .arg(&synth)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["samples"], 15);

    let split = dir.path().join("split");
    let out = xtask()
        .args([
            "data",
            "shuffle-split",
            "--parts",
            "4",
            "--seed",
            "7",
            "--remainder",
            "drop",
        ])
        .args(["--json", "--no-progress", "--input"])
        .arg(synth.join("file_list.txt"))
        .arg("--output")
        .arg(&split)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["per_part"], serde_json::json!([3, 3, 3, 3]));
    assert_eq!(s["dropped"], 3);

    let out = xtask()
        .args(["data", "inspect", "--json", "--classes", "5"])
        .arg(split.join("file_list.txt"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["lines"], 12);
    assert_eq!(r["image_sizes"]["16x16"], 12);

    // A label beyond the class count: reported with file and line, non-zero exit.
    let out = xtask()
        .args(["data", "inspect", "--classes", "2"])
        .arg(split.join("file_list.txt"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("part-0000") && text.contains("out of range"),
        "{text}"
    );
}

#[test]
fn an_empty_part_fails_inspect_and_shuffle_split_which_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("part-00000.txt");
    std::fs::write(&empty, "").unwrap();
    let out = xtask()
        .args(["data", "inspect"])
        .arg(&empty)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "inspect of an empty part exits 0");
    assert!(
        err.contains(&format!("part file {}: no samples", empty.display())),
        "{err}"
    );

    let out = xtask()
        .args([
            "data",
            "shuffle-split",
            "--parts",
            "2",
            "--no-progress",
            "--input",
        ])
        .arg(&empty)
        .arg("--output")
        .arg(dir.path().join("new1/new2/out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("part-00000.txt: no samples"), "{err}");
    assert!(
        !dir.path().join("new1").exists(),
        "the failed run left new1/"
    );
}
