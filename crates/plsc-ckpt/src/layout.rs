//! Names under a checkpoint root: `step-<n>/` (committed), `.tmp-step-<n>/` (being written or
//! left by a crash), `.old-step-<n>/` (a committed one being replaced).

use std::path::{Path, PathBuf};

use crate::error::{Result, io_err};
use crate::manifest::MANIFEST_FILE;

/// Prefix of a committed checkpoint directory.
pub const STEP_PREFIX: &str = "step-";
/// Prefix of a checkpoint directory being written.
pub const TMP_PREFIX: &str = ".tmp-step-";
/// Prefix of a committed directory moved aside while the same step is saved again.
pub const OLD_PREFIX: &str = ".old-step-";

/// `step-<n>` (zero-padded to 9 digits so that names sort by step).
pub fn step_dir_name(step: u64) -> String {
    format!("{STEP_PREFIX}{step:09}")
}

/// The step of a committed directory name, if it is one.
pub fn parse_step_dir(name: &str) -> Option<u64> {
    name.strip_prefix(STEP_PREFIX)?.parse().ok()
}

/// Committed checkpoint directories (`step-<n>/` holding a manifest) under `root`, newest
/// first. A missing `root` has none.
pub fn list_checkpoints(root: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(root)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(root))?;
        let name = entry.file_name();
        if let Some(step) = name.to_str().and_then(parse_step_dir) {
            let dir = entry.path();
            if dir.join(MANIFEST_FILE).is_file() {
                found.push((step, dir));
            }
        }
    }
    found.sort_by_key(|b| std::cmp::Reverse(b.0));
    Ok(found)
}

/// Directories under `root` left by interrupted saves (`.tmp-step-*`, `.old-step-*`).
pub(crate) fn leftovers(root: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(root).map_err(io_err(root))? {
        let entry = entry.map_err(io_err(root))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(TMP_PREFIX) || name.starts_with(OLD_PREFIX) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// Syncs a directory (its entries: renames, new files) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io_err(dir))
}

/// Whether the head files of a head of these settings hold a bias (`bias`, `bias_momentum`):
/// plain softmax has one, margin losses have none.
pub(crate) fn has_bias(head: &plsc_core::HeadConfig) -> bool {
    head.loss.kind == plsc_core::LossKind::Softmax
}
