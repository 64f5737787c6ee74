//! Offline resharding: a checkpoint written by N ranks becomes one for M ranks.
//!
//! Each output shard streams its rows straight from the memory-mapped source files into the
//! new file (weight rows, then momentum rows, then bias): bytes are copied, never converted,
//! so every row is preserved bit for bit in the source's storage type (`head.storage`), and no
//! shard is ever held in memory (the mapped pages are file cache, not anonymous memory). The
//! backbone file is copied unchanged.
//!
//! Converting the head's storage type happens only on request ([`reshard_as`], `xtask reshard
//! --head-storage`): weight and momentum are converted a piece at a time, exactly to f32 and
//! rounded to the nearest value (ties to even) to bf16 or f16; a finite value beyond f16's
//! range is an error, not an infinity. Bias and its momentum stay f32.

use std::path::{Path, PathBuf};

use plsc_core::HeadStorage;

use crate::error::{CkptError, Result, io_err};
use crate::layout::step_dir_name;
use crate::load::Checkpoint;
use crate::manifest::{
    HEAD_BIAS, HEAD_BIAS_MOMENTUM, HEAD_MOMENTUM, HEAD_WEIGHT, Manifest, head_file,
};
use crate::rows::{ConvertTarget, convert_le};
use crate::save::{
    CheckpointMeta, PendingCheckpoint, SaveOptions, has_bias, head_metadata, head_tensor_specs,
};
use crate::st::{StWriter, digest_file};

/// Writes `src` resharded for `world_size` ranks as `out_root/step-<n>/` (same step, same
/// training state and backbone), atomically like a save. The source is verified first.
/// Returns the new checkpoint directory.
///
/// Resharding never deletes what it did not write: it does not prune (`keep_last` does not
/// apply), leaves traces of other saves under `out_root` alone, refuses an `out_root` that
/// already holds a `step-<n>/` of the same step, and refuses an `out_root` that is the
/// source's root or the source checkpoint itself or lies inside it. A failed reshard removes
/// its partial directory and the folders it created.
pub fn reshard(src: &Checkpoint, world_size: usize, out_root: &Path) -> Result<PathBuf> {
    reshard_as(src, world_size, src.manifest().head.storage, out_root)
}

/// [`reshard`] with the head's weight and momentum stored as `storage` in the new checkpoint:
/// the same as [`reshard`] when it is the source's, else converted (exact to f32, round to
/// nearest even to bf16 or f16; a value beyond f16's range is an error naming its class).
pub fn reshard_as(
    src: &Checkpoint,
    world_size: usize,
    storage: HeadStorage,
    out_root: &Path,
) -> Result<PathBuf> {
    src.verify()?;
    let m = src.manifest();
    let mut head = m.head.clone();
    head.storage = storage;
    let meta = CheckpointMeta {
        head,
        world_size,
        model: m.model.clone(),
        training: m.training.clone(),
    };
    Manifest::expected_shards(&meta.head, world_size)?;
    check_out_root(src, out_root)?;
    let dest = out_root.join(step_dir_name(m.step()));
    if std::fs::symlink_metadata(&dest).is_ok() {
        return Err(CkptError::Invalid {
            what: "reshard output",
            detail: format!(
                "{} already exists; reshard does not replace checkpoints: choose another --out",
                dest.display()
            ),
        });
    }
    let created = create_dirs(out_root)?;
    let mut pending = match PendingCheckpoint::begin_beside(out_root, meta) {
        Ok(p) => p,
        Err(e) => {
            remove_created(&created);
            return Err(e);
        }
    };
    let tmp = pending.tmp_dir().to_path_buf();
    // Never prunes: keep_last 0 keeps every checkpoint of the root.
    let done = match write_shards(src, storage, &tmp, &mut pending) {
        Ok(()) => pending.commit(SaveOptions { keep_last: 0 }),
        Err(e) => {
            pending.abandon();
            Err(e)
        }
    };
    if done.is_err() {
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        remove_created(&created);
    }
    done
}

/// Copies the backbone and writes every new head shard into `tmp`, weight and momentum stored
/// as `storage`.
fn write_shards(
    src: &Checkpoint,
    storage: HeadStorage,
    tmp: &Path,
    pending: &mut PendingCheckpoint,
) -> Result<()> {
    let m = src.manifest();
    if let Some(b) = &m.backbone {
        let from = src.dir().join(&b.file);
        let to = tmp.join(&b.file);
        std::fs::copy(&from, &to).map_err(io_err(&to))?;
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&to))?;
        let digest = digest_file(&to)?;
        let recorded = &m.files[&b.file];
        if digest.sha256 != recorded.sha256 {
            return Err(CkptError::ChecksumMismatch {
                path: to,
                expected: recorded.sha256.clone(),
                found: digest.sha256,
                recorded_in: src.dir().join(crate::manifest::MANIFEST_FILE),
            });
        }
        pending.add_file(b.file.clone(), digest);
        pending.set_backbone_entry(b.clone());
    }
    let d = m.embedding_size;
    let bias = has_bias(&m.head);
    let (from, to) = (m.head.storage, storage);
    for s in Manifest::expected_shards(&m.head, pending.world_size())? {
        let name = head_file(s.rank);
        let path = tmp.join(&name);
        let mut w = StWriter::create_typed(
            &path,
            &head_tensor_specs(s.len, d, bias, to),
            Some(head_metadata(s, m.num_classes)),
        )?;
        // (tensor, values per row, stored type in the source, whether it follows the storage)
        let mut tensors = vec![(HEAD_WEIGHT, d, from, true), (HEAD_MOMENTUM, d, from, true)];
        if bias {
            tensors.push((HEAD_BIAS, 1, HeadStorage::F32, false));
            tensors.push((HEAD_BIAS_MOMENTUM, 1, HeadStorage::F32, false));
        }
        for (tensor, width, stored, converts) in tensors {
            let row_bytes = width * stored.bytes();
            let mut class = s.start;
            src.for_each_source(s.start, s.len, |st, row, rows| {
                let (_, bytes) = st.tensor(tensor, crate::rows::dtype(stored))?;
                let bytes = &bytes[row * row_bytes..(row + rows) * row_bytes];
                let first_class = class;
                class += rows;
                if converts && from != to {
                    let at = ConvertTarget {
                        file: &name,
                        tensor,
                        first_class,
                        width,
                    };
                    convert_le(from, to, bytes, &at, |b| w.write(b))
                } else {
                    w.write(bytes)
                }
            })?;
        }
        let digest = w.finish()?;
        tracing::info!("wrote {} ({} classes from {})", name, s.len, s.start);
        pending.add_file(name, digest);
    }
    Ok(())
}

/// Refuses an output root that is the source's root, or the source checkpoint, or inside it
/// (compared as canonical paths; a root that does not exist yet is resolved through its
/// nearest existing ancestor).
fn check_out_root(src: &Checkpoint, out_root: &Path) -> Result<()> {
    let canon = |p: &Path| p.canonicalize().map_err(io_err(p));
    let source = canon(src.dir())?;
    let out = canonical_beyond(out_root)?;
    let refuse = |why: &str| {
        Err(CkptError::Invalid {
            what: "reshard output",
            detail: format!(
                "{} {why} {}; write the resharded checkpoint elsewhere",
                out_root.display(),
                src.dir().display()
            ),
        })
    };
    if out.starts_with(&source) {
        return refuse("is or lies inside the source checkpoint");
    }
    if source.parent() == Some(out.as_path()) {
        return refuse("is the root of the source checkpoint");
    }
    Ok(())
}

/// `path` made absolute and canonical as far as it exists: the nearest existing ancestor
/// canonicalised, the rest appended (`..` in the rest is refused, it could point anywhere).
fn canonical_beyond(path: &Path) -> Result<PathBuf> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().map_err(io_err(path))?.join(path)
    };
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    if abs
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        && !rest.is_empty()
    {
        return Err(CkptError::Invalid {
            what: "reshard output",
            detail: format!(
                "{}: `..` in a path that does not exist yet; give it without `..`",
                path.display()
            ),
        });
    }
    let mut out = existing.canonicalize().map_err(io_err(existing))?;
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    Ok(out)
}

/// Creates `dir` and its missing ancestors; returns the ones it created, deepest first.
fn create_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut p = Some(dir);
    while let Some(d) = p.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        p = d.parent();
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    Ok(missing)
}

/// Removes folders [`create_dirs`] created (only if still empty).
fn remove_created(created: &[PathBuf]) {
    for d in created {
        let _ = std::fs::remove_dir(d);
    }
}
