//! `xtask plot` on a hand-written metrics.jsonl: every chart is a PNG of the chart size that
//! decodes and is not blank; a bad line is an error naming the file and the line.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Command, Output};

/// The chart size `xtask plot` draws (xtask::plot::WIDTH x HEIGHT).
const SIZE: (u32, u32) = (960, 600);

fn xtask(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn train_line(step: u64, loss: f64, lr: f64, acc1: f64) -> String {
    format!(
        r#"{{"kind":"train","epoch":0,"step":{step},"lr":{lr},"loss":{loss},"images_per_sec":300.0,"acc1":{acc1},"acc5":{},"loss_scale":1.0,"skipped_steps":0,"elapsed_s":{}}}"#,
        (acc1 + 0.1).min(1.0),
        step as f64 * 0.3
    )
}

/// An eval record with a 400-point ROC: TPR = FPR^(1/4) on FPR = (i / 399)^3.
fn eval_line(step: u64, target: &str, accuracy: f64) -> String {
    let fpr: Vec<f64> = (0..400).map(|i| (i as f64 / 399.0).powi(3)).collect();
    let tpr: Vec<f64> = fpr.iter().map(|f| f.powf(0.25)).collect();
    serde_json::json!({
        "kind": "eval", "step": step, "target": target, "accuracy": accuracy,
        "accuracy_std": 0.02, "tar": 0.4, "far": 0.001, "xnorm": 7.5, "auc": 0.8,
        "roc_fpr": fpr, "roc_tpr": tpr,
    })
    .to_string()
}

/// Decodes a PNG, checks its size and that it holds more than one colour.
fn check_png(path: &Path) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), SIZE, "{}", path.display());
    let colours: HashSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(
        colours.len() > 1,
        "{} is blank ({} colour)",
        path.display(),
        colours.len()
    );
}

#[test]
fn plot_writes_every_chart() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let mut lines = Vec::new();
    for (i, step) in [10u64, 20, 30, 40].into_iter().enumerate() {
        lines.push(train_line(
            step,
            10.0 / (i as f64 + 1.0),
            0.1 - 0.02 * i as f64,
            0.5 + 0.1 * i as f64,
        ));
        if step % 20 == 0 {
            lines.push(eval_line(step, "fmnist_pairs", 0.8 + step as f64 / 1000.0));
            lines.push(eval_line(step, "lfw", 0.7));
        }
    }
    std::fs::write(run.join("metrics.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        run.join("config.toml"),
        "model = \"iresnet_tiny\"\nloss = \"dist_arcface\"\nnum_classes = 8\n",
    )
    .unwrap();

    let out_dir = dir.path().join("charts");
    let out = xtask(&[
        "plot".as_ref(),
        run.as_os_str(),
        "--out".as_ref(),
        out_dir.as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let names = [
        "loss.png",
        "lr.png",
        "accuracy.png",
        "roc-fmnist_pairs-step20.png",
        "roc-lfw-step20.png",
        "roc-fmnist_pairs-step40.png",
        "roc-lfw-step40.png",
    ];
    let expected: Vec<String> = names
        .iter()
        .map(|n| out_dir.join(n).display().to_string())
        .collect();
    assert_eq!(printed, expected, "the printed paths, in order");
    for name in names {
        check_png(&out_dir.join(name));
    }
    // Nothing left under a temp name, nothing written into the run directory.
    let files: Vec<_> = std::fs::read_dir(&out_dir).unwrap().collect();
    assert_eq!(files.len(), names.len());
    assert!(!run.join("loss.png").exists());
}

#[test]
fn bad_lines_and_empty_metrics_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path();
    let metrics = run.join("metrics.jsonl");
    let stderr = |out: Output| {
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // Line 2 is cut short.
    let good = train_line(10, 5.0, 0.1, 0.5);
    std::fs::write(
        &metrics,
        format!("{good}\n{{\"kind\":\"train\",\"step\":\n"),
    )
    .unwrap();
    let err = stderr(xtask(&["plot".as_ref(), run.as_os_str()]));
    assert!(
        err.contains("metrics.jsonl line 2") && err.contains("not JSON"),
        "{err}"
    );

    // Line 3 is JSON but a train record without its step (plsc-train's LogRecord).
    std::fs::write(
        &metrics,
        format!("{good}\n\n{{\"kind\":\"train\",\"epoch\":0,\"loss\":1.0}}\n"),
    )
    .unwrap();
    let err = stderr(xtask(&["plot".as_ref(), run.as_os_str()]));
    assert!(
        err.contains("metrics.jsonl line 3") && err.contains("step"),
        "{err}"
    );

    // No kind.
    std::fs::write(&metrics, format!("{good}\n{{\"step\":3}}\n")).unwrap();
    let err = stderr(xtask(&["plot".as_ref(), run.as_os_str()]));
    assert!(
        err.contains("metrics.jsonl line 2") && err.contains("kind"),
        "{err}"
    );

    // Only eval records: nothing to draw the loss from.
    std::fs::write(&metrics, eval_line(5, "lfw", 0.9) + "\n").unwrap();
    let err = stderr(xtask(&["plot".as_ref(), run.as_os_str()]));
    assert!(err.contains("no train records"), "{err}");

    // No metrics file at all.
    std::fs::remove_file(&metrics).unwrap();
    let err = stderr(xtask(&["plot".as_ref(), run.as_os_str()]));
    assert!(
        err.contains("metrics.jsonl") && err.contains("cannot read"),
        "{err}"
    );
    assert!(!run.join("loss.png").exists());
}
