//! Named errors (flipped byte, missing shard, wrong class count or embedding size), partial
//! directories, pruning, export.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use plsc_ckpt::{
    BackboneRef, Checkpoint, CkptError, HeadShardRef, SaveOptions, export, latest_valid,
    list_checkpoints, load_exported, save,
};
use plsc_core::{HeadConfig, RowStore, ShardedHead};
use plsc_models::TensorKind;

fn save_step(
    root: &Path,
    config: &HeadConfig,
    world: usize,
    step: u64,
    keep_last: usize,
) -> PathBuf {
    let heads = random_heads(config, world, step);
    let (tensors, momentum) = backbone(step);
    let shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    save(
        root,
        &meta(config, world, step, true),
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions { keep_last },
    )
    .unwrap()
}

fn flip_byte(path: &Path, at_fraction: f64) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = ((bytes.len() as f64) * at_fraction) as usize;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_byte_is_a_checksum_error_naming_the_file() {
    let config = arcface(40, 8);
    let tmp = tempfile::tempdir().unwrap();
    save_step(tmp.path(), &config, 4, 1, 5);
    let dir = save_step(tmp.path(), &config, 4, 2, 5);
    flip_byte(&dir.join("head.rank2.safetensors"), 0.7);

    let ckpt = Checkpoint::open(&dir).unwrap(); // sizes still match
    // Rank 1 of 3 owns classes 14..27, which lie in shards 1 and 2 of 4.
    match ckpt.load_head_shard(3, 1) {
        Err(CkptError::ChecksumMismatch {
            path,
            expected,
            found,
            recorded_in,
        }) => {
            assert!(
                path.ends_with("head.rank2.safetensors"),
                "{}",
                path.display()
            );
            assert_ne!(expected, found);
            assert_eq!(recorded_in, dir.join("manifest.json"));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    let msg = ckpt.verify().unwrap_err().to_string();
    assert!(
        msg.contains("head.rank2.safetensors") && msg.contains("corrupt"),
        "{msg}"
    );
    // Shards that do not touch the corrupt file still load.
    ckpt.load_head_shard(4, 0).unwrap();
    // The newest valid checkpoint is the previous one.
    assert_eq!(latest_valid(tmp.path()).unwrap().unwrap().step(), 1);

    // A flipped byte in the backbone too (a fresh handle: an opened checkpoint checks each
    // file once).
    flip_byte(&dir.join("backbone.safetensors"), 0.9);
    assert!(matches!(
        Checkpoint::open(&dir).unwrap().load_backbone(),
        Err(CkptError::ChecksumMismatch { ref path, .. }) if path.ends_with("backbone.safetensors")
    ));
}

#[test]
fn a_missing_shard_is_named() {
    let config = arcface(40, 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = save_step(tmp.path(), &config, 4, 3, 5);
    std::fs::remove_file(dir.join("head.rank1.safetensors")).unwrap();
    let err = Checkpoint::open(&dir).unwrap_err();
    match &err {
        CkptError::MissingFile { path, listed_in } => {
            assert!(path.ends_with("head.rank1.safetensors"));
            assert!(listed_in.ends_with("manifest.json"));
        }
        other => panic!("expected a missing file, got {other:?}"),
    }
    assert!(err.to_string().contains("head.rank1.safetensors"), "{err}");
    assert!(latest_valid(tmp.path()).unwrap().is_none());
}

#[test]
fn a_truncated_file_is_a_size_error() {
    let config = arcface(40, 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = save_step(tmp.path(), &config, 2, 3, 5);
    let path = dir.join("head.rank0.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
    assert!(matches!(
        Checkpoint::open(&dir),
        Err(CkptError::SizeMismatch { ref path, expected, found, ref recorded_in })
            if path.ends_with("head.rank0.safetensors") && expected == found + 4
                && recorded_in.ends_with("manifest.json")
    ));
}

#[test]
fn wrong_class_count_or_embedding_size_is_a_named_mismatch() {
    let config = arcface(40, 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = save_step(tmp.path(), &config, 4, 1, 5);
    let ckpt = Checkpoint::open(&dir).unwrap();

    let mut head = ShardedHead::<f32>::new(arcface(41, 8), 0, 2).unwrap();
    let err = ckpt.load_into_head(&mut head, true).unwrap_err();
    match &err {
        CkptError::Mismatch {
            path,
            field,
            checkpoint,
            expected,
        } => {
            assert!(path.ends_with("manifest.json"));
            assert_eq!(*field, "class count");
            assert_eq!((checkpoint.as_str(), expected.as_str()), ("40", "41"));
        }
        other => panic!("expected a class-count mismatch, got {other:?}"),
    }
    assert!(
        err.to_string()
            .contains("class count is 40 in the checkpoint but 41"),
        "{err}"
    );

    let mut head = ShardedHead::<f32>::new(arcface(40, 16), 0, 2).unwrap();
    assert!(matches!(
        ckpt.load_into_head(&mut head, true),
        Err(CkptError::Mismatch {
            field: "embedding size",
            ..
        })
    ));
    let mut head = ShardedHead::<f32>::new(softmax(40, 8), 0, 2).unwrap();
    assert!(matches!(
        ckpt.load_into_head(&mut head, true),
        Err(CkptError::Mismatch { .. })
    ));
    // More ranks than classes: plsc-core's split refuses it.
    assert!(matches!(
        ckpt.load_head_shard(41, 0),
        Err(CkptError::Head(plsc_core::HeadError::TooFewClasses { .. }))
    ));
}

#[test]
fn a_manifest_that_disagrees_with_a_file_is_refused() {
    let config = arcface(40, 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = save_step(tmp.path(), &config, 2, 1, 5);
    let manifest = dir.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    // Claim another split: the ranges no longer follow plsc-core's balanced split.
    let edited = text.replacen("\"len\": 20", "\"len\": 21", 1);
    assert_ne!(text, edited);
    std::fs::write(&manifest, edited).unwrap();
    assert!(matches!(
        Checkpoint::open(&dir),
        Err(CkptError::BadManifest { ref path, .. }) if path.ends_with("manifest.json")
    ));
}

#[test]
fn partial_directories_are_ignored_and_cleaned_and_old_ones_pruned() {
    let config = arcface(12, 4);
    let tmp = tempfile::tempdir().unwrap();
    for step in 1..=4 {
        save_step(tmp.path(), &config, 2, step, 3);
    }
    let steps: Vec<u64> = list_checkpoints(tmp.path())
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![4, 3, 2]);

    // A crash mid-save: a partial directory with some files and no manifest, and a
    // committed-looking name without a manifest.
    let partial = tmp.path().join(".tmp-step-000000005");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("head.rank0.safetensors"), b"partial").unwrap();
    assert_eq!(latest_valid(tmp.path()).unwrap().unwrap().step(), 4);
    save_step(tmp.path(), &config, 2, 5, 3);
    assert!(
        !partial.exists(),
        "the next save removes the partial directory"
    );
    let steps: Vec<u64> = list_checkpoints(tmp.path())
        .unwrap()
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(steps, vec![5, 4, 3]);

    // Saving the same step again replaces it.
    let again = save_step(tmp.path(), &config, 2, 5, 0);
    Checkpoint::open(&again).unwrap().verify().unwrap();
    let names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("step-")), "{names:?}");
}

#[test]
fn a_shard_of_the_wrong_length_is_refused_before_anything_is_committed() {
    let config = arcface(12, 4);
    let tmp = tempfile::tempdir().unwrap();
    let heads = random_heads(&config, 2, 1);
    let mut shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    let short = RowStore::Full(shards[1].momentum.to_vec()[..4].to_vec());
    shards[1].momentum = &short;
    let err = save(
        tmp.path(),
        &meta(&config, 2, 1, false),
        None,
        &shards,
        SaveOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, CkptError::Invalid { .. }), "{err}");
    assert!(err.to_string().contains("momentum"), "{err}");
    assert!(list_checkpoints(tmp.path()).unwrap().is_empty());
}

#[test]
fn export_keeps_weights_and_buffers_and_checks_its_files() {
    let config = arcface(12, 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = save_step(&tmp.path().join("run"), &config, 2, 7, 5);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let out = tmp.path().join("model");
    export(&ckpt, &out).unwrap();
    let model = load_exported(&out).unwrap();
    assert_eq!(model.spec, ckpt.manifest().model.clone().unwrap());
    assert_eq!(model.source_step, 7);
    let (tensors, _) = backbone(7);
    assert_eq!(
        model.tensors, tensors,
        "weights and buffers, in order, with their roles"
    );
    assert!(model.tensors.iter().all(|t| t.kind != TensorKind::Momentum));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(json["architecture"], "iresnet_tiny");
    assert_eq!(json["embedding_size"], 8);
    assert_eq!(json["input_size"], 112);
    assert_eq!(json["in_channels"], 3);
    assert_eq!(json["mean"][0], 127.5);

    // Exporting again replaces the export; a foreign directory is refused.
    export(&ckpt, &out).unwrap();
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("x"), b"x").unwrap();
    assert!(matches!(
        export(&ckpt, &foreign),
        Err(CkptError::Invalid { .. })
    ));

    flip_byte(&out.join("backbone.safetensors"), 0.8);
    assert!(matches!(
        load_exported(&out),
        Err(CkptError::ChecksumMismatch { ref path, ref recorded_in, .. })
            if path.ends_with("backbone.safetensors") && recorded_in == &out.join("model.json")
    ));
    // A head-only checkpoint has nothing to export.
    let heads = random_heads(&config, 1, 1);
    let head_only = save(
        &tmp.path().join("heads"),
        &meta(&config, 1, 1, false),
        None,
        &[HeadShardRef::from_head(&heads[0])],
        SaveOptions::default(),
    )
    .unwrap();
    assert!(matches!(
        export(
            &Checkpoint::open(&head_only).unwrap(),
            &tmp.path().join("m2")
        ),
        Err(CkptError::MissingFile { .. })
    ));
}

#[test]
fn backbone_layout_is_checked_against_the_model() {
    let config = arcface(12, 8);
    let tmp = tempfile::tempdir().unwrap();
    let dir = save_step(tmp.path(), &config, 1, 1, 5);
    let ckpt = Checkpoint::open(&dir).unwrap();
    let (tensors, _) = backbone(1);
    let layout: Vec<(&str, &[usize])> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.shape.as_slice()))
        .collect();
    ckpt.check_backbone_layout(layout.iter().copied()).unwrap();

    let mut wrong = layout.clone();
    wrong[4].1 = &[8, 35];
    match ckpt.check_backbone_layout(wrong.iter().copied()) {
        Err(CkptError::TensorShape {
            path,
            tensor,
            expected,
            found,
        }) => {
            assert!(path.ends_with("backbone.safetensors"));
            assert_eq!(
                (tensor.as_str(), expected, found),
                ("fc.weight", vec![8, 35], vec![8, 36])
            );
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    let mut missing = layout.clone();
    missing.push(("fc.bias", &[8]));
    assert!(matches!(
        ckpt.check_backbone_layout(missing.iter().copied()),
        Err(CkptError::MissingTensor { ref tensor, .. }) if tensor == "fc.bias"
    ));
    let fewer = &layout[1..];
    let err = ckpt
        .check_backbone_layout(fewer.iter().copied())
        .unwrap_err();
    assert!(err.to_string().contains("conv1.weight"), "{err}");
}

#[test]
fn export_says_which_files_it_did_not_verify() {
    let config = arcface(12, 8);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("run");
    let dir = save_step(&root, &config, 2, 7, 5);
    flip_byte(&dir.join("head.rank1.safetensors"), 0.6);

    // Export reads only the backbone: it succeeds and lists the head shards as not verified.
    let report = export(&Checkpoint::open(&dir).unwrap(), &tmp.path().join("m")).unwrap();
    assert_eq!(report.dir, tmp.path().join("m"));
    assert_eq!(
        report.unverified,
        [
            dir.join("head.rank0.safetensors"),
            dir.join("head.rank1.safetensors")
        ]
    );

    // A checkpoint verified before (as a root's newest valid one is) has nothing unverified.
    let good = save_step(&root, &config, 2, 8, 5);
    let ckpt = Checkpoint::open_dir_or_latest(&root).unwrap();
    assert_eq!(ckpt.dir(), good);
    let report = export(&ckpt, &tmp.path().join("m2")).unwrap();
    assert!(report.unverified.is_empty(), "{:?}", report.unverified);
}
