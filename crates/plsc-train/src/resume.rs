//! How a run begins: fresh, resumed from the newest valid checkpoint, or fine-tuned from
//! pretrained weights (rank 0 decides; the other processes are told).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::entry::Entry;
use crate::error::{Result, TrainError};
use crate::trainer::Start;

/// How a run begins, from `resume` / `pretrained` in its settings.
pub struct Beginning {
    /// Where the weights come from.
    pub start: Start,
    /// Steps already done (the resumed checkpoint's step).
    pub steps_done: u64,
    /// The run directory to continue (resuming a run of `model_save_dir`).
    pub run_dir: Option<PathBuf>,
    /// The checkpoint root to use instead of the settings' (the continued run's).
    pub checkpoint_root: Option<PathBuf>,
}

/// Finds what `entry` starts from: a fresh model, the newest valid checkpoint to resume (see
/// [`Entry::resume`] and [`plsc_ckpt::choose_resume`]), or pretrained weights. Resuming
/// renames damaged checkpoints to `step-<n>.damaged`; when damaged ones exist and none is
/// valid it fails with [`TrainError::DamagedCheckpoints`] unless [`Entry::restart`] is set.
pub fn find_beginning(entry: &Entry) -> Result<Beginning> {
    let ckpt_err = |source: plsc_ckpt::CkptError| TrainError::Checkpoint {
        rank: 0,
        source: Box::new(source),
    };
    let mut b = Beginning {
        start: Start::Fresh,
        steps_done: 0,
        run_dir: None,
        checkpoint_root: None,
    };
    if let Some(path) = &entry.pretrained {
        let ckpt = plsc_ckpt::Checkpoint::open_dir_or_latest(path).map_err(ckpt_err)?;
        ckpt.verify().map_err(ckpt_err)?;
        if entry.pretrained_head {
            ckpt.check_head_config(&entry.head_config()?)
                .map_err(ckpt_err)?;
        }
        tracing::info!(
            checkpoint = %ckpt.dir().display(),
            with_head = entry.pretrained_head,
            "fine-tuning from pretrained weights"
        );
        b.start = Start::Pretrained {
            checkpoint: Arc::new(ckpt),
            with_head: entry.pretrained_head,
        };
        return Ok(b);
    }
    if !entry.resume {
        return Ok(b);
    }
    let root = match &entry.checkpoint_dir {
        Some(root) => {
            // A run directory's own checkpoints: that run continues.
            let parent = root.parent().filter(|p| p.join("config.toml").is_file());
            if root.file_name().is_some_and(|n| n == "checkpoints") {
                b.run_dir = parent.map(Path::to_path_buf);
            }
            root.clone()
        }
        None => match newest_run_with_checkpoints(&entry.model_save_dir)? {
            Some(run) => {
                b.run_dir = Some(run.clone());
                b.checkpoint_root = Some(run.join("checkpoints"));
                run.join("checkpoints")
            }
            None => {
                tracing::warn!(
                    dir = %entry.model_save_dir.display(),
                    "resume: no run with checkpoints here; starting from scratch"
                );
                return Ok(b);
            }
        },
    };
    // Renames damaged checkpoints aside. Safe without coordination: in a multi-process run
    // only rank 0 calls `find_beginning` (job.rs), the others are told what it chose.
    let choice = plsc_ckpt::choose_resume(&root).map_err(ckpt_err)?;
    match choice.checkpoint {
        Some(ckpt) => {
            tracing::info!(checkpoint = %ckpt.dir().display(), step = ckpt.step(), "resuming");
            if let Some(newest) = choice.damaged.first() {
                tracing::error!(
                    "resuming from step {} instead of step {}: {} newer checkpoint(s) damaged \
                     (set aside as *.damaged, see the lines above)",
                    ckpt.step(),
                    newest.step,
                    choice.damaged.len()
                );
            }
            // Before anything of the continued run is touched (its config.toml, metrics): a
            // checkpoint of another class count, embedding size or head storage is refused here.
            ckpt.check_head_config(&entry.head_config()?)
                .map_err(ckpt_err)?;
            b.steps_done = ckpt.step();
            b.start = Start::Resume(Arc::new(ckpt));
        }
        None if choice.has_damaged() && !entry.restart => {
            return Err(TrainError::DamagedCheckpoints {
                root,
                damaged: choice.set_aside,
            });
        }
        None if choice.has_damaged() => tracing::warn!(
            root = %root.display(),
            damaged = choice.set_aside.len(),
            "restart: no valid checkpoint; starting from step 0 (the damaged ones are kept \
             as *.damaged)"
        ),
        None => tracing::warn!(
            root = %root.display(),
            "resume: no checkpoint yet; starting from scratch"
        ),
    }
    Ok(b)
}

/// The newest run directory under `parent` (names are UTC stamps) holding a checkpoint.
fn newest_run_with_checkpoints(parent: &Path) -> Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(parent) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TrainError::Io {
                path: parent.to_path_buf(),
                source,
            });
        }
    };
    let mut runs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.toml").is_file())
        .collect();
    runs.sort();
    for run in runs.into_iter().rev() {
        // Any `step-<n>/` counts, valid or not (a damaged one is reported, not passed over).
        let listed = plsc_ckpt::list_root(&run.join("checkpoints")).map_err(|source| {
            TrainError::Checkpoint {
                rank: 0,
                source: Box::new(source),
            }
        })?;
        if listed.has_checkpoints() {
            return Ok(Some(run));
        }
    }
    Ok(None)
}
