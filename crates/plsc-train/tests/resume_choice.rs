//! Where `resume` begins when checkpoints are damaged: the newest valid one, damaged newer
//! ones renamed to `step-<n>.damaged`; no valid one but damaged ones is an error that says to
//! restart, and `restart` starts from step 0 keeping the damaged folders.

use std::path::{Path, PathBuf};

use plsc_ckpt::{CheckpointMeta, HeadShardRef, SaveOptions, TrainingState};
use plsc_core::{HeadConfig, ShardedHead};
use plsc_train::resume::find_beginning;
use plsc_train::trainer::Start;
use plsc_train::{Entry, TrainError};

/// A head-only checkpoint of 10 classes at `step` under `root`.
fn save_step(root: &Path, step: u64) -> PathBuf {
    let config = HeadConfig::new(10, 4).with_seed(1);
    let head = ShardedHead::<f32>::new(config.clone(), 0, 1).unwrap();
    plsc_ckpt::save(
        root,
        &CheckpointMeta {
            head: config,
            world_size: 1,
            model: None,
            training: TrainingState {
                step,
                ..TrainingState::default()
            },
        },
        None,
        &[HeadShardRef::from_head(&head)],
        SaveOptions { keep_last: 0 },
    )
    .unwrap()
}

fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() - 3;
    bytes[i] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Resuming from `root` with the checkpoints' head (10 classes x 4: resume checks it).
fn resuming(root: &Path) -> Entry {
    Entry::new()
        .with_num_classes(10)
        .with_embedding_size(4)
        .with_checkpoint_dir(root)
        .with_resume(true)
}

#[test]
fn a_damaged_newest_checkpoint_is_set_aside_and_the_one_before_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_step(root, 4);
    let newest = save_step(root, 8);
    std::fs::remove_file(newest.join("manifest.json")).unwrap();

    let b = find_beginning(&resuming(root)).unwrap();
    assert_eq!(b.steps_done, 4);
    assert!(matches!(&b.start, Start::Resume(c) if c.step() == 4));
    assert!(root.join("step-000000008.damaged").is_dir());
    assert!(!newest.exists());
}

#[test]
fn only_damaged_checkpoints_fail_the_resume_unless_restart_is_set() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let only = save_step(root, 6);
    flip_byte(&only.join("head.rank0.safetensors"));
    let bytes = std::fs::read(only.join("head.rank0.safetensors")).unwrap();
    let moved = root.join("step-000000006.damaged");

    let Err(err) = find_beginning(&resuming(root)) else {
        panic!("resumed from a damaged checkpoint")
    };
    match &err {
        TrainError::DamagedCheckpoints { root: r, damaged } => {
            assert_eq!(r, root);
            assert_eq!(damaged, std::slice::from_ref(&moved));
        }
        other => panic!("{other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("--restart") && text.contains("step-000000006.damaged"),
        "{text}"
    );

    // Asking again still refuses (the damaged one was set aside, not forgotten).
    assert!(matches!(
        find_beginning(&resuming(root)),
        Err(TrainError::DamagedCheckpoints { .. })
    ));

    // --restart: step 0, the damaged folder kept byte for byte.
    let b = find_beginning(&resuming(root).with_restart(true)).unwrap();
    assert_eq!(b.steps_done, 0);
    assert!(matches!(b.start, Start::Fresh));
    assert_eq!(
        std::fs::read(moved.join("head.rank0.safetensors")).unwrap(),
        bytes
    );
}

#[test]
fn a_run_whose_only_checkpoint_lost_its_manifest_is_still_the_run_resumed() {
    // Without checkpoint_dir, resume looks for the newest run of model_save_dir.
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("20260101-000000");
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("config.toml"), "").unwrap();
    let ckpt = save_step(&run.join("checkpoints"), 2);
    std::fs::remove_file(ckpt.join("manifest.json")).unwrap();

    let e = Entry::new()
        .with_model_save_dir(tmp.path())
        .with_resume(true);
    match find_beginning(&e) {
        Err(TrainError::DamagedCheckpoints { root, .. }) => {
            assert_eq!(root, run.join("checkpoints"))
        }
        Err(other) => panic!("{other}"),
        Ok(b) => panic!("began at step {} without a word", b.steps_done),
    }
}

#[test]
fn restart_without_resume_is_a_named_setting_error() {
    let e = Entry::new().with_restart(true);
    match e.validate() {
        Err(TrainError::Config { name, .. }) => assert_eq!(name, "restart"),
        other => panic!("{other:?}"),
    }
}
