//! Loading: open a checkpoint, verify it, read the backbone and any class range of the head
//! (so a checkpoint of N ranks loads onto M ranks), find the newest valid one.
//!
//! Every file a load reads is checked first: its size and sha256 against the manifest, and its
//! tensors' names, dtype and shapes against the manifest. [`Checkpoint::verify`] checks all of
//! them at once. Head rows are copied out of memory-mapped files, one source shard range at a
//! time, so only the rows asked for are ever in memory, in the checkpoint's storage type
//! (`head.storage`, bit for bit). A run whose head is stored in another type is refused
//! ([`CkptError::StorageMismatch`]): conversion happens only on request, by [`crate::reshard_as`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use plsc_comm::{CommExt, Communicator};
use plsc_core::{ClassShard, HeadConfig, RowStore, ShardedHead};

use crate::error::{CkptError, Result};
use crate::layout::{has_bias, list_checkpoints, step_dir_name};
use crate::manifest::{
    HEAD_BIAS, HEAD_BIAS_MOMENTUM, HEAD_MOMENTUM, HEAD_WEIGHT, MANIFEST_FILE, MOMENTUM_PREFIX,
    Manifest, ShardEntry,
};
use crate::rows::{self, RowsBuilder};
use crate::st::{MappedSt, digest_file};
use crate::tensor::{NamedTensor, TensorKind, extend_f32_from_le};

/// A backbone read from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct BackboneState {
    /// Parameters, frozen parameters and buffers, in file order.
    pub tensors: Vec<NamedTensor>,
    /// Momentum tensors, named like their parameters (the `momentum.` prefix removed).
    pub momentum: Vec<NamedTensor>,
}

/// Head rows of one class range, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadRows {
    /// The class range (with the rank it is meant for).
    pub shard: ClassShard,
    /// Embedding size `D`.
    pub embedding_size: usize,
    /// Weight rows `[len, D]`, in the checkpoint's storage type.
    pub weight: RowStore<f32>,
    /// Momentum rows `[len, D]`, in the same storage type.
    pub momentum: RowStore<f32>,
    /// Bias `[len]` (softmax only).
    pub bias: Option<Vec<f32>>,
    /// Bias momentum `[len]` (softmax only).
    pub bias_momentum: Option<Vec<f32>>,
}

impl HeadRows {
    /// Puts these rows into `head` (which must own exactly this class range and store its rows
    /// in the same type): the weight (and bias), and with `with_momentum` the momentum too
    /// (resume; fine-tuning starts it at 0).
    pub fn apply_to(self, head: &mut ShardedHead<f32>, with_momentum: bool) -> Result<()> {
        let s = head.shard();
        let storage = head.config().storage;
        if self.weight.storage() != storage || self.momentum.storage() != storage {
            return Err(CkptError::Invalid {
                what: "head rows",
                detail: format!(
                    "rows stored as {} (momentum {}) do not fit the head of rank {}, stored as \
                     {storage}: set the run's head_storage, or convert the checkpoint with \
                     `cargo xtask reshard --head-storage {storage}`",
                    self.weight.storage(),
                    self.momentum.storage(),
                    s.rank
                ),
            });
        }
        if (s.start, s.len) != (self.shard.start, self.shard.len)
            || head.config().embedding_size != self.embedding_size
        {
            return Err(CkptError::Invalid {
                what: "head rows",
                detail: format!(
                    "rows of classes {}..{} x {} do not fit the head of rank {} (classes {}..{} x {})",
                    self.shard.start,
                    self.shard.end(),
                    self.embedding_size,
                    s.rank,
                    s.start,
                    s.end(),
                    head.config().embedding_size
                ),
            });
        }
        head.set_weight(self.weight, self.bias)?;
        if with_momentum {
            head.set_velocity(self.momentum, self.bias_momentum)?;
        }
        Ok(())
    }
}

/// An opened checkpoint directory.
pub struct Checkpoint {
    dir: PathBuf,
    manifest: Manifest,
    verified: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("step", &self.manifest.step())
            .finish()
    }
}

impl Checkpoint {
    /// Opens `dir` (a `step-<n>/` directory): reads and validates the manifest and checks that
    /// every listed file exists with its recorded size. Checksums are checked when a file is
    /// first read through this handle, or all at once by [`Self::verify`]; each file is
    /// checked once per handle.
    pub fn open(dir: &Path) -> Result<Self> {
        let manifest_path = dir.join(MANIFEST_FILE);
        if !manifest_path.is_file() {
            return Err(CkptError::MissingFile {
                path: manifest_path,
                listed_in: dir.to_path_buf(),
            });
        }
        let manifest = Manifest::read(&manifest_path)?;
        for (name, entry) in &manifest.files {
            let path = dir.join(name);
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(CkptError::MissingFile {
                        path,
                        listed_in: manifest_path,
                    });
                }
                Err(source) => return Err(CkptError::Io { path, source }),
            };
            if meta.len() != entry.bytes {
                return Err(CkptError::SizeMismatch {
                    path,
                    expected: entry.bytes,
                    found: meta.len(),
                    recorded_in: manifest_path,
                });
            }
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// Opens `path`: a checkpoint directory (holding `manifest.json`), or a root of
    /// checkpoints, of which the newest valid one is opened (and verified).
    pub fn open_dir_or_latest(path: &Path) -> Result<Self> {
        if path.join(MANIFEST_FILE).is_file() {
            Self::open(path)
        } else {
            latest_valid(path)?.ok_or_else(|| CkptError::NoCheckpoint {
                dir: path.to_path_buf(),
            })
        }
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The step it was taken at.
    pub fn step(&self) -> u64 {
        self.manifest.step()
    }

    /// Checks the sha256 of every file and the names, dtype and shapes of every tensor.
    pub fn verify(&self) -> Result<()> {
        for name in self.manifest.files.keys() {
            self.verify_file(name)?;
        }
        if self.manifest.backbone.is_some() {
            self.open_backbone()?;
        }
        for s in &self.manifest.shards {
            self.open_shard(s)?;
        }
        Ok(())
    }

    /// Checks the class count, embedding size and head storage of `head` (the run's settings)
    /// against the checkpoint's. The loss may differ (fine-tuning with another margin is
    /// allowed); another storage type is [`CkptError::StorageMismatch`].
    pub fn check_head_config(&self, head: &HeadConfig) -> Result<()> {
        let m = &self.manifest;
        let path = self.dir.join(MANIFEST_FILE);
        let mismatch = |field, checkpoint: usize, expected: usize| CkptError::Mismatch {
            path: path.clone(),
            field,
            checkpoint: checkpoint.to_string(),
            expected: expected.to_string(),
        };
        if m.num_classes != head.num_classes {
            return Err(mismatch("class count", m.num_classes, head.num_classes));
        }
        if m.embedding_size != head.embedding_size {
            return Err(mismatch(
                "embedding size",
                m.embedding_size,
                head.embedding_size,
            ));
        }
        if m.head.storage != head.storage {
            return Err(CkptError::StorageMismatch {
                path,
                dir: self.dir.clone(),
                checkpoint: m.head.storage,
                run: head.storage,
            });
        }
        if has_bias(&m.head) != has_bias(head) {
            return Err(CkptError::Mismatch {
                path,
                field: "head bias (softmax vs margin loss)",
                checkpoint: has_bias(&m.head).to_string(),
                expected: has_bias(head).to_string(),
            });
        }
        Ok(())
    }

    /// Checks size and sha256 of one listed file (once per opened checkpoint).
    /// The files of the manifest whose sha256 this handle has not checked yet, in name order.
    pub fn unverified_files(&self) -> Vec<PathBuf> {
        let verified = self.verified.lock().expect("not poisoned");
        self.manifest
            .files
            .keys()
            .filter(|name| !verified.contains(name.as_str()))
            .map(|name| self.dir.join(name))
            .collect()
    }

    fn verify_file(&self, name: &str) -> Result<()> {
        if self.verified.lock().expect("not poisoned").contains(name) {
            return Ok(());
        }
        let path = self.dir.join(name);
        let entry = self
            .manifest
            .files
            .get(name)
            .ok_or_else(|| CkptError::BadManifest {
                path: self.dir.join(MANIFEST_FILE),
                detail: format!("{name} is not listed"),
            })?;
        if !path.is_file() {
            return Err(CkptError::MissingFile {
                path,
                listed_in: self.dir.join(MANIFEST_FILE),
            });
        }
        let d = digest_file(&path)?;
        if d.bytes != entry.bytes {
            return Err(CkptError::SizeMismatch {
                path,
                expected: entry.bytes,
                found: d.bytes,
                recorded_in: self.dir.join(MANIFEST_FILE),
            });
        }
        if d.sha256 != entry.sha256 {
            return Err(CkptError::ChecksumMismatch {
                path,
                expected: entry.sha256.clone(),
                found: d.sha256,
                recorded_in: self.dir.join(MANIFEST_FILE),
            });
        }
        self.verified
            .lock()
            .expect("not poisoned")
            .insert(name.to_string());
        Ok(())
    }

    /// Verifies and maps a shard's file, checking its tensors' shapes.
    fn open_shard(&self, s: &ShardEntry) -> Result<MappedSt> {
        self.verify_file(&s.file)?;
        let st = MappedSt::open(&self.dir.join(&s.file))?;
        let d = self.manifest.embedding_size;
        let dtype = rows::dtype(self.manifest.head.storage);
        st.tensor_shaped(HEAD_WEIGHT, dtype, &[s.len, d])?;
        st.tensor_shaped(HEAD_MOMENTUM, dtype, &[s.len, d])?;
        if has_bias(&self.manifest.head) {
            st.f32_tensor_shaped(HEAD_BIAS, &[s.len])?;
            st.f32_tensor_shaped(HEAD_BIAS_MOMENTUM, &[s.len])?;
        }
        Ok(st)
    }

    /// Verifies and maps the backbone file, checking it holds exactly the listed tensors.
    pub(crate) fn open_backbone(&self) -> Result<MappedSt> {
        let entry = self
            .manifest
            .backbone
            .as_ref()
            .ok_or_else(|| CkptError::MissingFile {
                path: self.dir.join(crate::manifest::BACKBONE_FILE),
                listed_in: self.dir.join(MANIFEST_FILE),
            })?;
        self.verify_file(&entry.file)?;
        let st = MappedSt::open(&self.dir.join(&entry.file))?;
        for t in &entry.tensors {
            st.f32_tensor_shaped(&t.key, &t.shape)?;
        }
        let listed: HashSet<&str> = entry.tensors.iter().map(|t| t.key.as_str()).collect();
        if let Some(extra) = st
            .names()
            .into_iter()
            .find(|n| !listed.contains(n.as_str()))
        {
            return Err(CkptError::BadManifest {
                path: st.path().to_path_buf(),
                detail: format!("tensor `{extra}` is not listed in the manifest"),
            });
        }
        Ok(st)
    }

    /// Checks the backbone's parameters and buffers (not the momentum) against the run's
    /// model: `expected` lists every `(name, shape)` the model has (plsc-models:
    /// `Backbone::state_layout()`). A missing tensor, another shape or a tensor the model does
    /// not have is an error naming `backbone.safetensors` and the tensor.
    pub fn check_backbone_layout<'a>(
        &self,
        expected: impl IntoIterator<Item = (&'a str, &'a [usize])>,
    ) -> Result<()> {
        let path = self.dir.join(crate::manifest::BACKBONE_FILE);
        let entry = self
            .manifest
            .backbone
            .as_ref()
            .ok_or_else(|| CkptError::MissingFile {
                path: path.clone(),
                listed_in: self.dir.join(MANIFEST_FILE),
            })?;
        let saved: std::collections::HashMap<&str, &[usize]> = entry
            .tensors
            .iter()
            .filter(|t| t.kind != TensorKind::Momentum)
            .map(|t| (t.key.as_str(), t.shape.as_slice()))
            .collect();
        let mut seen = HashSet::new();
        for (name, shape) in expected {
            match saved.get(name) {
                None => {
                    return Err(CkptError::MissingTensor {
                        path,
                        tensor: name.to_string(),
                    });
                }
                Some(found) if *found != shape => {
                    return Err(CkptError::TensorShape {
                        path,
                        tensor: name.to_string(),
                        expected: shape.to_vec(),
                        found: found.to_vec(),
                    });
                }
                Some(_) => {
                    seen.insert(name);
                }
            }
        }
        let mut extra: Vec<&str> = saved
            .keys()
            .copied()
            .filter(|k| !seen.contains(k))
            .collect();
        if !extra.is_empty() {
            extra.sort_unstable();
            return Err(CkptError::Mismatch {
                path,
                field: "backbone tensors",
                checkpoint: format!("{extra:?} besides the model's"),
                expected: "only the model's tensors".into(),
            });
        }
        Ok(())
    }

    /// The backbone's parameters and buffers (no momentum) as the bytes of a standard
    /// safetensors file, straight from the mapped checkpoint file: what plsc-models'
    /// `Backbone::load_safetensors_bytes` takes (it refuses unknown keys such as momentum).
    pub fn backbone_weights_safetensors(&self) -> Result<Vec<u8>> {
        let st = self.open_backbone()?;
        let entry = self
            .manifest
            .backbone
            .as_ref()
            .expect("checked by open_backbone");
        let path = st.path().to_path_buf();
        let mut views = Vec::new();
        for t in entry
            .tensors
            .iter()
            .filter(|t| t.kind != TensorKind::Momentum)
        {
            let bytes = st.f32_tensor_shaped(&t.key, &t.shape)?;
            let view = safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                t.shape.clone(),
                bytes,
            )
            .map_err(|e| CkptError::Safetensors {
                path: path.clone(),
                detail: format!("tensor `{}`: {e}", t.key),
            })?;
            views.push((t.key.clone(), view));
        }
        safetensors::serialize(views, None).map_err(|e| CkptError::Safetensors {
            path,
            detail: e.to_string(),
        })
    }

    /// Reads the backbone (weights, buffers and momentum).
    pub fn load_backbone(&self) -> Result<BackboneState> {
        let st = self.open_backbone()?;
        let entry = self
            .manifest
            .backbone
            .as_ref()
            .expect("checked by open_backbone");
        let mut state = BackboneState {
            tensors: Vec::new(),
            momentum: Vec::new(),
        };
        for t in &entry.tensors {
            let bytes = st.f32_tensor_shaped(&t.key, &t.shape)?;
            let mut values = Vec::with_capacity(bytes.len() / 4);
            extend_f32_from_le(&mut values, bytes);
            if t.kind == TensorKind::Momentum {
                let name = t.key.strip_prefix(MOMENTUM_PREFIX).unwrap_or(&t.key);
                state
                    .momentum
                    .push(NamedTensor::new(name, t.shape.clone(), t.kind, values));
            } else {
                state.tensors.push(NamedTensor::new(
                    t.key.clone(),
                    t.shape.clone(),
                    t.kind,
                    values,
                ));
            }
        }
        Ok(state)
    }

    /// Calls `f(source file, first row, row count)` for each source shard overlapping
    /// classes `[start, start + len)`, in class order (rows relative to the source shard).
    pub(crate) fn for_each_source<F>(&self, start: usize, len: usize, mut f: F) -> Result<()>
    where
        F: FnMut(&MappedSt, usize, usize) -> Result<()>,
    {
        let end = start + len;
        if len == 0 || end > self.manifest.num_classes {
            return Err(CkptError::Invalid {
                what: "class range",
                detail: format!(
                    "classes {start}..{end} are not a non-empty range of the checkpoint's {}",
                    self.manifest.num_classes
                ),
            });
        }
        for s in &self.manifest.shards {
            let (a, b) = (start.max(s.start), end.min(s.start + s.len));
            if a >= b {
                continue;
            }
            let st = self.open_shard(s)?;
            f(&st, a - s.start, b - a)?;
        }
        Ok(())
    }

    /// The head rows of classes `[start, start + len)`, whatever ranks wrote them, in the
    /// checkpoint's storage type; the result is labelled with `rank`.
    pub fn load_head_range(&self, rank: usize, start: usize, len: usize) -> Result<HeadRows> {
        let d = self.manifest.embedding_size;
        let bias = has_bias(&self.manifest.head);
        let storage = self.manifest.head.storage;
        let (dtype, width) = (rows::dtype(storage), d * storage.bytes());
        let mut weight = RowsBuilder::new(storage, len * d);
        let mut momentum = RowsBuilder::new(storage, len * d);
        let mut b = bias.then(|| Vec::with_capacity(len));
        let mut bm = bias.then(|| Vec::with_capacity(len));
        self.for_each_source(start, len, |st, row, rows| {
            let (_, w) = st.tensor(HEAD_WEIGHT, dtype)?;
            weight.extend_le(&w[row * width..(row + rows) * width])?;
            let (_, m) = st.tensor(HEAD_MOMENTUM, dtype)?;
            momentum.extend_le(&m[row * width..(row + rows) * width])?;
            if let (Some(b), Some(bm)) = (b.as_mut(), bm.as_mut()) {
                let (_, x) = st.f32_tensor(HEAD_BIAS)?;
                extend_f32_from_le(b, &x[row * 4..(row + rows) * 4]);
                let (_, x) = st.f32_tensor(HEAD_BIAS_MOMENTUM)?;
                extend_f32_from_le(bm, &x[row * 4..(row + rows) * 4]);
            }
            Ok(())
        })?;
        Ok(HeadRows {
            shard: ClassShard { rank, start, len },
            embedding_size: d,
            weight: weight.finish(),
            momentum: momentum.finish(),
            bias: b,
            bias_momentum: bm,
        })
    }

    /// Rank `rank`'s rows in the balanced split over `world_size` ranks (plsc-core's rule),
    /// resharding from however many ranks wrote the checkpoint. For a replicated head
    /// (`sharded = false`) every rank gets all classes.
    pub fn load_head_shard(&self, world_size: usize, rank: usize) -> Result<HeadRows> {
        let shard = if self.manifest.head.loss.sharded {
            ClassShard::for_rank(self.manifest.num_classes, world_size, rank)?
        } else {
            ClassShard {
                rank,
                start: 0,
                len: self.manifest.num_classes,
            }
        };
        self.load_head_range(rank, shard.start, shard.len)
    }

    /// Loads the rows `head` owns into it, after checking its settings against the
    /// checkpoint's ([`Self::check_head_config`]). `with_momentum`: resume (true) or
    /// fine-tune from the weights (false).
    pub fn load_into_head(&self, head: &mut ShardedHead<f32>, with_momentum: bool) -> Result<()> {
        self.check_head_config(head.config())?;
        let s = head.shard();
        self.load_head_range(s.rank, s.start, s.len)?
            .apply_to(head, with_momentum)
    }
}

/// The newest checkpoint under `root` that verifies completely (every checksum and shape);
/// partial directories of interrupted saves are ignored, and a corrupt newest checkpoint
/// falls back to the one before (with a warning). `None` if there is none.
pub fn latest_valid(root: &Path) -> Result<Option<Checkpoint>> {
    for (_, dir) in list_checkpoints(root)? {
        match Checkpoint::open(&dir).and_then(|c| c.verify().map(|_| c)) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => tracing::warn!("skipping checkpoint {}: {e}", dir.display()),
        }
    }
    Ok(None)
}

/// [`latest_valid`] for a group of ranks: rank 0 verifies and broadcasts the step, the other
/// ranks open that checkpoint (each load still checks the files it reads). Every rank of
/// `comm` must call it.
pub fn latest_valid_shared(comm: &dyn Communicator, root: &Path) -> Result<Option<Checkpoint>> {
    let mut step = [-1i64];
    let mut mine = None;
    let mut failure = None;
    if comm.rank() == 0 {
        match latest_valid(root) {
            Ok(Some(c)) => {
                step[0] = c.step() as i64;
                mine = Some(c);
            }
            Ok(None) => {}
            Err(e) => {
                step[0] = -2;
                failure = Some(e);
            }
        }
    }
    comm.broadcast(&mut step, 0)?;
    if let Some(e) = failure {
        return Err(e);
    }
    match step[0] {
        -1 => Ok(None),
        -2 => Err(CkptError::PeerFailed {
            rank: 0,
            dir: root.to_path_buf(),
            detail: "could not look for checkpoints".into(),
        }),
        s if comm.rank() == 0 => {
            debug_assert_eq!(s as u64, mine.as_ref().map_or(0, Checkpoint::step));
            Ok(mine)
        }
        s => Checkpoint::open(&root.join(step_dir_name(s as u64))).map(Some),
    }
}
