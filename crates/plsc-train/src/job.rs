//! A complete run from an [`Entry`], on the CPU (rank threads or processes) or on GPUs (one
//! process per GPU), through one per-rank [`job`]: data streams over `dataset_dir`, the
//! registered backbone, verification sets, and a run directory with `config.toml`,
//! `metrics.jsonl`, `backbone.safetensors` and `summary.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommExt, Communicator, run_ranks};
use plsc_data::stream::{BatchStream, Position, StreamConfig};
use plsc_models::{Backbone, BackboneConfig};
use serde::Serialize;

use crate::device::Device;
use crate::entry::Entry;
use crate::error::{Result, TrainError};
use crate::memory::{RssAnonSampler, gib};
use crate::model::TrainModel;
use crate::records::EvalRecord;
use crate::resume::{Beginning, find_beginning};
use crate::run_dir::{JsonLines, create_run_dir, write_atomically};
use crate::trainer::{BatchIter, LocalBatch, Outputs, RunPlan, Start, Timings, train_rank};
use crate::val_sets::load_val_sets;

/// The training backend on CPU.
pub type CpuBackend = Autodiff<Flex>;

/// Where a run put its files and what it reached.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The settings as used.
    pub config: PathBuf,
    /// Training and verification records.
    pub metrics: PathBuf,
    /// The final backbone (arcface_torch names, safetensors).
    pub backbone: PathBuf,
    /// Root of the checkpoints (the final one is `step-<steps>/`).
    pub checkpoints: PathBuf,
    /// The exported model (`model.json` + weights, what `xtask export` writes and `xtask eval
    /// --model` and the server load): the final backbone, the same as an export of the final
    /// checkpoint.
    pub model: PathBuf,
    /// Steps run.
    pub steps: u64,
    /// Steps per epoch.
    pub steps_per_epoch: u64,
    /// Global batch.
    pub global_batch: usize,
    /// The learning rate after the batch scaling rule.
    pub scaled_lr: f64,
    /// Loss of the first and the last step.
    pub first_loss: f64,
    /// Loss of the last step.
    pub last_loss: f64,
    /// Steps skipped for non-finite gradients.
    pub skipped_steps: u64,
    /// The last verification of each set.
    pub final_eval: Vec<EvalRecord>,
    /// Rank 0's time split.
    pub timings: Timings,
    /// Mean global images per second over the run (verification excluded).
    pub images_per_sec: f64,
    /// The largest `RssAnon` (anonymous resident memory) of rank 0's process over the whole
    /// run, checkpoints and export included, sampled every 50 ms ([`crate::memory`]); absent
    /// where it cannot be read (not Linux).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_anon_bytes: Option<u64>,
    /// The median `RssAnon` of rank 0's process while it trained (the training loop: head
    /// and backbone built, steps, periodic checkpoints); absent where it cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steady_rss_anon_bytes: Option<u64>,
}

/// Decoder threads of a rank's stream: `data_threads`, and on a GPU at least this process's
/// share of the host's cores (a GPU step takes a few milliseconds; one decoder thread would
/// keep it waiting). The decoded batches are the same for any thread count.
fn decode_threads(data_threads: usize, gpu: bool) -> usize {
    if !gpu {
        return data_threads.max(1);
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let processes = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    data_threads.max(cores / processes).max(1)
}

fn stream_config(entry: &Entry, rank: usize) -> StreamConfig {
    let gpu = matches!(entry.device(), Ok(Device::Cuda(_)));
    StreamConfig {
        rank,
        world: entry.ranks,
        batch_size: entry.train_batch_size,
        seed: entry.seed,
        spec: entry.image_spec(),
        flip: entry.flip,
        prefetch: if gpu { 4 } else { 2 },
        classes: Some(entry.num_classes as u64),
        skip_bad: false,
        threads: Some(decode_threads(entry.data_threads, gpu)),
    }
}

/// Opens rank `rank`'s stream over `dataset_dir/file_list.txt`.
pub fn open_stream(entry: &Entry, rank: usize) -> Result<BatchStream> {
    let list = entry.dataset_dir.join("file_list.txt");
    BatchStream::from_file_list(&list, stream_config(entry, rank))
        .map_err(|source| TrainError::data(rank, source))
}

/// Rank `rank`'s batches from its stream, endless (epochs follow each other), from the start
/// of the data.
pub fn stream_batches(stream: &BatchStream, rank: usize) -> BatchIter {
    stream_batches_from(stream, rank, Position::default())
}

/// Rank `rank`'s batches from `position` on (where a resumed run's data stood).
pub fn stream_batches_from(stream: &BatchStream, rank: usize, position: Position) -> BatchIter {
    Box::new(stream.iter(position, None).map(move |b| {
        b.map(|b| LocalBatch {
            images: b.images,
            labels: b.labels,
        })
        .map_err(|source| TrainError::data(rank, source))
    }))
}

/// Steps per epoch: `train_image_num / global_batch` when set (PLSC), else the stream's count.
pub fn steps_per_epoch(entry: &Entry, stream: &BatchStream) -> u64 {
    match entry.train_image_num {
        Some(n) => n / entry.global_batch() as u64,
        None => stream.steps_per_epoch(),
    }
}

/// The backbone `entry` names, seeded, on `device` of backend `B`: the same values on every
/// rank, threads included (the backend's generator is process-wide, so the seeding and the
/// draws of one build run under a process-wide lock: rank threads build in turn).
pub fn build_backbone<B: burn::tensor::backend::Backend>(
    entry: &Entry,
    device: &B::Device,
) -> Result<Backbone<B>> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    BackboneConfig::new(entry.model.clone())
        .with_embedding_size(entry.embedding_size)
        .with_in_channels(entry.in_channels)
        .with_input_size(entry.input_size)
        .init_seeded(entry.seed, device)
        .map_err(|source| TrainError::model(0, source))
}

/// Trains `entry` in this process and writes a new run directory under
/// `entry.model_save_dir` (or, resuming, continues the run directory of the checkpoint).
///
/// On the CPU the ranks are `entry.ranks` threads, each running [`job`] over the thread group;
/// on a GPU (`device = "cuda"`) this process is one rank on one GPU (`entry.ranks` must be 1:
/// more GPUs are more processes, `cargo xtask launch --nproc-per-node G -- train --device cuda
/// --ranks G`).
pub fn run(entry: &Entry, progress: bool) -> Result<RunSummary> {
    entry.validate()?;
    match entry.device()? {
        Device::Cpu => {
            let device = burn_flex::FlexDevice;
            entry.check_head_capacity(&(0..entry.ranks).collect::<Vec<_>>())?;
            let results = run_ranks(entry.ranks, |comm| {
                job::<CpuBackend, _>(entry, &comm, &device, progress)
            });
            first_rank_summary(results)
        }
        Device::Cuda(index) => {
            if entry.ranks != 1 {
                return Err(TrainError::Config {
                    name: "ranks",
                    detail: format!(
                        "the settings say {} ranks, but on GPUs each rank is a process with its \
                         own GPU: train on one GPU with --ranks 1, or on G GPUs with \
                         `cargo xtask launch --nproc-per-node G -- train --device cuda --ranks G`",
                        entry.ranks
                    ),
                });
            }
            cuda::run_single(entry, index.unwrap_or(0), progress)
        }
    }
}

/// Rank 0's summary from the ranks' results (the first error, in rank order, otherwise).
fn first_rank_summary(results: Vec<Result<Option<RunSummary>>>) -> Result<RunSummary> {
    let mut summary = None;
    for r in results {
        if let Some(s) = r? {
            summary.get_or_insert(s);
        }
    }
    summary.ok_or_else(|| TrainError::Config {
        name: "ranks",
        detail: "rank 0 returned no summary".into(),
    })
}

/// One process of a multi-process CPU run (launched by `xtask launch` or `mpirun`, TCP or MPI
/// collectives): [`job`] on the CPU. `comm.world_size()` must equal `entry.ranks`.
pub fn run_process(
    entry: &Entry,
    comm: &dyn Communicator,
    progress: bool,
) -> Result<Option<RunSummary>> {
    entry.validate()?;
    if let Device::Cuda(_) = entry.device()? {
        return Err(TrainError::Config {
            name: "device",
            detail: "a GPU process takes its NCCL communicator from the launcher's environment: \
                     call plsc_train::job::run_launched"
                .into(),
        });
    }
    entry.check_head_capacity(&[comm.rank()])?;
    job::<CpuBackend, dyn Communicator>(entry, comm, &Default::default(), progress)
}

/// One rank of a run on backend `B` over `comm` (a rank thread of [`run`], or a process):
/// rank 0 decides where the run goes and what it starts from (resume, pretrained) and tells the
/// others; every rank reads its own part of the data and writes its head shard into the
/// shared checkpoint directory; rank 0 writes the run directory and returns its summary. The
/// same code for threads, processes and devices.
pub fn job<B, C>(
    entry: &Entry,
    comm: &C,
    device: &B::Device,
    progress: bool,
) -> Result<Option<RunSummary>>
where
    B: AutodiffBackend,
    C: TensorComm<B::InnerBackend> + ?Sized,
{
    entry.validate()?;
    let hcomm = comm.communicator();
    let rank = hcomm.rank();
    // Rank 0 samples its process's anonymous memory over the whole run (summary.json).
    let memory = (rank == 0)
        .then(|| RssAnonSampler::start(crate::memory::DEFAULT_PERIOD))
        .flatten()
        .map(std::sync::Arc::new);
    if hcomm.world_size() != entry.ranks {
        return Err(TrainError::Config {
            name: "ranks",
            detail: format!(
                "the settings say {} ranks, the communicator (launcher) holds {}: set ranks \
                 (--ranks) to the number of processes",
                entry.ranks,
                hcomm.world_size()
            ),
        });
    }
    let stream = open_stream(entry, rank)?;
    let spe = checked_steps_per_epoch(entry, &stream)?;

    // Rank 0 decides; a failure there is told to the others instead of leaving them waiting,
    // and rank 0 returns its own error (with its type: e.g. damaged checkpoints).
    let mut files = None;
    let mut failure = None;
    let decided: std::result::Result<SharedStart, String> = if rank == 0 {
        match find_beginning(entry).and_then(|b| {
            let f = open_run_files(entry, &b, b.steps_done)?;
            Ok((b, f))
        }) {
            Ok((b, f)) => {
                let shared = SharedStart::of(entry, &b, &f.run_dir);
                files = Some(f);
                Ok(shared)
            }
            Err(e) => {
                let msg = e.to_string();
                failure = Some(e);
                Err(msg)
            }
        }
    } else {
        Err(String::new())
    };
    let shared = broadcast_json(hcomm, rank, &decided)?;
    let shared: SharedStart = match shared {
        Ok(s) => s,
        Err(msg) if rank == 0 => {
            return Err(failure.unwrap_or(TrainError::Config {
                name: "run",
                detail: msg,
            }));
        }
        Err(msg) => {
            return Err(TrainError::Config {
                name: "run",
                detail: format!("rank 0 could not prepare the run: {msg}"),
            });
        }
    };
    let start = shared.start(rank)?;
    let plan = plan_for(entry, spe, &stream, shared.steps_done);
    let (run_dir, checkpoints) = (shared.run_dir, shared.checkpoints);
    let mut outputs = Outputs {
        checkpoint: Some((checkpoints.clone(), model_spec(entry))),
        start,
        ..Outputs::default()
    };
    if let Some(f) = files {
        let how = match entry.device()? {
            Device::Cpu if hcomm.world_size() > 1 => "CPU ranks (threads or processes)",
            Device::Cpu => "CPU rank",
            Device::Cuda(_) if hcomm.world_size() > 1 => "GPUs (one process each)",
            Device::Cuda(_) => "GPU",
        };
        log_start(entry, &plan, &run_dir, how);
        outputs.metrics = Some(f.metrics);
        outputs.progress = progress;
        outputs.val_sets = load_val_sets(entry)?;
    }
    let backbone = build_backbone::<B>(entry, device)?;
    outputs.memory = memory.clone();
    let outcome = train_rank::<B, _, C>(
        entry,
        comm,
        backbone,
        device,
        plan,
        stream_batches_from(&stream, rank, data_position(&plan)),
        outputs,
    )?;
    if rank != 0 {
        return Ok(None);
    }
    finish_run(
        entry,
        &plan,
        &run_dir,
        &checkpoints,
        &outcome,
        memory.as_deref(),
    )
    .map(Some)
}

/// One process of a multi-process GPU run (`cargo xtask launch ... -- train --device cuda`):
/// the launcher's environment gives the rank, the world and the GPU (`LOCAL_RANK`); NCCL
/// connects the processes (a world of one runs without NCCL).
pub fn run_launched(
    entry: &Entry,
    env: &plsc_comm::env::RankEnv,
    progress: bool,
) -> Result<Option<RunSummary>> {
    entry.validate()?;
    match entry.device()? {
        Device::Cpu => Err(TrainError::Config {
            name: "device",
            detail: "run_launched is the GPU path; CPU processes use run_process".into(),
        }),
        Device::Cuda(index) => cuda::run_launched(entry, env, index, progress),
    }
}

/// The GPU runs (feature `cuda`; NCCL between processes with feature `nccl`).
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;

    /// The training backend on NVIDIA GPUs.
    pub type CudaBackend = Autodiff<burn::backend::Cuda>;

    fn device(index: usize) -> burn::backend::cuda::CudaDevice {
        burn::backend::cuda::CudaDevice::new(index)
    }

    fn one_rank() -> Result<plsc_comm::ThreadComm> {
        plsc_comm::ThreadGroup::new(1)
            .pop()
            .ok_or_else(|| TrainError::Config {
                name: "ranks",
                detail: "a thread group of one rank was empty".into(),
            })
    }

    /// Starts CUDA on GPU `index` (a named error, not a panic, without a driver or GPU).
    fn check(index: usize) -> Result<()> {
        plsc_models::device::check_cuda(index).map_err(|e| match e {
            plsc_models::ModelError::Device { device, detail } => {
                TrainError::DeviceUnavailable { device, detail }
            }
            other => TrainError::model(0, other),
        })
    }

    pub fn run_single(entry: &Entry, index: usize, progress: bool) -> Result<RunSummary> {
        check(index)?;
        let comm = one_rank()?;
        job::<CudaBackend, _>(entry, &comm, &device(index), progress)?.ok_or_else(|| {
            TrainError::Config {
                name: "ranks",
                detail: "rank 0 returned no summary".into(),
            }
        })
    }

    pub fn run_launched(
        entry: &Entry,
        env: &plsc_comm::env::RankEnv,
        index: Option<usize>,
        progress: bool,
    ) -> Result<Option<RunSummary>> {
        if let Some(i) = index.filter(|i| *i != env.local_rank) {
            return Err(TrainError::Config {
                name: "device",
                detail: format!(
                    "under a launcher each process takes GPU LOCAL_RANK ({}), but the settings \
                     name cuda:{i}: use --device cuda",
                    env.local_rank
                ),
            });
        }
        check(env.local_rank)?;
        let dev = device(env.local_rank);
        if env.world_size == 1 {
            let comm = one_rank()?;
            return job::<CudaBackend, _>(entry, &comm, &dev, progress);
        }
        nccl(entry, env, &dev, progress)
    }

    #[cfg(feature = "nccl")]
    fn nccl(
        entry: &Entry,
        env: &plsc_comm::env::RankEnv,
        dev: &burn::backend::cuda::CudaDevice,
        progress: bool,
    ) -> Result<Option<RunSummary>> {
        let comm =
            plsc_comm::nccl::NcclComm::from_env(env, plsc_comm::nccl::NcclOptions::default())?;
        job::<CudaBackend, _>(entry, &comm, dev, progress)
    }

    #[cfg(not(feature = "nccl"))]
    fn nccl(
        _entry: &Entry,
        env: &plsc_comm::env::RankEnv,
        _dev: &burn::backend::cuda::CudaDevice,
        _progress: bool,
    ) -> Result<Option<RunSummary>> {
        Err(TrainError::DeviceUnavailable {
            device: "cuda".into(),
            detail: format!(
                "{} GPU processes need NCCL, and this build has none: build with the `nccl` \
                 feature (`cargo run -p xtask --features cuda,nccl -- launch ...`)",
                env.world_size
            ),
        })
    }
}

/// Without the `cuda` feature a CUDA device never parses ([`Device`]'s error says how to build
/// with it); these are never reached.
#[cfg(not(feature = "cuda"))]
mod cuda {
    use super::*;

    fn unavailable() -> TrainError {
        TrainError::DeviceUnavailable {
            device: "cuda".into(),
            detail: "this build has no CUDA backend: `cargo run -p xtask --features cuda,nccl -- train --device cuda`".into(),
        }
    }

    pub fn run_single(_entry: &Entry, _index: usize, _progress: bool) -> Result<RunSummary> {
        Err(unavailable())
    }

    pub fn run_launched(
        _entry: &Entry,
        _env: &plsc_comm::env::RankEnv,
        _index: Option<usize>,
        _progress: bool,
    ) -> Result<Option<RunSummary>> {
        Err(unavailable())
    }
}

/// What rank 0 tells the other processes about the run it prepared.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SharedStart {
    run_dir: PathBuf,
    checkpoints: PathBuf,
    steps_done: u64,
    from: SharedFrom,
}

/// [`Start`] with its checkpoint as a directory, for sending.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum SharedFrom {
    Fresh,
    Resume { dir: PathBuf },
    Pretrained { dir: PathBuf, with_head: bool },
}

impl SharedStart {
    fn of(entry: &Entry, b: &Beginning, run_dir: &Path) -> Self {
        let from = match &b.start {
            Start::Fresh => SharedFrom::Fresh,
            Start::Resume(c) => SharedFrom::Resume {
                dir: c.dir().to_path_buf(),
            },
            Start::Pretrained {
                checkpoint,
                with_head,
            } => SharedFrom::Pretrained {
                dir: checkpoint.dir().to_path_buf(),
                with_head: *with_head,
            },
        };
        Self {
            run_dir: run_dir.to_path_buf(),
            checkpoints: checkpoint_root(entry, b, run_dir),
            steps_done: b.steps_done,
            from,
        }
    }

    /// Opens the checkpoint rank 0 chose (each rank checks the files it reads).
    fn start(&self, rank: usize) -> Result<Start> {
        let open = |dir: &Path| {
            plsc_ckpt::Checkpoint::open(dir)
                .map(Arc::new)
                .map_err(|source| TrainError::Checkpoint {
                    rank,
                    source: Box::new(source),
                })
        };
        Ok(match &self.from {
            SharedFrom::Fresh => Start::Fresh,
            SharedFrom::Resume { dir } => Start::Resume(open(dir)?),
            SharedFrom::Pretrained { dir, with_head } => Start::Pretrained {
                checkpoint: open(dir)?,
                with_head: *with_head,
            },
        })
    }
}

/// Rank 0's `value` on every rank, as JSON bytes (length first, then the bytes).
fn broadcast_json<T: serde::Serialize + serde::de::DeserializeOwned>(
    comm: &dyn Communicator,
    rank: usize,
    value: &T,
) -> Result<T> {
    let mut bytes = if rank == 0 {
        serde_json::to_vec(value).unwrap_or_default()
    } else {
        Vec::new()
    };
    let mut len = [bytes.len() as i64];
    comm.broadcast(&mut len, 0)?;
    bytes.resize(len[0].max(0) as usize, 0);
    comm.broadcast(&mut bytes, 0)?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Config {
        name: "run",
        detail: format!("rank {rank}: the run description from rank 0 does not parse: {e}"),
    })
}

/// Steps per epoch, or an error when the data holds less than one global batch.
fn checked_steps_per_epoch(entry: &Entry, stream: &BatchStream) -> Result<u64> {
    let spe = steps_per_epoch(entry, stream);
    if spe == 0 {
        return Err(TrainError::Config {
            name: "train_batch_size",
            detail: format!(
                "the data in {} holds less than one global batch of {}",
                entry.dataset_dir.display(),
                entry.global_batch()
            ),
        });
    }
    Ok(spe)
}

/// The run's plan after `steps_done` steps, with the data stream's own epoch length (every
/// rank's stream has the same).
fn plan_for(entry: &Entry, steps_per_epoch: u64, stream: &BatchStream, steps_done: u64) -> RunPlan {
    RunPlan {
        data_steps_per_epoch: stream.steps_per_epoch().max(1),
        ..RunPlan::new(entry, steps_per_epoch).starting_at(steps_done)
    }
}

/// Where every rank's stream starts.
fn data_position(plan: &RunPlan) -> Position {
    let p = plan.data_position(plan.start_step);
    Position {
        epoch: p.epoch,
        step: p.step,
    }
}

/// Rank 0's run directory (new, or the continued one) with its settings and metrics file.
struct RunFiles {
    run_dir: PathBuf,
    metrics: JsonLines,
}

fn open_run_files(entry: &Entry, beginning: &Beginning, start_step: u64) -> Result<RunFiles> {
    let (run_dir, metrics) = match &beginning.run_dir {
        Some(dir) => {
            let m = JsonLines::continue_after(&dir.join("metrics.jsonl"), start_step)?;
            (dir.clone(), m)
        }
        None => {
            let dir = create_run_dir(&entry.model_save_dir)?;
            let m = JsonLines::create(&dir.join("metrics.jsonl"))?;
            (dir, m)
        }
    };
    entry.save(&run_dir.join("config.toml"))?;
    Ok(RunFiles { run_dir, metrics })
}

fn checkpoint_root(entry: &Entry, beginning: &Beginning, run_dir: &Path) -> PathBuf {
    beginning
        .checkpoint_root
        .clone()
        .or_else(|| entry.checkpoint_dir.clone())
        .unwrap_or_else(|| run_dir.join("checkpoints"))
}

/// The backbone as the checkpoints and the exported model describe it.
fn model_spec(entry: &Entry) -> plsc_ckpt::ModelSpec {
    let spec = stream_config(entry, 0).spec;
    plsc_ckpt::ModelSpec {
        architecture: entry.model.clone(),
        embedding_size: entry.embedding_size,
        input_size: entry.input_size,
        in_channels: entry.in_channels,
        mean: spec.mean[..entry.in_channels.min(3)].to_vec(),
        std: spec.std[..entry.in_channels.min(3)].to_vec(),
        resize: spec.resize,
    }
}

fn log_start(entry: &Entry, plan: &RunPlan, run_dir: &Path, how: &str) {
    tracing::info!(
        run_dir = %run_dir.display(),
        steps = plan.total_steps,
        from_step = plan.start_step,
        steps_per_epoch = plan.steps_per_epoch,
        global_batch = entry.global_batch(),
        lr = entry.scaled_lr(),
        "training {} with {} on {} {how}",
        entry.model,
        entry.loss,
        entry.ranks
    );
}

/// Rank 0 after training: the backbone file, the exported model (the in-memory backbone, as
/// the last checkpoint holds it) and `summary.json`.
fn finish_run<B: AutodiffBackend>(
    entry: &Entry,
    plan: &RunPlan,
    run_dir: &Path,
    checkpoints: &Path,
    outcome: &crate::trainer::TrainOutcome<plsc_models::Backbone<B>>,
    memory: Option<&RssAnonSampler>,
) -> Result<RunSummary> {
    let backbone_path = run_dir.join("backbone.safetensors");
    outcome.ranks[0]
        .model
        .save(&backbone_path)
        .map_err(|source| TrainError::model(0, source))?;
    let model_dir = run_dir.join("model");
    let as_train_error = |source: plsc_ckpt::CkptError| TrainError::Checkpoint {
        rank: 0,
        source: Box::new(source),
    };
    // The export is the in-memory backbone: the same tensors the last checkpoint saved (the
    // trainer saves it at the last step, after every rank took rank 0's running statistics),
    // without re-reading and verifying that checkpoint's head shards.
    plsc_ckpt::export_tensors(
        model_spec(entry),
        &TrainModel::state_tensors(&outcome.ranks[0].model),
        plan.total_steps,
        &model_dir,
    )
    .map_err(as_train_error)?;
    let mut final_eval: Vec<EvalRecord> = Vec::new();
    for e in outcome.evals.iter().rev() {
        if !final_eval.iter().any(|f| f.target == e.target) {
            final_eval.insert(0, e.clone());
        }
    }
    let t = outcome.timings;
    let train_s = (t.total_s - t.eval_s).max(1e-9);
    let steps_run = plan.total_steps.saturating_sub(plan.start_step);
    let summary = RunSummary {
        run_dir: run_dir.to_path_buf(),
        config: run_dir.join("config.toml"),
        metrics: run_dir.join("metrics.jsonl"),
        backbone: backbone_path,
        checkpoints: checkpoints.to_path_buf(),
        model: model_dir,
        steps: plan.total_steps,
        steps_per_epoch: plan.steps_per_epoch,
        global_batch: entry.global_batch(),
        scaled_lr: entry.scaled_lr(),
        first_loss: outcome.losses.first().copied().unwrap_or(f64::NAN),
        last_loss: outcome.losses.last().copied().unwrap_or(f64::NAN),
        skipped_steps: outcome.skipped_steps,
        final_eval,
        timings: t,
        images_per_sec: (steps_run as usize * entry.global_batch()) as f64 / train_s,
        peak_rss_anon_bytes: None,
        steady_rss_anon_bytes: None,
    };
    // Measured last, after the export: the peak covers the whole run.
    let summary = with_memory(summary, memory);
    let json = serde_json::to_string_pretty(&summary).unwrap_or_default();
    write_atomically(&run_dir.join("summary.json"), json.as_bytes())?;
    Ok(summary)
}

/// `summary` with the peak and steady `RssAnon` of `memory`, also logged (the run's last log
/// line).
fn with_memory(mut summary: RunSummary, memory: Option<&RssAnonSampler>) -> RunSummary {
    if let Some(m) = memory {
        let r = m.report();
        summary.peak_rss_anon_bytes = Some(r.peak_bytes);
        summary.steady_rss_anon_bytes = r.steady_bytes;
        tracing::info!(
            peak_rss_anon_bytes = r.peak_bytes,
            steady_rss_anon_bytes = r.steady_bytes,
            "run finished: peak RssAnon {:.2} GiB, steady (training median) {:.2} GiB",
            gib(r.peak_bytes),
            r.steady_bytes.map_or(f64::NAN, gib)
        );
    }
    summary
}

/// `path` relative to the current directory when it lies below it (for printing).
pub fn display_path(path: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| path.to_path_buf())
        .display()
        .to_string()
}
