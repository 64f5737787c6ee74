//! Per-rank batch streams for training.
//!
//! Two layouts decide which samples rank `r` of `N` sees:
//! - **own part** (a `file_list.txt` with exactly `N` parts): rank `r` reads part `r` only
//!   and reshuffles it each epoch from `(seed, epoch, r)`;
//! - **strided** (any other source, including `.rec`): all ranks compute the same global
//!   permutation from `(seed, epoch)`; global batch `k` is positions `[k*B, (k+1)*B)` with
//!   `B = N * batch_size`, and rank `r` takes its `batch_size` slice of it.
//!
//! Every rank yields the same number of equal batches per epoch. Samples that cannot fill a
//! global batch are dropped for that epoch (PLSC's `drop_last`) and counted in
//! [`BatchStream::dropped_per_epoch`]; the next epoch's reshuffle gives them their turn.
//! Batches depend only on `(seed, epoch, step, rank)`, so a stream started at a
//! [`Position`] sees exactly the batches a run that got there would have seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::decode::{ImageSpec, decode_into};
use crate::error::{DataError, LineError, Location, Result};
use crate::format::read_file_list;
use crate::index::count_lines;
use crate::source::{Base64Source, RecSource, SampleSource};

/// Configuration of a rank's stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world: usize,
    /// Images per rank per batch.
    pub batch_size: usize,
    /// Seed of the per-epoch shuffles and of the flips.
    pub seed: u64,
    /// Model input size, channels and normalisation.
    pub spec: ImageSpec,
    /// Random horizontal flip (probability 1/2, seeded).
    pub flip: bool,
    /// Batches decoded ahead by the background thread.
    pub prefetch: usize,
    /// Class count: labels must be below it (`None`: not checked).
    pub classes: Option<u64>,
    /// Replace undecodable samples by another sample of the same batch, counting them,
    /// instead of failing.
    pub skip_bad: bool,
    /// Decoder threads (a private rayon pool); `None` uses the current rayon pool.
    pub threads: Option<usize>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            rank: 0,
            world: 1,
            batch_size: 128,
            seed: 0,
            spec: ImageSpec::default(),
            flip: true,
            prefetch: 2,
            classes: None,
            skip_bad: false,
            threads: None,
        }
    }
}

/// A point in the stream: batch `step` of epoch `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    /// Epoch (0-based).
    pub epoch: u64,
    /// Batch within the epoch (0-based).
    pub step: u64,
}

/// One rank's batch: `batch_size` images in NCHW order and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `batch_size * channels * height * width` normalised floats, NCHW.
    pub images: Vec<f32>,
    /// Labels, one per image.
    pub labels: Vec<i64>,
    /// Global sample ids (position in the source; for own-part layout, offset by the
    /// lengths of the earlier parts).
    pub samples: Vec<u64>,
    /// Where this batch is in the stream.
    pub position: Position,
    /// Images in the batch.
    pub batch_size: usize,
    /// Channels per image.
    pub channels: usize,
    /// Image height.
    pub height: usize,
    /// Image width.
    pub width: usize,
    /// Samples that failed and were replaced under `skip_bad` (their errors).
    pub replaced: Vec<String>,
}

#[derive(Debug, Clone)]
enum Layout {
    /// Rank reads its own part; lengths of all parts.
    OwnPart { lens: Vec<u64> },
    /// Global permutation over `n` samples, strided by rank.
    Strided { n: u64 },
}

struct Inner {
    cfg: StreamConfig,
    source: Arc<dyn SampleSource>,
    layout: Layout,
    steps: u64,
    dropped: u64,
    pool: Option<rayon::ThreadPool>,
    replaced_total: AtomicU64,
}

/// A rank's stream of equal-size batches (see the module docs for the layouts).
#[derive(Clone)]
pub struct BatchStream {
    inner: Arc<Inner>,
}

/// SplitMix64 finaliser, used to derive independent seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn seed_of(parts: &[u64]) -> u64 {
    parts.iter().fold(0x5eed_u64, |acc, &p| mix(acc ^ mix(p)))
}

impl BatchStream {
    /// A stream over a `file_list.txt`: own-part layout when it names exactly `world` parts,
    /// strided over all lines otherwise.
    pub fn from_file_list(file_list: &Path, cfg: StreamConfig) -> Result<Self> {
        let parts = read_file_list(file_list)?;
        Self::from_parts(&parts, cfg)
    }

    /// A stream over part files (see [`BatchStream::from_file_list`]).
    pub fn from_parts(parts: &[PathBuf], cfg: StreamConfig) -> Result<Self> {
        check_cfg(&cfg)?;
        if parts.len() == cfg.world && cfg.world > 1 {
            let lens: Vec<u64> = parts
                .par_iter()
                .enumerate()
                .map(|(r, p)| if r == cfg.rank { Ok(0) } else { count_lines(p) })
                .collect::<Result<_>>()?;
            let source = Base64Source::open(&parts[cfg.rank..cfg.rank + 1])?;
            let mut lens = lens;
            lens[cfg.rank] = source.len() as u64;
            Self::build(Arc::new(source), Layout::OwnPart { lens }, cfg)
        } else {
            let source = Base64Source::open(parts)?;
            Self::from_source(Arc::new(source), cfg)
        }
    }

    /// A stream reading an MXNet `.rec` directly (strided layout); the class count defaults
    /// to the header record's.
    pub fn from_rec(rec: &Path, idx: Option<&Path>, mut cfg: StreamConfig) -> Result<Self> {
        let source = RecSource::open(rec, idx)?;
        if cfg.classes.is_none() {
            cfg.classes = source.dataset().classes();
        }
        Self::from_source(Arc::new(source), cfg)
    }

    /// A strided stream over any source (every rank opens the same source).
    pub fn from_source(source: Arc<dyn SampleSource>, cfg: StreamConfig) -> Result<Self> {
        check_cfg(&cfg)?;
        let n = source.len() as u64;
        Self::build(source, Layout::Strided { n }, cfg)
    }

    /// An own-part stream: `source` is this rank's part and `lens[r]` the sample count of
    /// rank `r`'s part (`lens[cfg.rank]` must equal `source.len()`).
    pub fn from_own_part(
        source: Arc<dyn SampleSource>,
        lens: Vec<u64>,
        cfg: StreamConfig,
    ) -> Result<Self> {
        check_cfg(&cfg)?;
        if lens.len() != cfg.world || lens[cfg.rank] != source.len() as u64 {
            return Err(DataError::Config(format!(
                "rank {}: part lengths {lens:?} do not match world {} and source length {}",
                cfg.rank,
                cfg.world,
                source.len()
            )));
        }
        Self::build(source, Layout::OwnPart { lens }, cfg)
    }

    fn build(source: Arc<dyn SampleSource>, layout: Layout, cfg: StreamConfig) -> Result<Self> {
        let b = cfg.batch_size as u64;
        let w = cfg.world as u64;
        let (steps, total) = match &layout {
            Layout::OwnPart { lens } => (
                lens.iter().copied().min().unwrap_or(0) / b,
                lens.iter().sum::<u64>(),
            ),
            Layout::Strided { n } => {
                if *n > u32::MAX as u64 {
                    return Err(DataError::Config(format!(
                        "{n} samples exceed the stream's limit of 2^32"
                    )));
                }
                (n / (b * w), *n)
            }
        };
        if steps == 0 {
            return Err(DataError::Config(format!(
                "rank {}: {total} samples cannot fill one global batch of {} ({} ranks x {})",
                cfg.rank,
                b * w,
                w,
                b
            )));
        }
        let dropped = total - steps * b * w;
        let pool = match cfg.threads {
            Some(t) => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .thread_name(move |i| format!("plsc-data-decode-{i}"))
                    .build()
                    .map_err(|e| DataError::Config(format!("decoder thread pool: {e}")))?,
            ),
            None => None,
        };
        if dropped > 0 {
            tracing::info!(
                "rank {}: {steps} batches per epoch; {dropped} samples per epoch do not fill a \
                 global batch and are dropped for that epoch",
                cfg.rank
            );
        }
        Ok(Self {
            inner: Arc::new(Inner {
                cfg,
                source,
                layout,
                steps,
                dropped,
                pool,
                replaced_total: AtomicU64::new(0),
            }),
        })
    }

    /// Batches per epoch (the same on every rank).
    pub fn steps_per_epoch(&self) -> u64 {
        self.inner.steps
    }

    /// Samples (over all ranks) left out of each epoch because they cannot fill a global
    /// batch.
    pub fn dropped_per_epoch(&self) -> u64 {
        self.inner.dropped
    }

    /// Samples replaced under `skip_bad` so far.
    pub fn replaced_total(&self) -> u64 {
        self.inner.replaced_total.load(Ordering::Relaxed)
    }

    /// The configuration.
    pub fn config(&self) -> &StreamConfig {
        &self.inner.cfg
    }

    /// This rank's sample ids for `epoch`, in batch order (`steps * batch_size` of them).
    pub fn epoch_samples(&self, epoch: u64) -> Vec<u64> {
        self.inner.epoch_order(epoch)
    }

    /// The batch at `pos`, computed synchronously.
    pub fn batch_at(&self, pos: Position) -> Result<Batch> {
        let pos = self.inner.normalise(pos);
        let order = self.inner.epoch_order(pos.epoch);
        self.inner.run(|| self.inner.make_batch(pos, &order))
    }

    /// Batches from `start` on, decoded ahead on a background thread; stops before
    /// `end_epoch` when given, else runs forever.
    pub fn iter(&self, start: Position, end_epoch: Option<u64>) -> Batches {
        let inner = Arc::clone(&self.inner);
        let (tx, rx) = sync_channel(inner.cfg.prefetch.max(1));
        let handle = std::thread::Builder::new()
            .name(format!("plsc-data-rank{}", inner.cfg.rank))
            .spawn(move || {
                let mut pos = inner.normalise(start);
                while end_epoch.is_none_or(|e| pos.epoch < e) {
                    let order = inner.epoch_order(pos.epoch);
                    for step in pos.step..inner.steps {
                        let p = Position {
                            epoch: pos.epoch,
                            step,
                        };
                        let batch = inner.run(|| inner.make_batch(p, &order));
                        let failed = batch.is_err();
                        if tx.send(batch).is_err() || failed {
                            return;
                        }
                    }
                    pos = Position {
                        epoch: pos.epoch + 1,
                        step: 0,
                    };
                }
            });
        match handle {
            Ok(h) => Batches {
                rx: Some(rx),
                handle: Some(h),
                spawn_error: None,
            },
            Err(e) => Batches {
                rx: None,
                handle: None,
                spawn_error: Some(DataError::Prefetch {
                    rank: self.inner.cfg.rank,
                    reason: e.to_string(),
                }),
            },
        }
    }
}

fn check_cfg(cfg: &StreamConfig) -> Result<()> {
    if cfg.world == 0 || cfg.rank >= cfg.world {
        return Err(DataError::Config(format!(
            "rank {} is not in a world of {}",
            cfg.rank, cfg.world
        )));
    }
    if cfg.batch_size == 0 {
        return Err(DataError::Config("batch size must be at least 1".into()));
    }
    if !matches!(cfg.spec.channels, 1 | 3) {
        return Err(DataError::Config(format!(
            "channels must be 1 or 3, not {}",
            cfg.spec.channels
        )));
    }
    if cfg.spec.height == 0 || cfg.spec.width == 0 {
        return Err(DataError::Config("image size must be positive".into()));
    }
    Ok(())
}

impl Inner {
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.pool {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    fn normalise(&self, mut pos: Position) -> Position {
        pos.epoch += pos.step / self.steps;
        pos.step %= self.steps;
        pos
    }

    /// Offset added to local indices to form global sample ids.
    fn id_offset(&self) -> u64 {
        match &self.layout {
            Layout::OwnPart { lens } => lens[..self.cfg.rank].iter().sum(),
            Layout::Strided { .. } => 0,
        }
    }

    /// Global sample ids for this rank and epoch, in order.
    fn epoch_order(&self, epoch: u64) -> Vec<u64> {
        let b = self.cfg.batch_size as u64;
        let take = (self.steps * b) as usize;
        match &self.layout {
            Layout::OwnPart { lens } => {
                let n = lens[self.cfg.rank] as u32;
                let mut perm: Vec<u32> = (0..n).collect();
                let mut rng = ChaCha8Rng::seed_from_u64(seed_of(&[
                    self.cfg.seed,
                    epoch,
                    self.cfg.rank as u64,
                ]));
                perm.shuffle(&mut rng);
                let off = self.id_offset();
                perm[..take].iter().map(|&i| i as u64 + off).collect()
            }
            Layout::Strided { n } => {
                let mut perm: Vec<u32> = (0..*n as u32).collect();
                let mut rng = ChaCha8Rng::seed_from_u64(seed_of(&[self.cfg.seed, epoch]));
                perm.shuffle(&mut rng);
                let global = b * self.cfg.world as u64;
                let mut out = Vec::with_capacity(take);
                for k in 0..self.steps {
                    let s = (k * global + self.cfg.rank as u64 * b) as usize;
                    out.extend(perm[s..s + b as usize].iter().map(|&i| i as u64));
                }
                out
            }
        }
    }

    fn make_batch(&self, pos: Position, order: &[u64]) -> Result<Batch> {
        let b = self.cfg.batch_size;
        let spec = &self.cfg.spec;
        let numel = spec.numel();
        let ids = &order[pos.step as usize * b..(pos.step as usize + 1) * b];
        let off = self.id_offset();
        let mut images = vec![0f32; b * numel];
        let results: Vec<Result<i64>> = images
            .par_chunks_mut(numel)
            .zip(ids.par_iter())
            .map(|(out, &id)| {
                let local = (id - off) as usize;
                let flip =
                    self.cfg.flip && seed_of(&[self.cfg.seed ^ 0xf11b, pos.epoch, id]) & 1 == 1;
                self.load(local, flip, out)
            })
            .collect();
        let mut labels = Vec::with_capacity(b);
        let mut failed = Vec::new();
        let mut replaced = Vec::new();
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Ok(l) => labels.push(l),
                Err(e) if self.cfg.skip_bad => {
                    tracing::warn!("rank {}: replacing bad sample: {e}", self.cfg.rank);
                    replaced.push(e.to_string());
                    failed.push(i);
                    labels.push(-1);
                }
                Err(e) => return Err(e),
            }
        }
        let mut samples = ids.to_vec();
        if !failed.is_empty() {
            let good: Vec<usize> = (0..b).filter(|i| !failed.contains(i)).collect();
            if good.is_empty() {
                return Err(DataError::Config(format!(
                    "rank {}: every sample of batch {} of epoch {} is bad: {}",
                    self.cfg.rank,
                    pos.step,
                    pos.epoch,
                    replaced.join("; ")
                )));
            }
            for (j, &i) in failed.iter().enumerate() {
                let src = good[j % good.len()];
                images.copy_within(src * numel..(src + 1) * numel, i * numel);
                labels[i] = labels[src];
                samples[i] = samples[src];
            }
            self.replaced_total
                .fetch_add(failed.len() as u64, Ordering::Relaxed);
        }
        Ok(Batch {
            images,
            labels,
            samples,
            position: pos,
            batch_size: b,
            channels: spec.channels,
            height: spec.height as usize,
            width: spec.width as usize,
            replaced,
        })
    }

    fn load(&self, local: usize, flip: bool, out: &mut [f32]) -> Result<i64> {
        let (bytes, label) = self.source.get(local)?;
        let loc = || self.source.location(local);
        if let Some(c) = self.cfg.classes
            && label as u64 >= c
        {
            return Err(label_error(
                loc(),
                LineError::LabelOutOfRange { label, classes: c },
            ));
        }
        decode_into(&bytes, &self.cfg.spec, flip, out).map_err(|reason| DataError::Decode {
            location: loc(),
            reason,
        })?;
        Ok(label)
    }
}

fn label_error(location: Location, error: LineError) -> DataError {
    match location {
        Location::Line { .. } => DataError::Line { location, error },
        Location::Record { .. } => DataError::Decode {
            location,
            reason: error.to_string(),
        },
    }
}

/// Iterator over prefetched batches (see [`BatchStream::iter`]).
pub struct Batches {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    spawn_error: Option<DataError>,
}

impl Iterator for Batches {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.spawn_error.take() {
            return Some(Err(e));
        }
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        // Closing the channel stops the producer at its next send.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
