//! Offline resharding: a checkpoint written by N ranks becomes one for M ranks.
//!
//! Each output shard streams its rows straight from the memory-mapped source files into the
//! new file (weight rows, then momentum rows, then bias): bytes are copied, never converted,
//! so every row is preserved bit for bit, and no shard is ever held in memory (the mapped
//! pages are file cache, not anonymous memory). The backbone file is copied unchanged.

use std::path::{Path, PathBuf};

use crate::error::{CkptError, Result, io_err};
use crate::load::Checkpoint;
use crate::manifest::{
    HEAD_BIAS, HEAD_BIAS_MOMENTUM, HEAD_MOMENTUM, HEAD_WEIGHT, Manifest, head_file,
};
use crate::save::{
    CheckpointMeta, PendingCheckpoint, SaveOptions, has_bias, head_metadata, head_tensor_specs,
};
use crate::st::{StWriter, digest_file};

/// Writes `src` resharded for `world_size` ranks as `out_root/step-<n>/` (same step, same
/// training state and backbone), atomically like a save. The source is verified first.
/// Returns the new checkpoint directory.
pub fn reshard(
    src: &Checkpoint,
    world_size: usize,
    out_root: &Path,
    opts: SaveOptions,
) -> Result<PathBuf> {
    src.verify()?;
    let m = src.manifest();
    let meta = CheckpointMeta {
        head: m.head.clone(),
        world_size,
        model: m.model.clone(),
        training: m.training.clone(),
    };
    let shards = Manifest::expected_shards(&meta.head, world_size)?;
    if out_root
        .canonicalize()
        .ok()
        .is_some_and(|o| src.dir().parent().and_then(|p| p.canonicalize().ok()) == Some(o))
    {
        return Err(CkptError::Invalid {
            what: "reshard output",
            detail: format!(
                "{} is the source's own root; write the resharded checkpoint elsewhere",
                out_root.display()
            ),
        });
    }
    let mut pending = PendingCheckpoint::begin(out_root, meta)?;
    let tmp = pending.tmp_dir().to_path_buf();
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
            });
        }
        pending.add_file(b.file.clone(), digest);
        pending.set_backbone_entry(b.clone());
    }
    let d = m.embedding_size;
    let bias = has_bias(&m.head);
    for s in shards {
        let name = head_file(s.rank);
        let path = tmp.join(&name);
        let mut w = StWriter::create(
            &path,
            &head_tensor_specs(s.len, d, bias),
            Some(head_metadata(s, m.num_classes)),
        )?;
        let mut tensors = vec![(HEAD_WEIGHT, d), (HEAD_MOMENTUM, d)];
        if bias {
            tensors.push((HEAD_BIAS, 1));
            tensors.push((HEAD_BIAS_MOMENTUM, 1));
        }
        for (tensor, width) in tensors {
            src.for_each_source(s.start, s.len, |st, row, rows| {
                let (_, bytes) = st.f32_tensor(tensor)?;
                w.write(&bytes[row * width * 4..(row + rows) * width * 4])
            })?;
        }
        let digest = w.finish()?;
        tracing::info!("wrote {} ({} classes from {})", name, s.len, s.start);
        pending.add_file(name, digest);
    }
    pending.commit(opts)
}
