//! `xtask import-idx` on hand-written IDX files and `xtask train` on its output: the run
//! directory holds the settings, train and eval records, the backbone and the summary.

use std::path::Path;
use std::process::Command;

/// `n` 28x28 images whose brightness pattern depends on the class, and their labels.
fn write_idx(dir: &Path, name: &str, classes: u8, per_class: usize) {
    let n = classes as usize * per_class;
    let mut img = vec![0, 0, 8, 3];
    for v in [n as u32, 28, 28] {
        img.extend(v.to_be_bytes());
    }
    let mut lab = vec![0, 0, 8, 1];
    lab.extend((n as u32).to_be_bytes());
    for i in 0..n {
        let c = (i % classes as usize) as u8;
        lab.push(c);
        for y in 0..28usize {
            for x in 0..28usize {
                let on = (x / 4 + y / 4 + c as usize).is_multiple_of(classes as usize);
                img.push(if on { 200 } else { (i * 7 % 50) as u8 });
            }
        }
    }
    std::fs::write(dir.join(format!("{name}-images")), img).unwrap();
    std::fs::write(dir.join(format!("{name}-labels")), lab).unwrap();
}

fn xtask(cwd: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .current_dir(cwd)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "xtask {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn import_idx_then_train_writes_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_idx(d, "train", 4, 8);
    write_idx(d, "test", 4, 6);
    let out = xtask(
        d,
        &[
            "import-idx",
            "--train-images",
            "train-images",
            "--train-labels",
            "train-labels",
            "--pair-images",
            "test-images",
            "--pair-labels",
            "test-labels",
            "--holdout",
            "2,3",
            "--per-class",
            "8",
            "--pairs",
            "20",
            "--parts",
            "2",
            "--output",
            "fm",
        ],
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["train"]["samples"], 16);
    assert_eq!(
        report["train"]["original_classes"],
        serde_json::json!([0, 1])
    );
    let bin = plsc_eval::read_bin(&d.join("fm/fmnist_pairs.bin")).unwrap();
    assert_eq!(bin.issame.len(), 20);
    assert_eq!(bin.issame.iter().filter(|&&s| s).count(), 10);
    assert_eq!(bin.images.len(), 40);

    let config = d.join("job.json");
    std::fs::write(
        &config,
        r#"{"num_classes": 2, "embedding_size": 16, "loss": "dist_arcface", "model": "iresnet_tiny",
            "input_size": 28, "in_channels": 1, "ranks": 2, "train_batch_size": 4,
            "train_steps": 3, "log_period": 2, "calc_acc": true, "dataset_dir": "fm/train",
            "val_dir": "fm", "val_targets": ["fmnist_pairs"], "test_batch_size": 8,
            "model_save_dir": "runs"}"#,
    )
    .unwrap();
    let out = xtask(
        d,
        &[
            "train",
            "--config",
            "job.json",
            "--seed",
            "3",
            "--no-progress",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("run directory") && text.contains("verification fmnist_pairs"),
        "{text}"
    );
    let runs: Vec<_> = std::fs::read_dir(d.join("runs")).unwrap().collect();
    assert_eq!(runs.len(), 1);
    let run = runs[0].as_ref().unwrap().path();
    let used = plsc_train::Entry::from_file(&run.join("config.toml")).unwrap();
    assert_eq!(used.seed, 3, "the flag overrides the file");
    assert_eq!(used.train_steps, Some(3));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<_> = records
        .iter()
        .filter(|r| r["kind"] == "train")
        .map(|r| r["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 3]);
    let eval: Vec<_> = records.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(eval.len(), 1);
    let acc = eval[0]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    assert!(
        records
            .iter()
            .all(|r| r.get("acc1").is_none() || r["kind"] == "train")
    );
    assert!(records[0]["acc1"].as_f64().is_some(), "calc_acc logs top-1");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 3);
    assert_eq!(summary["global_batch"], 8);
    // The final checkpoint holds both head shards and the backbone.
    let ckpt = plsc_ckpt::latest_valid(&run.join("checkpoints"))
        .unwrap()
        .unwrap();
    assert_eq!(ckpt.manifest().training.step, 3);
    assert_eq!(ckpt.manifest().world_size, 2);
    // The saved backbone loads into the same architecture.
    let device = Default::default();
    let bb = plsc_models::BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(16)
        .with_in_channels(1)
        .with_input_size(28)
        .init::<burn::backend::Flex>(&device)
        .unwrap();
    bb.load_safetensors(&run.join("backbone.safetensors"))
        .unwrap();
    // The exported model (what `xtask eval --model` and the server load) is the final step's.
    let exported = plsc_ckpt::load_exported(&run.join("model")).unwrap();
    assert_eq!(exported.source_step, 3);
    assert_eq!(exported.spec.architecture, "iresnet_tiny");
    assert_eq!(exported.spec.embedding_size, 16);
    // It is written from memory at the end of the run (the head shards are not read back), and
    // is byte for byte what exporting the final checkpoint writes.
    plsc_ckpt::export(&ckpt, &d.join("from-ckpt")).unwrap();
    for file in ["model.json", "backbone.safetensors"] {
        assert!(
            std::fs::read(run.join("model").join(file)).unwrap()
                == std::fs::read(d.join("from-ckpt").join(file)).unwrap(),
            "{file} of the run's export differs from the checkpoint's export"
        );
    }
    // The run's memory: peak (whole run) and steady (training median) RssAnon, on Linux.
    if cfg!(target_os = "linux") {
        let peak = summary["peak_rss_anon_bytes"].as_u64().unwrap();
        let steady = summary["steady_rss_anon_bytes"].as_u64().unwrap();
        assert!(0 < steady && steady <= peak, "steady {steady}, peak {peak}");
    }
}
