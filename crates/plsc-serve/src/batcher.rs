//! Dynamic batching: requests queue their preprocessed images; inference threads take the
//! queued jobs of concurrent requests together (up to `max_batch` images, waiting at most
//! `max_wait` for more after the first), run the backbone once, and send every request its own
//! rows back, in order.
//!
//! One worker gathers at a time (it holds the intake lock while it waits), the others run
//! their batches meanwhile. Jobs are never split across batches, except a single job larger
//! than `max_batch`, which runs alone in chunks. A job whose requester has gone (timed out)
//! is dropped unrun. A job counts against the queue limit until its batch starts to run.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use plsc_data::decode::ImageSpec;
use tokio::sync::oneshot;

use crate::error::{Result, ServeError};
use crate::metrics::Metrics;
use crate::model::{ServeModel, ServeNet};

/// One request's images, preprocessed.
pub(crate) struct Job {
    /// `rows` CHW images in a row.
    pub images: Vec<f32>,
    /// Backbone inputs (a flipped image is two).
    pub rows: usize,
    /// What the job counts against the queue limit (the request's image count).
    pub queued: usize,
    /// Where the `rows * D` embeddings go.
    pub reply: oneshot::Sender<Result<Vec<f32>>>,
}

/// Why a job was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds too many images; try again later.
    QueueFull,
    /// The workers are stopping.
    Stopped,
}

/// Jobs not yet in a batch: the channel, and the job that did not fit the last batch.
struct Intake {
    rx: mpsc::Receiver<Job>,
    held: Option<Job>,
}

/// The queue and the inference threads.
pub(crate) struct Batcher {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    max_queue: usize,
}

/// What every worker needs besides its model.
#[derive(Clone)]
struct WorkerSettings {
    max_batch: usize,
    max_wait: Duration,
    spec: ImageSpec,
}

impl Batcher {
    /// Starts `workers` inference threads, each with its own copy of `model`.
    pub fn start(
        model: &ServeModel,
        workers: usize,
        max_batch: usize,
        max_wait: Duration,
        max_queue: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Self> {
        let (tx, rx) = mpsc::channel();
        let intake = Arc::new(Mutex::new(Intake { rx, held: None }));
        let settings = WorkerSettings {
            max_batch,
            max_wait,
            spec: model.image_spec().clone(),
        };
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let backbone = model.replica();
            let intake = Arc::clone(&intake);
            let metrics = Arc::clone(&metrics);
            let settings = settings.clone();
            let name = format!("plsc-serve-infer-{i}");
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker_loop(&backbone, &intake, &metrics, &settings))
                .map_err(|source| ServeError::Io {
                    context: "starting inference thread",
                    addr: name,
                    source,
                })?;
            handles.push(handle);
        }
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            workers: Mutex::new(handles),
            metrics,
            max_queue,
        })
    }

    /// Queues `job` unless the queue would then hold more than its limit of images.
    pub fn submit(&self, job: Job) -> std::result::Result<(), Refused> {
        let queued = &self.metrics.queued_images;
        let (n, limit) = (job.queued, self.max_queue);
        if queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= limit).then_some(q + n)
            })
            .is_err()
        {
            return Err(Refused::QueueFull);
        }
        let sent = match self.tx.lock() {
            Ok(guard) => guard.as_ref().is_some_and(|tx| tx.send(job).is_ok()),
            Err(_) => false,
        };
        if !sent {
            queued.fetch_sub(n, Ordering::AcqRel);
            return Err(Refused::Stopped);
        }
        Ok(())
    }

    /// Stops taking jobs, lets the workers finish the queued ones, and waits for them.
    pub fn stop(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handles = self
            .workers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        for h in handles {
            let _ = h.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Intake {
    /// The next job: the held one, else the next from the channel, waiting until `deadline`
    /// (`None`: as long as it takes). `None` when there is none by then, or the channel is
    /// closed and empty.
    fn next(&mut self, deadline: Option<Instant>) -> Option<Job> {
        if let Some(job) = self.held.take() {
            return Some(job);
        }
        match deadline {
            None => self.rx.recv().ok(),
            Some(deadline) => match self.rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return None;
                    }
                    // Timed out or closed: no more jobs for this batch.
                    self.rx.recv_timeout(left).ok()
                }
            },
        }
    }

    /// Gathers the next batch: jobs in arrival order, at most `max_batch` rows unless the
    /// first job alone has more; waits up to `max_wait` after the first job for more.
    /// Jobs whose requester has gone are dropped. `None` once the channel is closed and empty.
    fn gather(&mut self, settings: &WorkerSettings, metrics: &Metrics) -> Option<Vec<Job>> {
        let mut jobs: Vec<Job> = Vec::new();
        let mut rows = 0;
        let mut deadline = None;
        loop {
            if deadline.is_some() && rows >= settings.max_batch {
                break;
            }
            let Some(job) = self.next(deadline) else {
                break;
            };
            if job.reply.is_closed() {
                metrics
                    .queued_images
                    .fetch_sub(job.queued, Ordering::AcqRel);
                continue;
            }
            if !jobs.is_empty() && rows + job.rows > settings.max_batch {
                self.held = Some(job);
                break;
            }
            rows += job.rows;
            jobs.push(job);
            deadline.get_or_insert_with(|| Instant::now() + settings.max_wait);
        }
        (!jobs.is_empty()).then_some(jobs)
    }
}

/// Gathers and runs batches until the channel is closed and drained.
fn worker_loop(
    backbone: &ServeNet,
    intake: &Mutex<Intake>,
    metrics: &Metrics,
    settings: &WorkerSettings,
) {
    loop {
        let batch = match intake.lock() {
            Ok(mut intake) => intake.gather(settings, metrics),
            // Another worker panicked while gathering (it cannot: gathering has no user
            // input); stop this one too.
            Err(_) => None,
        };
        let Some(jobs) = batch else {
            return;
        };
        let queued: usize = jobs.iter().map(|j| j.queued).sum();
        metrics.queued_images.fetch_sub(queued, Ordering::AcqRel);
        // Requesters that gave up while the batch gathered get nothing run for them.
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if !jobs.is_empty() {
            run_batch(backbone, jobs, metrics, settings);
        }
    }
}

/// Runs one batch and answers each of its jobs.
fn run_batch(backbone: &ServeNet, jobs: Vec<Job>, metrics: &Metrics, settings: &WorkerSettings) {
    let rows: usize = jobs.iter().map(|j| j.rows).sum();
    let requests = jobs.len();
    let mut replies = Vec::with_capacity(requests);
    let mut images = Vec::with_capacity(rows * settings.spec.numel());
    for job in jobs {
        images.extend_from_slice(&job.images);
        replies.push((job.rows, job.reply));
    }
    let numel = settings.spec.numel();
    let mut out = Vec::new();
    let mut failure = None;
    // A job larger than `max_batch` runs alone, in chunks of `max_batch` rows.
    let chunks: Vec<Vec<f32>> = if rows <= settings.max_batch {
        vec![images]
    } else {
        images
            .chunks(settings.max_batch * numel)
            .map(<[f32]>::to_vec)
            .collect()
    };
    for chunk in chunks {
        let n = chunk.len() / numel;
        let started = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| {
            backbone.forward(&settings.spec, chunk, n)
        }));
        metrics.record_batch(requests, n, started.elapsed());
        match result {
            Ok(Ok(y)) => out.extend_from_slice(&y),
            Ok(Err(e)) => {
                failure = Some(e.to_string());
                break;
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("a panic");
                failure = Some(format!("the backbone panicked: {what}"));
                break;
            }
        }
    }
    if failure.is_none() && (rows == 0 || out.len() % rows != 0) {
        failure = Some(format!(
            "the backbone returned {} values for {rows} images",
            out.len()
        ));
    }
    if let Some(message) = failure {
        tracing::error!(%message, requests, rows, "inference failed");
        for (_, reply) in replies {
            let _ = reply.send(Err(ServeError::Inference(message.clone())));
        }
        return;
    }
    let dim = out.len() / rows;
    let mut start = 0;
    for (n, reply) in replies {
        let end = start + n * dim;
        let _ = reply.send(Ok(out[start..end].to_vec()));
        start = end;
    }
}
