//! The resume choice never loses a checkpoint: damaged `step-<n>/` are named with the reason
//! and renamed to `step-<n>.damaged` (never deleted, never overwritten by a later save of the
//! same step, never pruned); traces of interrupted saves are not damage; a committed
//! checkpoint moved aside by a save killed between its two renames is put back.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use plsc_ckpt::{
    BackboneRef, HeadShardRef, SaveOptions, choose_resume, list_checkpoints, save, step_dir_name,
};
use plsc_core::HeadConfig;

fn config() -> HeadConfig {
    arcface(40, 8)
}

fn save_step(root: &Path, step: u64, keep_last: usize) -> PathBuf {
    let heads = random_heads(&config(), 2, step);
    let (tensors, momentum) = backbone(step);
    let shards: Vec<_> = heads.iter().map(HeadShardRef::from_head).collect();
    save(
        root,
        &meta(&config(), 2, step, true),
        Some(BackboneRef {
            tensors: &tensors,
            momentum: &momentum,
        }),
        &shards,
        SaveOptions { keep_last },
    )
    .unwrap()
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() * 3 / 4;
    bytes[i] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

/// Every file under `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn names(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_newest_checkpoint_without_manifest_is_named_and_set_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_step(root, 2, 0);
    let newest = save_step(root, 4, 0);
    std::fs::remove_file(newest.join("manifest.json")).unwrap();

    let choice = choose_resume(root).unwrap();
    assert_eq!(choice.checkpoint.as_ref().map(|c| c.step()), Some(2));
    assert_eq!(choice.damaged.len(), 1, "{:?}", choice.damaged);
    let d = &choice.damaged[0];
    assert_eq!(d.step, 4);
    assert_eq!(d.dir, newest);
    assert_eq!(d.moved_to, root.join("step-000000004.damaged"));
    assert!(d.reason.contains("manifest.json"), "{}", d.reason);
    assert!(d.moved_to.join("backbone.safetensors").is_file());
    assert!(!newest.exists());
    assert!(choice.has_damaged());
}

#[test]
fn a_flipped_byte_in_the_only_checkpoint_leaves_nothing_valid_and_the_files_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let only = save_step(root, 6, 0);
    flip_byte(&only.join("head.rank1.safetensors"));
    let before = contents(&only);

    let choice = choose_resume(root).unwrap();
    assert!(choice.checkpoint.is_none());
    assert_eq!(choice.damaged.len(), 1);
    assert!(
        choice.damaged[0].reason.contains("head.rank1.safetensors")
            && choice.damaged[0].reason.contains("sha256"),
        "{}",
        choice.damaged[0].reason
    );
    let moved = root.join("step-000000006.damaged");
    assert_eq!(choice.set_aside, vec![moved.clone()]);
    assert_eq!(
        contents(&moved),
        before,
        "the damaged files are kept byte for byte"
    );

    // A second look finds the one set aside before (so a caller still refuses to start over).
    let again = choose_resume(root).unwrap();
    assert!(again.checkpoint.is_none() && again.damaged.is_empty());
    assert_eq!(again.set_aside, vec![moved.clone()]);

    // Training again from step 0 saves step 6 beside it and prunes around it: the damaged
    // folder is neither overwritten nor deleted.
    for step in [2, 4, 6, 8, 10] {
        save_step(root, step, 2);
    }
    assert_eq!(contents(&moved), before);
    assert_eq!(
        names(root),
        ["step-000000006.damaged", "step-000000008", "step-000000010"]
    );
}

#[test]
fn a_save_replacing_a_damaged_step_sets_it_aside_under_a_free_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // An earlier damaged step 3 set aside, and a new damaged step 3.
    let first = save_step(root, 3, 0);
    flip_byte(&first.join("backbone.safetensors"));
    choose_resume(root).unwrap();
    let second = save_step(root, 3, 0);
    flip_byte(&second.join("backbone.safetensors"));
    let second_bytes = contents(&second);
    let first_bytes = contents(&root.join("step-000000003.damaged"));

    // Saving step 3 again (a run started afresh in the same root) does not delete it.
    save_step(root, 3, 0);
    assert_eq!(
        names(root),
        [
            "step-000000003",
            "step-000000003.damaged",
            "step-000000003.damaged-2"
        ]
    );
    assert_eq!(contents(&root.join("step-000000003.damaged")), first_bytes);
    assert_eq!(
        contents(&root.join("step-000000003.damaged-2")),
        second_bytes
    );
    assert_eq!(list_checkpoints(root).unwrap().len(), 1);
}

#[test]
fn traces_of_an_interrupted_save_are_not_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_step(root, 2, 0);
    // A save of step 4 killed while writing its files.
    let partial = root.join(".tmp-step-000000004");
    std::fs::create_dir(&partial).unwrap();
    std::fs::write(partial.join("backbone.safetensors"), b"half").unwrap();

    let choice = choose_resume(root).unwrap();
    assert_eq!(choice.checkpoint.as_ref().map(|c| c.step()), Some(2));
    assert!(choice.damaged.is_empty() && !choice.has_damaged());
    assert_eq!(choice.interrupted, vec![partial.clone()]);
    assert!(partial.is_dir(), "left for the next save to remove");
}

#[test]
fn a_checkpoint_moved_aside_by_a_killed_replacement_is_put_back() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_step(root, 2, 0);
    let four = save_step(root, 4, 0);
    let bytes = contents(&four);
    // A save of step 4 again, killed between `step-4 -> .old-step-4` and `.tmp-step-4 -> step-4`.
    let old = root.join(".old-step-000000004");
    std::fs::rename(&four, &old).unwrap();

    let choice = choose_resume(root).unwrap();
    assert_eq!(choice.checkpoint.as_ref().map(|c| c.step()), Some(4));
    assert_eq!(choice.restored, vec![root.join(step_dir_name(4))]);
    assert!(choice.interrupted.is_empty() && choice.damaged.is_empty());
    assert_eq!(contents(&four), bytes);
    assert!(!old.exists());
}
