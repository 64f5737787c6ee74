//! The HTTP server: routes, limits, JSON errors, graceful shutdown.
//!
//! Each request's body is read with a size limit, its JSON checked, its images decoded and
//! preprocessed on tokio's blocking pool, and the result queued for the batching workers
//! (plain threads, off the async runtime). The whole request runs under the request timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use plsc_data::decode::ImageSpec;
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::api::{
    EncodeResponse, ErrorResponse, Limits, ModelResponse, PlscInstance, PlscResponse,
};
use crate::batcher::{Batcher, Job, Refused};
use crate::config::ServeConfig;
use crate::error::{Result, ServeError};
use crate::metrics::{BatchStats, Metrics};
use crate::model::{ModelInfo, ServeModel};
use crate::preprocess::{decode_base64, push_image};

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECONDS: u64 = 1;

/// What every handler shares.
struct AppState {
    info: ModelInfo,
    spec: ImageSpec,
    config: ServeConfig,
    limits: Limits,
    batcher: Batcher,
    metrics: Arc<Metrics>,
}

/// A 4xx or 5xx answer: status, JSON body, and for 503 a `Retry-After` header.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    index: Option<usize>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            index: None,
        }
    }

    fn at(mut self, index: usize) -> Self {
        self.index = Some(index);
        self
    }

    fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_json", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorResponse {
            error: self.message,
            code: self.code.to_string(),
            index: self.index,
        };
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// Shuts a server down and reads its figures; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shutdown: Arc<watch::Sender<bool>>,
    metrics: Arc<Metrics>,
    addr: SocketAddr,
}

impl ServerHandle {
    /// Starts the graceful shutdown: no new connections; requests in flight are answered,
    /// then the server's `run` returns.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Whether [`Self::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Batch figures so far (how many backbone runs held more than one request, ...).
    pub fn batch_stats(&self) -> BatchStats {
        self.metrics.batch_stats()
    }

    /// All metrics (what `GET /metrics` writes).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// A bound server, ready to run.
pub struct Server {
    listener: TcpListener,
    state: Arc<AppState>,
    handle: ServerHandle,
}

impl Server {
    /// Checks `config`, starts the inference workers and binds `addr` (port 0 picks a free
    /// port; see [`Self::local_addr`]). Must be called inside a tokio runtime.
    pub async fn bind(model: ServeModel, config: ServeConfig, addr: SocketAddr) -> Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Io {
                context: "binding",
                addr: addr.to_string(),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| ServeError::Io {
            context: "reading the address of",
            addr: addr.to_string(),
            source,
        })?;
        let metrics = Arc::new(Metrics::new(config.max_batch));
        let batcher = Batcher::start(
            &model,
            config.workers,
            config.max_batch,
            config.max_wait,
            config.max_queue_images,
            Arc::clone(&metrics),
        )?;
        let limits = Limits {
            max_batch: config.max_batch,
            max_wait_ms: config.max_wait.as_secs_f64() * 1e3,
            workers: config.workers,
            max_body_bytes: config.max_body_bytes,
            max_images_per_request: config.max_images_per_request,
            max_image_pixels: config.max_image_pixels,
            request_timeout_ms: config.request_timeout.as_secs_f64() * 1e3,
            max_queue_images: config.max_queue_images,
        };
        let state = Arc::new(AppState {
            info: model.info().clone(),
            spec: model.image_spec().clone(),
            config,
            limits,
            batcher,
            metrics: Arc::clone(&metrics),
        });
        let (tx, _) = watch::channel(false);
        let handle = ServerHandle {
            shutdown: Arc::new(tx),
            metrics,
            addr: local,
        };
        Ok(Self {
            listener,
            state,
            handle,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// A handle to shut it down (from another task or thread) and read its figures.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Serves until [`ServerHandle::shutdown`], then answers the requests in flight, stops
    /// the workers and returns.
    pub async fn run(self) -> Result<()> {
        let mut stop = self.handle.shutdown.subscribe();
        let app = router(Arc::clone(&self.state));
        tracing::info!(addr = %self.handle.addr, "serving");
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
        let state = self.state;
        // Joining the worker threads blocks: not on the async runtime.
        let _ = tokio::task::spawn_blocking(move || state.batcher.stop()).await;
        tracing::info!(addr = %self.handle.addr, "server stopped");
        served.map_err(|source| ServeError::Io {
            context: "serving on",
            addr: self.handle.addr.to_string(),
            source,
        })
    }

    /// [`Self::run`], also shutting down gracefully on SIGINT (Ctrl-C) or SIGTERM.
    pub async fn run_until_signal(self) -> Result<()> {
        let signals = self.shutdown_on_signals()?;
        let result = self.run().await;
        signals.abort();
        result
    }

    /// Installs SIGINT and SIGTERM handlers (now, so that a signal that comes right after
    /// this call is not missed) that shut the server down gracefully. Abort the returned task
    /// to remove them.
    pub fn shutdown_on_signals(&self) -> Result<tokio::task::JoinHandle<()>> {
        let handle = self.handle();
        let io = |source| ServeError::Io {
            context: "installing the signal handlers of",
            addr: handle.addr.to_string(),
            source,
        };
        #[cfg(unix)]
        let (mut int, mut term) = {
            use tokio::signal::unix::{SignalKind, signal};
            (
                signal(SignalKind::interrupt()).map_err(io)?,
                signal(SignalKind::terminate()).map_err(io)?,
            )
        };
        let mut stopped = handle.shutdown.subscribe();
        Ok(tokio::spawn(async move {
            #[cfg(unix)]
            tokio::select! {
                _ = int.recv() => tracing::info!("SIGINT: shutting down"),
                _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = stopped.wait_for(|s| *s) => {}
            }
            #[cfg(not(unix))]
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("Ctrl-C: shutting down"),
                _ = stopped.wait_for(|s| *s) => {}
            }
            handle.shutdown();
        }))
    }
}

/// A server running on a thread of its own with its own tokio runtime: for tests, benchmarks
/// and programs without a runtime. Dropping it shuts it down and waits.
pub struct RunningServer {
    handle: ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl RunningServer {
    /// Binds `addr` and starts serving on a new thread; returns once the port is bound.
    pub fn start(model: ServeModel, config: ServeConfig, addr: SocketAddr) -> Result<Self> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(1, 4);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("plsc-serve-http")
            .enable_all()
            .build()
            .map_err(|source| ServeError::Io {
                context: "starting the async runtime for",
                addr: addr.to_string(),
                source,
            })?;
        let server = runtime.block_on(Server::bind(model, config, addr))?;
        let handle = server.handle();
        let thread = std::thread::Builder::new()
            .name("plsc-serve".into())
            .spawn(move || {
                let result = runtime.block_on(server.run());
                runtime.shutdown_timeout(Duration::from_secs(5));
                result
            })
            .map_err(|source| ServeError::Io {
                context: "starting the server thread for",
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self {
            handle,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// Its handle.
    pub fn handle(&self) -> &ServerHandle {
        &self.handle
    }

    /// Shuts down gracefully and waits until the requests in flight are answered and the
    /// workers have stopped.
    pub fn shutdown(mut self) -> Result<()> {
        self.handle.shutdown();
        self.join()
    }

    fn join(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => t.join().unwrap_or_else(|_| {
                Err(ServeError::Inference("the server thread panicked".into()))
            }),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        let _ = self.join();
    }
}

/// Loads `model_dir`, binds `addr`, calls `on_bound` with the bound address (port 0 picks a
/// free one) and serves on a new runtime until SIGINT or SIGTERM, answering the requests in
/// flight before it returns: what `cargo xtask serve` runs.
pub fn serve_blocking(
    model_dir: &std::path::Path,
    config: ServeConfig,
    addr: SocketAddr,
    on_bound: impl FnOnce(SocketAddr),
) -> Result<()> {
    let model = ServeModel::load_on(model_dir, config.device)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("plsc-serve-http")
        .enable_all()
        .build()
        .map_err(|source| ServeError::Io {
            context: "starting the async runtime for",
            addr: addr.to_string(),
            source,
        })?;
    runtime.block_on(async move {
        let server = Server::bind(model, config, addr).await?;
        let signals = server.shutdown_on_signals()?;
        on_bound(server.local_addr());
        tracing::info!(
            addr = %server.local_addr(),
            "listening; POST /v1/encode, POST /FaceClassifyService/inference, GET /healthz, \
             GET /v1/model, GET /metrics"
        );
        let result = server.run().await;
        signals.abort();
        result
    })
}

/// Every route with its one method, as the 404 and 405 answers list them.
const ROUTES: [(&str, &str); 5] = [
    ("POST", "/v1/encode"),
    ("POST", "/FaceClassifyService/inference"),
    ("GET", "/healthz"),
    ("GET", "/v1/model"),
    ("GET", "/metrics"),
];

/// The routes. Every error is JSON: an unknown path answers 404, a known path with another
/// method 405 (with `Allow`), both with the routes listed.
fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/encode", post(encode))
        .route("/FaceClassifyService/inference", post(plsc_inference))
        .route("/healthz", get(healthz))
        .route("/v1/model", get(model_info))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `POST /v1/encode, POST /FaceClassifyService/inference, ...`.
fn route_list() -> String {
    ROUTES
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `inner` under the request timeout and records the answer in the metrics.
async fn answer<F>(state: &AppState, route: &'static str, inner: F) -> Response
where
    F: Future<Output = std::result::Result<Response, ApiError>>,
{
    let started = Instant::now();
    let timeout = state.config.request_timeout;
    let response = match tokio::time::timeout(timeout, inner).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(route, status = %e.status, error = %e.message, "request refused");
            e.into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!(
                "the request took longer than the limit of {} ms",
                timeout.as_millis()
            ),
        )
        .into_response(),
    };
    state
        .metrics
        .record_response(route, response.status().as_u16(), started.elapsed());
    response
}

async fn encode(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let s = Arc::clone(&state);
    answer(&state, "encode", async move {
        let bytes = read_body(body, s.config.max_body_bytes).await?;
        let mut object = parse_object(&bytes)?;
        if let Some(key) = object
            .keys()
            .find(|k| !matches!(k.as_str(), "images" | "flip" | "normalize"))
        {
            return Err(ApiError::bad_json(format!(
                "unknown field `{key}`; expected `images`, `flip`, `normalize`"
            )));
        }
        let flip = bool_field(&object, "flip")?;
        let normalize = bool_field(&object, "normalize")?;
        let images = image_list(object.remove("images"), "images")?;
        let mut embeddings = embed(&s, images, flip).await?;
        if normalize {
            for e in &mut embeddings {
                l2_normalize(e);
            }
        }
        let dim = s.info.spec.embedding_size;
        Ok(axum::Json(EncodeResponse { embeddings, dim }).into_response())
    })
    .await
}

async fn plsc_inference(State(state): State<Arc<AppState>>, body: Body) -> Response {
    let s = Arc::clone(&state);
    answer(&state, "plsc", async move {
        let bytes = read_body(body, s.config.max_body_bytes).await?;
        let mut object = parse_object(&bytes)?;
        let images = image_list(object.remove("base64_string"), "base64_string")?;
        let embeddings = embed(&s, images, false).await?;
        let instance = embeddings
            .into_iter()
            .map(|embedding| PlscInstance { embedding })
            .collect();
        Ok(axum::Json(PlscResponse { instance }).into_response())
    })
    .await
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    answer(&state, "healthz", async {
        Ok(axum::Json(serde_json::json!({ "status": "ok" })).into_response())
    })
    .await
}

async fn model_info(State(state): State<Arc<AppState>>) -> Response {
    answer(&state, "model", async {
        Ok(axum::Json(ModelResponse {
            model: state.info.clone(),
            limits: state.limits.clone(),
        })
        .into_response())
    })
    .await
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    answer(&state, "metrics", async {
        Ok((
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            state.metrics.render(),
        )
            .into_response())
    })
    .await
}

async fn not_found(State(state): State<Arc<AppState>>, uri: axum::http::Uri) -> Response {
    answer(&state, "other", async move {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route {}; routes: {}", uri.path(), route_list()),
        ))
    })
    .await
}

/// A known route asked with a method it does not take: 405 in JSON, with `Allow`.
async fn method_not_allowed(
    State(state): State<Arc<AppState>>,
    method: axum::http::Method,
    uri: axum::http::Uri,
) -> Response {
    let path = uri.path().to_string();
    let allowed: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, p)| *p == path)
        .map(|(m, _)| *m)
        .collect();
    let allow = allowed.join(", ");
    let message = format!(
        "{method} {path}: this route takes {allow}; routes: {}",
        route_list()
    );
    let mut response = answer(&state, "other", async move {
        Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
        ))
    })
    .await;
    if let Ok(v) = HeaderValue::from_str(&allow) {
        response.headers_mut().insert(header::ALLOW, v);
    }
    response
}

/// Reads the body up to `limit` bytes. A larger body is read on (and dropped) up to 4 times
/// the limit, so that the client, still sending, gets the 413 rather than a reset connection.
async fn read_body(mut body: Body, limit: usize) -> std::result::Result<Bytes, ApiError> {
    let mut buf = Vec::new();
    let mut total = 0usize;
    let drain_cap = limit.saturating_mul(4);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the request body: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= limit {
            buf.extend_from_slice(&data);
        } else if total > drain_cap {
            break;
        }
    }
    if total > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than the limit of {limit} bytes"),
        ));
    }
    Ok(Bytes::from(buf))
}

/// The body as a JSON object.
fn parse_object(bytes: &[u8]) -> std::result::Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(ApiError::bad_json(format!(
            "the body must be a JSON object, not {}",
            kind_of(&other)
        ))),
        Err(e) => Err(ApiError::bad_json(format!("invalid JSON: {e}"))),
    }
}

/// An optional boolean field (absent: false).
fn bool_field(object: &Map<String, Value>, name: &str) -> std::result::Result<bool, ApiError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(ApiError::bad_json(format!(
            "`{name}` must be true or false, not {}",
            kind_of(other)
        ))),
    }
}

/// The list of base64 strings in field `name`; a wrong element is named by its index.
fn image_list(value: Option<Value>, name: &str) -> std::result::Result<Vec<String>, ApiError> {
    let list = match value {
        Some(Value::Array(list)) => list,
        None => {
            return Err(ApiError::bad_json(format!(
                "missing field `{name}` (a list of base64 strings)"
            )));
        }
        Some(other) => {
            return Err(ApiError::bad_json(format!(
                "`{name}` must be a list of base64 strings, not {}",
                kind_of(&other)
            )));
        }
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::String(s) => Ok(s),
            other => Err(ApiError::bad_json(format!(
                "image {i}: `{name}[{i}]` must be a base64 string, not {}",
                kind_of(&other)
            ))
            .at(i)),
        })
        .collect()
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Preprocesses `images`, queues them for the workers and waits for their embeddings (with
/// `flip`, each the sum of the image's and its mirror image's).
async fn embed(
    state: &Arc<AppState>,
    images: Vec<String>,
    flip: bool,
) -> std::result::Result<Vec<Vec<f32>>, ApiError> {
    let n = images.len();
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_images",
            "the request holds no images",
        ));
    }
    let max = state.config.max_images_per_request;
    if n > max {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_images",
            format!("the request holds {n} images, more than the limit of {max} per request"),
        ));
    }
    let spec = state.spec.clone();
    let max_pixels = state.config.max_image_pixels;
    let pixels =
        tokio::task::spawn_blocking(move || preprocess_all(&images, &spec, flip, max_pixels))
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("preprocessing failed: {e}"),
                )
            })??;
    let rows = n * (1 + usize::from(flip));
    let (tx, rx) = oneshot::channel();
    let job = Job {
        images: pixels,
        rows,
        queued: n,
        reply: tx,
    };
    match state.batcher.submit(job) {
        Ok(()) => {}
        Err(Refused::QueueFull) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "queue_full",
                format!(
                    "the queue is full ({} images waiting, limit {}); retry later",
                    state.metrics.queued_images(),
                    state.config.max_queue_images
                ),
            ));
        }
        Err(Refused::Stopped) => return Err(shutting_down()),
    }
    let out = rx.await.map_err(|_| shutting_down())?.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "inference_failed",
            e.to_string(),
        )
    })?;
    let dim = out.len() / rows;
    let mut embeddings: Vec<Vec<f32>> = if flip {
        out.chunks_exact(2 * dim)
            .map(|pair| {
                let (a, b) = pair.split_at(dim);
                a.iter().zip(b).map(|(x, y)| x + y).collect()
            })
            .collect()
    } else {
        out.chunks_exact(dim).map(<[f32]>::to_vec).collect()
    };
    if let Some(i) = embeddings
        .iter()
        .position(|e| e.iter().any(|v| !v.is_finite()))
    {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "inference_failed",
            format!("image {i}: the model produced a non-finite embedding"),
        )
        .at(i));
    }
    embeddings.truncate(n);
    Ok(embeddings)
}

fn shutting_down() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down",
    )
}

/// Decodes and preprocesses every image; the first bad one is named.
fn preprocess_all(
    images: &[String],
    spec: &ImageSpec,
    flip: bool,
    max_pixels: u64,
) -> std::result::Result<Vec<f32>, ApiError> {
    let per_image = spec.numel() * (1 + usize::from(flip));
    let mut out = Vec::with_capacity(images.len() * per_image);
    for (i, text) in images.iter().enumerate() {
        let bytes = decode_base64(text, i).map_err(|e| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_base64", e.to_string()).at(i)
        })?;
        push_image(&bytes, i, spec, flip, max_pixels, &mut out).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad_image", e.to_string()).at(i)
        })?;
    }
    Ok(out)
}

/// Scales `v` to unit L2 length (a zero vector stays zero).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
    if norm > 0.0 {
        for x in v {
            *x = (f64::from(*x) / norm) as f32;
        }
    }
}
