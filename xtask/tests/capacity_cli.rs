//! A head too big for this host is refused before anything is allocated or written: the named
//! error with the bytes needed and available, and no run directory.

mod common;

use common::write_tiny_job;

#[test]
fn a_head_that_cannot_fit_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_tiny_job(dir.path(), "train_steps = 1\n");
    // 200M classes x 512 in f32: 2 x 200M x 512 x 4 bytes = 763 GiB of weight and momentum.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("num_classes = 8", "num_classes = 200000000")
        .replace("embedding_size = 32", "embedding_size = 512");
    std::fs::write(&config, text).unwrap();
    let save = dir.path().join("runs");
    let out = common::train_command(&config, &save, &[]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not fit this host") && err.contains("GiB are available"),
        "{err}"
    );
    assert!(err.contains("763.") || err.contains("764."), "{err}");
    assert!(!save.exists(), "a refused run left {}", save.display());
}
