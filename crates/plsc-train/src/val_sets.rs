//! The verification sets a run evaluates on (`val_targets`), decoded once at the start.

use plsc_eval::PairSet;

use crate::entry::Entry;
use crate::error::{Result, TrainError};

/// Loads the verification sets of `entry` (empty without `with_test`). A missing file of the
/// default targets (the settings named none) is a `val_targets` error saying so and how to
/// change them.
pub fn load_val_sets(entry: &Entry) -> Result<Vec<(String, PairSet)>> {
    if !entry.with_test {
        return Ok(Vec::new());
    }
    // The training input (size, channels, normalisation, resize policy): verification sees
    // the images as training and the exported model's server see them.
    let spec = entry.image_spec();
    entry
        .val_paths()
        .into_iter()
        .map(|p| {
            let name = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| p.display().to_string());
            if !p.is_file() && entry.uses_default_val_targets() {
                return Err(TrainError::Config {
                    name: "val_targets",
                    detail: format!(
                        "verification set {} not found. The settings name no `val_targets`, so \
                         the default targets {:?} are used (looked up in val_dir, else \
                         dataset_dir). Set `val_targets = []` in the config (or \
                         `--with-test false`) to train without verification, or name your sets: \
                         `val_targets = [\"my_pairs\"]` (--val-targets my_pairs)",
                        p.display(),
                        entry.val_targets
                    ),
                });
            }
            PairSet::load(&p, &spec)
                .map(|s| (name.clone(), s))
                .map_err(|source| TrainError::eval(p.display().to_string(), source))
        })
        .collect()
}
