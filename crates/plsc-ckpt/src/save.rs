//! Atomic saving.
//!
//! Every file goes into `<root>/.tmp-step-<n>/`; when all of them are written and synced, the
//! manifest (with their sizes and sha256) is written there last, and the directory is renamed
//! to `step-<n>/`. A crash at any moment leaves either no `step-<n>/` (the partial directory is
//! ignored by loading and removed by the next save) or a complete one. After the commit the
//! oldest checkpoints beyond [`SaveOptions::keep_last`] are removed. A `step-<n>/` that the
//! save replaces is removed only when it verifies; a damaged one is renamed to
//! `step-<n>.damaged` (see [`crate::resume`]).
//!
//! Two entry points share the file writers: [`save`] (one process holds every shard) and
//! [`save_rank`] (each rank thread or process writes its own shard; rank 0 commits after a
//! gather of the digests through a [`Communicator`]). [`PendingCheckpoint`] is the step-by-step
//! form of [`save`] for callers that produce shards one at a time.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use plsc_comm::{CommExt, Communicator};
use plsc_core::{ClassShard, HeadConfig, HeadStorage, RowStore, ShardedHead};
use safetensors::Dtype;
use serde::{Deserialize, Serialize};

use crate::error::{CkptError, Result, io_err};
use crate::layout::{self, OLD_PREFIX, TMP_PREFIX, step_dir_name, sync_dir};
use crate::manifest::{
    BACKBONE_FILE, BackboneEntry, FORMAT, FORMAT_VERSION, FileEntry, HEAD_BIAS, HEAD_BIAS_MOMENTUM,
    HEAD_MOMENTUM, HEAD_WEIGHT, MANIFEST_FILE, MOMENTUM_PREFIX, Manifest, ModelSpec, ShardEntry,
    TensorEntry, TrainingState, head_file,
};
use crate::st::{FileDigest, StWriter};
use crate::tensor::{NamedTensor, TensorKind, f32_bytes};

/// How many checkpoints to keep by default.
pub const DEFAULT_KEEP_LAST: usize = 5;

/// Options of a save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    /// Keep this many newest checkpoints under the root (0 keeps all).
    pub keep_last: usize,
}

impl Default for SaveOptions {
    fn default() -> Self {
        Self {
            keep_last: DEFAULT_KEEP_LAST,
        }
    }
}

/// What a checkpoint describes besides its tensors.
#[derive(Debug, Clone)]
pub struct CheckpointMeta {
    /// The head's settings (class count, embedding size, loss and margins, seed, optimiser).
    pub head: HeadConfig,
    /// Ranks of the run (`N`).
    pub world_size: usize,
    /// Backbone architecture and input; `None` for a head-only checkpoint.
    pub model: Option<ModelSpec>,
    /// Step, epoch, lr schedule, loss scale, data position, seeds.
    pub training: TrainingState,
}

/// One rank's head shard, borrowed: weight and momentum rows `[len, D]` (and the bias of
/// plain softmax with its momentum).
#[derive(Debug, Clone, Copy)]
pub struct HeadShardRef<'a> {
    /// The class range.
    pub shard: ClassShard,
    /// Weight rows, row-major `[shard.len, D]`, in the head's storage type.
    pub weight: &'a RowStore<f32>,
    /// Momentum rows `[shard.len, D]`, in the same storage type.
    pub momentum: &'a RowStore<f32>,
    /// Bias `[shard.len]` (softmax only).
    pub bias: Option<&'a [f32]>,
    /// Bias momentum `[shard.len]` (softmax only).
    pub bias_momentum: Option<&'a [f32]>,
}

impl<'a> HeadShardRef<'a> {
    /// The shard of a live head.
    pub fn from_head(head: &'a ShardedHead<f32>) -> Self {
        Self {
            shard: head.shard(),
            weight: head.weight(),
            momentum: head.velocity(),
            bias: head.bias(),
            bias_momentum: head.bias_velocity(),
        }
    }
}

/// The backbone's state, borrowed: parameters and buffers, and the optimiser's momentum
/// (each named like its parameter; an empty list when there is none yet).
#[derive(Debug, Clone, Copy)]
pub struct BackboneRef<'a> {
    /// Parameters, frozen parameters and buffers (arcface_torch names).
    pub tensors: &'a [NamedTensor],
    /// Momentum tensors, named like their parameters.
    pub momentum: &'a [NamedTensor],
}

/// Writes `backbone.safetensors` into `dir`; returns its digest and tensor list.
pub(crate) fn write_backbone_file(
    dir: &Path,
    backbone: BackboneRef<'_>,
) -> Result<(FileDigest, BackboneEntry)> {
    let path = dir.join(BACKBONE_FILE);
    let mut entries = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let all = backbone
        .tensors
        .iter()
        .map(|t| (t, false))
        .chain(backbone.momentum.iter().map(|t| (t, true)));
    for (t, momentum) in all.clone() {
        if t.values.len() != t.numel() {
            return Err(CkptError::Invalid {
                what: "backbone tensor",
                detail: format!(
                    "`{}` has {} values for shape {:?}",
                    t.name,
                    t.values.len(),
                    t.shape
                ),
            });
        }
        let (key, kind) = if momentum {
            (format!("{MOMENTUM_PREFIX}{}", t.name), TensorKind::Momentum)
        } else {
            if t.kind == TensorKind::Momentum || t.name.starts_with(MOMENTUM_PREFIX) {
                return Err(CkptError::Invalid {
                    what: "backbone tensor",
                    detail: format!("`{}`: momentum goes in `BackboneRef::momentum`", t.name),
                });
            }
            (t.name.clone(), t.kind)
        };
        if !seen.insert(key.clone()) {
            return Err(CkptError::Invalid {
                what: "backbone tensor",
                detail: format!("`{key}` appears twice"),
            });
        }
        entries.push(TensorEntry {
            key,
            shape: t.shape.clone(),
            kind,
        });
    }
    let specs: Vec<(String, Vec<usize>)> = entries
        .iter()
        .map(|e| (e.key.clone(), e.shape.clone()))
        .collect();
    let mut w = StWriter::create(&path, &specs, None)?;
    for (t, _) in all {
        w.write(&f32_bytes(&t.values))?;
    }
    Ok((
        w.finish()?,
        BackboneEntry {
            file: BACKBONE_FILE.into(),
            tensors: entries,
        },
    ))
}

/// The tensors of a head file: names, shapes and dtypes, in file order (weight and momentum in
/// the head's storage type, the bias of plain softmax and its momentum in f32).
pub(crate) fn head_tensor_specs(
    len: usize,
    dim: usize,
    bias: bool,
    storage: HeadStorage,
) -> Vec<(String, Vec<usize>, Dtype)> {
    let rows = crate::rows::dtype(storage);
    let mut specs = vec![
        (HEAD_WEIGHT.to_string(), vec![len, dim], rows),
        (HEAD_MOMENTUM.to_string(), vec![len, dim], rows),
    ];
    if bias {
        specs.push((HEAD_BIAS.to_string(), vec![len], Dtype::F32));
        specs.push((HEAD_BIAS_MOMENTUM.to_string(), vec![len], Dtype::F32));
    }
    specs
}

/// The header metadata of a head file (also in the manifest; here for tools that read one
/// file alone): one key, `plsc_shard`, holding
/// `{"len":..,"num_classes":..,"rank":..,"start":..}`. One key keeps the header bytes (and
/// so the file's sha256) deterministic: safetensors writes its metadata map in hash order.
pub(crate) fn head_metadata(shard: ClassShard, num_classes: usize) -> HashMap<String, String> {
    let fields = BTreeMap::from([
        ("len", shard.len),
        ("num_classes", num_classes),
        ("rank", shard.rank),
        ("start", shard.start),
    ]);
    HashMap::from([(
        "plsc_shard".to_string(),
        serde_json::to_string(&fields).expect("a map of numbers serialises"),
    )])
}

// Whether a head's file holds a bias: the file layout's rule (load reads it there too).
pub(crate) use crate::layout::has_bias;

/// Writes `head.rank<r>.safetensors` into `dir` after checking the shard against `meta`.
pub(crate) fn write_head_file(
    dir: &Path,
    meta: &CheckpointMeta,
    s: HeadShardRef<'_>,
) -> Result<(String, FileDigest)> {
    let expected = Manifest::expected_shards(&meta.head, meta.world_size)?;
    let want = expected.get(s.shard.rank).copied();
    if want != Some(s.shard) {
        return Err(CkptError::Invalid {
            what: "head shard",
            detail: format!(
                "shard {:?} is not rank {}'s range {:?} of {} classes over {} ranks",
                s.shard, s.shard.rank, want, meta.head.num_classes, meta.world_size
            ),
        });
    }
    let d = meta.head.embedding_size;
    let bias = has_bias(&meta.head);
    let check = |name: &str, got: usize, want: usize| {
        if got == want {
            Ok(())
        } else {
            Err(CkptError::Invalid {
                what: "head shard",
                detail: format!(
                    "rank {}: `{name}` has {got} values, expected {want}",
                    s.shard.rank
                ),
            })
        }
    };
    check(HEAD_WEIGHT, s.weight.len(), s.shard.len * d)?;
    check(HEAD_MOMENTUM, s.momentum.len(), s.shard.len * d)?;
    let biases = match (bias, s.bias, s.bias_momentum) {
        (false, _, _) => None,
        (true, Some(b), Some(bm)) => {
            check(HEAD_BIAS, b.len(), s.shard.len)?;
            check(HEAD_BIAS_MOMENTUM, bm.len(), s.shard.len)?;
            Some((b, bm))
        }
        (true, _, _) => {
            return Err(CkptError::Invalid {
                what: "head shard",
                detail: format!(
                    "rank {}: a softmax head needs bias and bias momentum",
                    s.shard.rank
                ),
            });
        }
    };
    let storage = meta.head.storage;
    if s.weight.storage() != storage || s.momentum.storage() != storage {
        return Err(CkptError::Invalid {
            what: "head shard",
            detail: format!(
                "rank {}: weight stored as {}, momentum as {}, but the head's settings say {storage}",
                s.shard.rank,
                s.weight.storage(),
                s.momentum.storage()
            ),
        });
    }
    let name = head_file(s.shard.rank);
    let path = dir.join(&name);
    let mut w = StWriter::create_typed(
        &path,
        &head_tensor_specs(s.shard.len, d, bias, storage),
        Some(head_metadata(s.shard, meta.head.num_classes)),
    )?;
    // In pieces: the rows are never copied whole (a shard can be most of the memory).
    crate::rows::write_rows(s.weight, |b| w.write(b))?;
    crate::rows::write_rows(s.momentum, |b| w.write(b))?;
    if let Some((b, bm)) = biases {
        w.write(&f32_bytes(b))?;
        w.write(&f32_bytes(bm))?;
    }
    Ok((name, w.finish()?))
}

/// Removes directories of interrupted saves under `root`, creates it if needed, and creates a
/// fresh `.tmp-step-<step>/`.
pub(crate) fn prepare_tmp(root: &Path, step: u64) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(io_err(root))?;
    for stale in layout::leftovers(root)? {
        tracing::info!("removing the partial checkpoint {}", stale.display());
        std::fs::remove_dir_all(&stale).map_err(io_err(&stale))?;
    }
    let tmp = root.join(format!("{TMP_PREFIX}{step:09}"));
    std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
    Ok(tmp)
}

/// Builds the manifest, writes it last into `tmp`, renames `tmp` to `step-<n>/` and prunes.
pub(crate) fn commit(
    root: &Path,
    tmp: &Path,
    meta: &CheckpointMeta,
    files: BTreeMap<String, FileDigest>,
    backbone: Option<BackboneEntry>,
    opts: SaveOptions,
) -> Result<PathBuf> {
    let shards = Manifest::expected_shards(&meta.head, meta.world_size)?
        .into_iter()
        .map(|s| ShardEntry {
            rank: s.rank,
            start: s.start,
            len: s.len,
            file: head_file(s.rank),
        })
        .collect();
    let manifest = Manifest {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        num_classes: meta.head.num_classes,
        embedding_size: meta.head.embedding_size,
        world_size: meta.world_size,
        head: meta.head.clone(),
        model: meta.model.clone(),
        training: meta.training.clone(),
        shards,
        backbone,
        files: files
            .into_iter()
            .map(|(k, d)| {
                (
                    k,
                    FileEntry {
                        bytes: d.bytes,
                        sha256: d.sha256,
                    },
                )
            })
            .collect(),
    };
    let manifest_path = tmp.join(MANIFEST_FILE);
    manifest.validate(&manifest_path)?;
    let text = serde_json::to_vec_pretty(&manifest).map_err(|source| CkptError::Json {
        path: manifest_path.clone(),
        source,
    })?;
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&manifest_path).map_err(io_err(&manifest_path))?;
        f.write_all(&text)
            .and_then(|_| f.sync_all())
            .map_err(io_err(&manifest_path))?;
    }
    sync_dir(tmp)?;
    let step = meta.training.step;
    let dest = root.join(step_dir_name(step));
    let old = root.join(format!("{OLD_PREFIX}{step:09}"));
    let mut replaced = dest.exists();
    if replaced && let Err(e) = crate::load::Checkpoint::open(&dest).and_then(|c| c.verify()) {
        // A damaged checkpoint of the same step is set aside, never deleted.
        let moved_to = crate::resume::set_aside_damaged(root, step)?;
        tracing::error!(
            checkpoint = %dest.display(),
            moved_to = %moved_to.display(),
            "damaged checkpoint of the step being saved renamed: {e}"
        );
        replaced = false;
    }
    if replaced {
        std::fs::rename(&dest, &old).map_err(io_err(&dest))?;
    }
    std::fs::rename(tmp, &dest).map_err(io_err(&dest))?;
    sync_dir(root)?;
    if replaced {
        std::fs::remove_dir_all(&old).map_err(io_err(&old))?;
    }
    prune(root, opts.keep_last)?;
    tracing::info!("saved checkpoint {}", dest.display());
    Ok(dest)
}

/// Removes all but the `keep_last` newest committed checkpoints (0 keeps all). Only
/// `step-<n>/` directories count and are removed: damaged ones set aside
/// (`step-<n>.damaged`) and anything else under the root are never touched.
pub fn prune(root: &Path, keep_last: usize) -> Result<()> {
    if keep_last == 0 {
        return Ok(());
    }
    for (_, dir) in layout::list_checkpoints(root)?.into_iter().skip(keep_last) {
        tracing::info!("removing the old checkpoint {}", dir.display());
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    Ok(())
}

/// A checkpoint being written by one process: [`Self::begin`], write the backbone and every
/// shard (in any order, one at a time, so a caller can produce them one by one), then
/// [`Self::commit`]. Dropping it without committing leaves a partial directory that the next
/// save removes.
pub struct PendingCheckpoint {
    root: PathBuf,
    tmp: PathBuf,
    meta: CheckpointMeta,
    files: BTreeMap<String, FileDigest>,
    backbone: Option<BackboneEntry>,
}

impl PendingCheckpoint {
    /// Starts `step-<meta.training.step>/` under `root` (removing partial directories of
    /// interrupted saves).
    pub fn begin(root: &Path, meta: CheckpointMeta) -> Result<Self> {
        meta.head.validate()?;
        Manifest::expected_shards(&meta.head, meta.world_size)?;
        let tmp = prepare_tmp(root, meta.training.step)?;
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            meta,
            files: BTreeMap::new(),
            backbone: None,
        })
    }

    /// Starts `step-<meta.training.step>/` under an existing `root` without removing anything
    /// there (offline tools: the root may belong to a run). Fails if `.tmp-step-<n>/` exists.
    pub(crate) fn begin_beside(root: &Path, meta: CheckpointMeta) -> Result<Self> {
        meta.head.validate()?;
        Manifest::expected_shards(&meta.head, meta.world_size)?;
        let tmp = root.join(format!("{TMP_PREFIX}{:09}", meta.training.step));
        std::fs::create_dir(&tmp).map_err(io_err(&tmp))?;
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            meta,
            files: BTreeMap::new(),
            backbone: None,
        })
    }

    /// The rank count of the checkpoint being written.
    pub(crate) fn world_size(&self) -> usize {
        self.meta.world_size
    }

    /// Removes the directory being written (a failed offline write leaves nothing).
    pub(crate) fn abandon(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.tmp) {
            tracing::warn!("could not remove {}: {e}", self.tmp.display());
        }
    }

    /// The directory being written.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Writes the backbone (weights, buffers, momentum).
    pub fn write_backbone(&mut self, backbone: BackboneRef<'_>) -> Result<()> {
        let (digest, entry) = write_backbone_file(&self.tmp, backbone)?;
        self.files.insert(entry.file.clone(), digest);
        self.backbone = Some(entry);
        Ok(())
    }

    /// Writes one rank's head shard.
    pub fn write_head_shard(&mut self, shard: HeadShardRef<'_>) -> Result<()> {
        let (name, digest) = write_head_file(&self.tmp, &self.meta, shard)?;
        self.files.insert(name, digest);
        Ok(())
    }

    /// Adds a finished file already inside [`Self::tmp_dir`] (used by resharding).
    pub(crate) fn add_file(&mut self, name: String, digest: FileDigest) {
        self.files.insert(name, digest);
    }

    /// Records the backbone's tensor list for a backbone file added with `add_file`.
    pub(crate) fn set_backbone_entry(&mut self, entry: BackboneEntry) {
        self.backbone = Some(entry);
    }

    /// Checks that every shard is there, writes the manifest and renames the directory to
    /// `step-<n>/`; returns its path.
    pub fn commit(self, opts: SaveOptions) -> Result<PathBuf> {
        for s in Manifest::expected_shards(&self.meta.head, self.meta.world_size)? {
            let name = head_file(s.rank);
            if !self.files.contains_key(&name) {
                return Err(CkptError::Invalid {
                    what: "checkpoint",
                    detail: format!("the head shard of rank {} ({name}) was not written", s.rank),
                });
            }
        }
        if self.meta.model.is_some() != self.backbone.is_some() {
            return Err(CkptError::Invalid {
                what: "checkpoint",
                detail: "a model spec needs the backbone and the backbone needs a model spec"
                    .into(),
            });
        }
        commit(
            &self.root,
            &self.tmp,
            &self.meta,
            self.files,
            self.backbone,
            opts,
        )
    }
}

/// Saves a checkpoint from one process that holds every shard (in rank order or any order).
/// Returns the committed directory.
pub fn save(
    root: &Path,
    meta: &CheckpointMeta,
    backbone: Option<BackboneRef<'_>>,
    shards: &[HeadShardRef<'_>],
    opts: SaveOptions,
) -> Result<PathBuf> {
    let mut pending = PendingCheckpoint::begin(root, meta.clone())?;
    if let Some(b) = backbone {
        pending.write_backbone(b)?;
    }
    for s in shards {
        pending.write_head_shard(*s)?;
    }
    pending.commit(opts)
}

/// What a rank reports to rank 0 after writing its files.
#[derive(Serialize, Deserialize)]
enum RankReport {
    Ok(BTreeMap<String, (u64, String)>),
    Failed(String),
}

/// Collective save: every rank of `comm` calls it with the same `root` and `meta`. Rank `r`
/// writes its own head shard (`shard`: rank r's part; for a replicated head only rank 0's is
/// written) and rank 0 writes the backbone (`backbone` is ignored on other ranks). Rank 0
/// commits once every rank has reported its digests; every rank returns the committed
/// directory, or an error if any rank failed (then no checkpoint is committed).
pub fn save_rank(
    comm: &dyn Communicator,
    root: &Path,
    meta: &CheckpointMeta,
    backbone: Option<BackboneRef<'_>>,
    shard: HeadShardRef<'_>,
    opts: SaveOptions,
) -> Result<PathBuf> {
    let rank = comm.rank();
    if comm.world_size() != meta.world_size {
        return Err(CkptError::Invalid {
            what: "save_rank",
            detail: format!(
                "communicator has {} ranks, the checkpoint describes {}",
                comm.world_size(),
                meta.world_size
            ),
        });
    }
    let tmp = root.join(format!("{TMP_PREFIX}{:09}", meta.training.step));

    // 1. rank 0 prepares the directory; the others wait for its verdict.
    let mut status = [0i64];
    let mut prepare_err = None;
    if rank == 0
        && let Err(e) = meta
            .head
            .validate()
            .map_err(CkptError::from)
            .and_then(|_| prepare_tmp(root, meta.training.step))
    {
        status[0] = 1;
        prepare_err = Some(e);
    }
    comm.broadcast(&mut status, 0)?;
    if let Some(e) = prepare_err {
        return Err(e);
    }
    if status[0] != 0 {
        return Err(CkptError::PeerFailed {
            rank: 0,
            dir: tmp,
            detail: "could not prepare the checkpoint directory".into(),
        });
    }

    // 2. every rank writes its files and reports.
    let writes_head = meta.head.loss.sharded || rank == 0;
    let mut backbone_entry = None;
    let local: Result<BTreeMap<String, FileDigest>> = (|| {
        let mut files = BTreeMap::new();
        if writes_head {
            let (name, digest) = write_head_file(&tmp, meta, shard)?;
            files.insert(name, digest);
        }
        if rank == 0
            && let Some(b) = backbone
        {
            let (digest, entry) = write_backbone_file(&tmp, b)?;
            files.insert(entry.file.clone(), digest);
            backbone_entry = Some(entry);
        }
        Ok(files)
    })();
    let (local_files, mut local_err) = match local {
        Ok(files) => (files, None),
        Err(e) => (BTreeMap::new(), Some(e)),
    };
    let report = match &local_err {
        None => RankReport::Ok(
            local_files
                .iter()
                .map(|(k, d)| (k.clone(), (d.bytes, d.sha256.clone())))
                .collect(),
        ),
        Some(e) => RankReport::Failed(e.to_string()),
    };
    let bytes = serde_json::to_vec(&report).expect("a report serialises");
    let (all, counts) = comm.all_gather_varcount(&bytes)?;

    // 3. rank 0 commits and tells the others.
    let mut outcome = [0i64];
    let mut result: Option<Result<PathBuf>> = None;
    if rank == 0 {
        let mut files = BTreeMap::new();
        let mut failure = None;
        let mut at = 0;
        for (r, n) in counts.iter().enumerate() {
            let rep: std::result::Result<RankReport, _> = serde_json::from_slice(&all[at..at + n]);
            at += n;
            match rep {
                Ok(RankReport::Ok(f)) => {
                    for (k, (bytes, sha256)) in f {
                        files.insert(k, FileDigest { bytes, sha256 });
                    }
                }
                Ok(RankReport::Failed(detail)) => {
                    failure.get_or_insert((r, detail));
                }
                Err(e) => {
                    failure.get_or_insert((r, format!("unreadable report: {e}")));
                }
            }
        }
        let r = match (failure, local_err.take()) {
            (_, Some(e)) => Err(e),
            (Some((r, detail)), None) => Err(CkptError::PeerFailed {
                rank: r,
                dir: tmp.clone(),
                detail,
            }),
            (None, None) => {
                if meta.model.is_some() != backbone_entry.is_some() {
                    Err(CkptError::Invalid {
                        what: "save_rank",
                        detail: "a model spec needs the backbone on rank 0 and the backbone needs a model spec".into(),
                    })
                } else {
                    commit(root, &tmp, meta, files, backbone_entry.take(), opts)
                }
            }
        };
        outcome[0] = i64::from(r.is_err());
        result = Some(r);
    }
    comm.broadcast(&mut outcome, 0)?;
    match result {
        Some(r) => r,
        None => {
            if let Some(e) = local_err {
                Err(e)
            } else if outcome[0] == 0 {
                Ok(root.join(step_dir_name(meta.training.step)))
            } else {
                Err(CkptError::PeerFailed {
                    rank: 0,
                    dir: tmp,
                    detail: "rank 0 did not commit the checkpoint (see its error)".into(),
                })
            }
        }
    }
}
