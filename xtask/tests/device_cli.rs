//! The device settings on the command line: in a build without the `cuda` feature,
//! `train --device cuda` and `serve --device cuda` fail with the named error that says how to
//! build with it (no panic, nothing left behind); under a launcher, a `--ranks` that disagrees
//! with the number of processes is an error, not silently replaced.

mod common;

use std::process::Command;

fn xtask() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
}

#[test]
#[cfg(not(feature = "cuda"))]
fn cuda_without_the_feature_is_a_named_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = common::write_tiny_job(dir.path(), "train_steps = 1\n");
    let save = dir.path().join("runs");
    let out = common::train_command(&job, &save, &["--device", "cuda", "--ranks", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("device `cuda`") && err.contains("--features cuda"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(!save.exists(), "a failed start left {}", save.display());

    let out = xtask()
        .args(["serve", "--model"])
        .arg(dir.path())
        .args(["--device", "cuda:0", "--port", "0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("device `cuda:0`") && err.contains("--features cuda"),
        "{err}"
    );
}

#[test]
fn ranks_that_disagree_with_the_launcher_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let job = common::write_tiny_job(dir.path(), "train_steps = 1\n");
    // One process of a world of one (torchrun's variables), told to be 2 ranks.
    let out = common::train_command(&job, &dir.path().join("runs"), &["--ranks", "2"])
        .env("RANK", "0")
        .env("WORLD_SIZE", "1")
        .env("LOCAL_RANK", "0")
        .env("PLSC_COMM_BACKEND", "threads")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("the settings say 2 ranks") && err.contains("--ranks"),
        "{err}"
    );
}
