//! The verification sets a run evaluates on (`val_targets`), decoded once at the start.

use plsc_eval::PairSet;

use crate::entry::Entry;
use crate::error::{Result, TrainError};

/// Loads the verification sets of `entry` (empty without `with_test`).
pub fn load_val_sets(entry: &Entry) -> Result<Vec<(String, PairSet)>> {
    if !entry.with_test {
        return Ok(Vec::new());
    }
    let spec = plsc_eval::ImageSpec {
        height: entry.input_size,
        width: entry.input_size,
        channels: entry.in_channels,
    };
    entry
        .val_paths()
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string());
            PairSet::load(&p, spec)
                .map(|s| (name.clone(), s))
                .map_err(|source| TrainError::eval(p.display().to_string(), source))
        })
        .collect()
}

