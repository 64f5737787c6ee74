//! `xtask train --resume` with a damaged checkpoint: an ERROR line names it with the reason,
//! it is renamed to `step-<n>.damaged` and kept; with no valid checkpoint left the command
//! fails and says to use `--restart`, which starts from step 0 and leaves the damaged folder
//! as it was.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{run_dir, step_dir, write_tiny_job};

const STEPS: u64 = 2;

fn train(config: &Path, save_dir: &Path, extra: &[&str]) -> Output {
    common::train_command(config, save_dir, extra)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_damaged_only_checkpoint_stops_resume_until_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_tiny_job(
        dir.path(),
        &format!("train_batch_size = 8\ntrain_steps = {STEPS}\nwarmup_epochs = 0.0\nseed = 5\n"),
    );
    let save = dir.path().join("runs");
    let o = train(&config, &save, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let run = run_dir(&save);
    let only = step_dir(&run, STEPS);
    let shard = only.join("head.rank1.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&shard, &bytes).unwrap();
    let damaged: PathBuf = run.join("checkpoints/step-000000002.damaged");

    // --resume: refused, naming the damage at ERROR level and the way out.
    let o = train(&config, &save, &["--resume"]);
    let err = text(&o);
    assert!(!o.status.success(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("damaged checkpoint"))
        .unwrap_or_else(|| panic!("no ERROR line naming the damage:\n{err}"));
    assert!(
        line.contains(&only.display().to_string()) && line.contains("head.rank1.safetensors"),
        "{line}"
    );
    assert!(err.contains("--restart"), "{err}");
    assert!(!only.exists());
    assert_eq!(
        std::fs::read(damaged.join("head.rank1.safetensors")).unwrap(),
        bytes
    );

    // --resume --restart: from step 0 in the same run, to a new step-2 beside the damaged one.
    let o = train(&config, &save, &["--resume", "--restart"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(run_dir(&save), run);
    assert!(step_dir(&run, STEPS).join("manifest.json").is_file());
    assert_eq!(
        std::fs::read(damaged.join("head.rank1.safetensors")).unwrap(),
        bytes
    );
}
