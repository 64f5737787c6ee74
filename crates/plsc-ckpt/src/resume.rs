//! Choosing the checkpoint a run resumes from, without losing any.
//!
//! Under a checkpoint root, [`choose_resume`] looks at every `step-<n>/` (with or without a
//! manifest), newest first, and takes the first that verifies (manifest, sizes, sha256,
//! tensors). Every newer one that fails is **damaged**: it is renamed to `step-<n>.damaged`
//! (never deleted, never overwritten: a later save of step n writes a new `step-<n>/` beside
//! it, and pruning only counts `step-<n>/`), and an ERROR line names it with the reason.
//! `.tmp-step-<n>/` and `.old-step-<n>/` are the normal traces of a save killed mid-way, not
//! damage: they are listed, and the next save removes them, except an `.old-step-<n>/` whose
//! `step-<n>/` is missing (a save killed between its two renames), which is the committed
//! checkpoint itself and is put back first.
//!
//! The caller decides what to do when nothing valid is left (plsc-train: fail, unless told to
//! restart). Call it from one process only (rank 0 of a multi-process run): it renames.

use std::path::{Path, PathBuf};

use crate::error::{Result, io_err};
use crate::layout::{self, OLD_PREFIX, STEP_PREFIX, parse_step_dir, step_dir_name, sync_dir};
use crate::load::Checkpoint;

/// Suffix of a damaged checkpoint set aside: `step-<n>.damaged` (then `.damaged-2`, ... when
/// that name is taken).
pub const DAMAGED_SUFFIX: &str = ".damaged";

/// A `step-<n>/` that failed verification and was set aside by [`choose_resume`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedCheckpoint {
    /// Its step.
    pub step: u64,
    /// Where it was (`<root>/step-<n>`).
    pub dir: PathBuf,
    /// Where it is now (`<root>/step-<n>.damaged`).
    pub moved_to: PathBuf,
    /// Why it failed (the verification error).
    pub reason: String,
}

/// What [`choose_resume`] found under a root.
#[derive(Debug)]
pub struct ResumeChoice {
    /// The newest checkpoint that verifies, if any.
    pub checkpoint: Option<Checkpoint>,
    /// Damaged checkpoints newer than it, set aside by this call (newest first).
    pub damaged: Vec<DamagedCheckpoint>,
    /// Damaged checkpoints set aside earlier (`step-<n>.damaged*`), including this call's.
    pub set_aside: Vec<PathBuf>,
    /// Traces of interrupted saves (`.tmp-step-*`, `.old-step-*`) left for the next save.
    pub interrupted: Vec<PathBuf>,
    /// `.old-step-<n>/` directories put back as `step-<n>/` (see the module docs).
    pub restored: Vec<PathBuf>,
}

impl ResumeChoice {
    /// Whether damaged checkpoints exist under the root (set aside now or before).
    pub fn has_damaged(&self) -> bool {
        !self.set_aside.is_empty()
    }
}

/// What a root holds, by name only (nothing is opened).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RootListing {
    /// Every `step-<n>/` directory, with or without a manifest, newest first.
    pub steps: Vec<(u64, PathBuf)>,
    /// Damaged checkpoints set aside (`step-<n>.damaged*`), by name.
    pub set_aside: Vec<PathBuf>,
    /// Traces of interrupted saves (`.tmp-step-*`, `.old-step-*`), by name.
    pub interrupted: Vec<PathBuf>,
}

impl RootListing {
    /// Whether a run saved anything here that resuming must consider (a `step-<n>/` or a
    /// damaged one set aside); traces of an interrupted first save alone do not count.
    pub fn has_checkpoints(&self) -> bool {
        !self.steps.is_empty() || !self.set_aside.is_empty()
    }
}

/// Lists `root` by name (a missing root is empty).
pub fn list_root(root: &Path) -> Result<RootListing> {
    let mut out = RootListing::default();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(root))?;
        let path = entry.path();
        if !path.is_dir() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(step) = parse_step_dir(name) {
            out.steps.push((step, path));
        } else if is_damaged_name(name) {
            out.set_aside.push(path);
        } else if name.starts_with(layout::TMP_PREFIX) || name.starts_with(OLD_PREFIX) {
            out.interrupted.push(path);
        }
    }
    out.steps.sort_by_key(|s| std::cmp::Reverse(s.0));
    out.set_aside.sort();
    out.interrupted.sort();
    Ok(out)
}

/// Whether `name` is a damaged checkpoint set aside (`step-<n>.damaged`, `step-<n>.damaged-<k>`).
pub fn is_damaged_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(STEP_PREFIX) else {
        return false;
    };
    let Some((step, suffix)) = rest.split_once('.') else {
        return false;
    };
    let suffix = format!(".{suffix}");
    step.parse::<u64>().is_ok()
        && (suffix == DAMAGED_SUFFIX
            || suffix
                .strip_prefix(DAMAGED_SUFFIX)
                .and_then(|k| k.strip_prefix('-'))
                .is_some_and(|k| k.parse::<u32>().is_ok()))
}

/// Renames the damaged `<root>/step-<n>/` to a free `step-<n>.damaged*` name; returns it.
/// Never replaces anything: an existing name is skipped.
pub fn set_aside_damaged(root: &Path, step: u64) -> Result<PathBuf> {
    let dir = root.join(step_dir_name(step));
    let base = format!("{}{DAMAGED_SUFFIX}", step_dir_name(step));
    let mut k = 1u32;
    loop {
        let name = if k == 1 {
            base.clone()
        } else {
            format!("{base}-{k}")
        };
        let dest = root.join(name);
        // `symlink_metadata` sees dangling links too: any entry of that name is taken.
        if std::fs::symlink_metadata(&dest).is_err() {
            std::fs::rename(&dir, &dest).map_err(io_err(&dir))?;
            sync_dir(root)?;
            return Ok(dest);
        }
        k += 1;
    }
}

/// Chooses the checkpoint to resume from under `root` (see the module docs): the newest
/// `step-<n>/` that verifies; newer damaged ones are renamed to `step-<n>.damaged` and logged
/// at ERROR level with the reason. A missing root has nothing.
pub fn choose_resume(root: &Path) -> Result<ResumeChoice> {
    let mut listing = list_root(root)?;
    let mut restored = Vec::new();
    for old in std::mem::take(&mut listing.interrupted) {
        let name = old.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let step = name.strip_prefix(OLD_PREFIX).and_then(|s| s.parse().ok());
        let missing = step.filter(|s| !listing.steps.iter().any(|(t, _)| t == s));
        match missing {
            Some(step) => {
                let dir = root.join(step_dir_name(step));
                std::fs::rename(&old, &dir).map_err(io_err(&old))?;
                sync_dir(root)?;
                tracing::warn!(
                    from = %old.display(),
                    to = %dir.display(),
                    "a save was killed while replacing this checkpoint; it is put back"
                );
                listing.steps.push((step, dir.clone()));
                restored.push(dir);
            }
            None => listing.interrupted.push(old),
        }
    }
    listing.steps.sort_by_key(|s| std::cmp::Reverse(s.0));
    for trace in &listing.interrupted {
        tracing::info!(
            dir = %trace.display(),
            "trace of an interrupted save (not a checkpoint); the next save removes it"
        );
    }

    let mut checkpoint = None;
    let mut damaged = Vec::new();
    for (step, dir) in &listing.steps {
        match Checkpoint::open(dir).and_then(|c| c.verify().map(|_| c)) {
            Ok(c) => {
                checkpoint = Some(c);
                break;
            }
            Err(e) => {
                let moved_to = set_aside_damaged(root, *step)?;
                tracing::error!(
                    checkpoint = %dir.display(),
                    moved_to = %moved_to.display(),
                    "damaged checkpoint skipped and renamed: {e}"
                );
                listing.set_aside.push(moved_to.clone());
                damaged.push(DamagedCheckpoint {
                    step: *step,
                    dir: dir.clone(),
                    moved_to,
                    reason: e.to_string(),
                });
            }
        }
    }
    listing.set_aside.sort();
    Ok(ResumeChoice {
        checkpoint,
        damaged,
        set_aside: listing.set_aside,
        interrupted: listing.interrupted,
        restored,
    })
}
