//! The client: PLSC's `FaceService` in Rust. Blocking (ureq), with round-robin over several
//! servers and a retry on the next server when one fails.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{EncodeRequest, EncodeResponse, ErrorResponse, ModelResponse};
use crate::error::{Result, ServeError};

/// Largest answer the client reads (an answer of 256 images x 512 floats is about 1.5 MB).
const MAX_RESPONSE_BYTES: u64 = 1 << 30;

/// Options of one encode call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The flip test: the sum of each image's and its mirror image's embedding.
    pub flip: bool,
    /// Unit-length embeddings.
    pub normalize: bool,
}

/// A client of one or more plsc-serve servers (or PLSC-compatible ones for [`Client::encode`]
/// through [`Client::encode_plsc`]).
///
/// Requests go to the servers in turn (round-robin). When a server cannot be reached, times
/// out or answers 5xx, the same request is tried on the next server, each server once; a 4xx
/// answer (bad input) is returned at once with the server's message. Connections are opened
/// on first use and kept.
#[derive(Debug)]
pub struct Client {
    servers: Vec<String>,
    agent: ureq::Agent,
    next: AtomicUsize,
    timeout: Duration,
}

impl Client {
    /// A client of the server at `addr` (`host:port` or `http://host:port`), with a 30 s
    /// timeout per request. Nothing is sent until the first request.
    pub fn connect(addr: impl Into<String>) -> Result<Self> {
        Self::connect_all([addr])
    }

    /// A client of all `addrs`, used in turn.
    pub fn connect_all<I, S>(addrs: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let servers: Vec<String> = addrs
            .into_iter()
            .map(|a| {
                let a: String = a.into();
                let a = a.trim().trim_end_matches('/');
                if a.starts_with("http://") || a.starts_with("https://") {
                    a.to_string()
                } else {
                    format!("http://{a}")
                }
            })
            .collect();
        if servers.is_empty() {
            return Err(ServeError::NoServers);
        }
        Ok(Self::build(servers, Duration::from_secs(30)))
    }

    fn build(servers: Vec<String>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .timeout_connect(Some(timeout.min(Duration::from_secs(5))))
            .build()
            .new_agent();
        Self {
            servers,
            agent,
            next: AtomicUsize::new(0),
            timeout,
        }
    }

    /// The same servers with another timeout per request (connecting included).
    pub fn with_timeout(self, timeout: Duration) -> Self {
        let next = self.next.load(Ordering::Relaxed);
        let client = Self::build(self.servers, timeout);
        client.next.store(next, Ordering::Relaxed);
        client
    }

    /// The timeout per request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The servers' base URLs.
    pub fn servers(&self) -> &[String] {
        &self.servers
    }

    /// The embeddings of `images` (encoded JPEG/PNG/PNM bytes), in order, as the model gives
    /// them (`POST /v1/encode`).
    pub fn encode<T: AsRef<[u8]>>(&self, images: &[T]) -> Result<Vec<Vec<f32>>> {
        self.encode_with(images, EncodeOptions::default())
    }

    /// [`Self::encode`] with the flip test and/or normalisation.
    pub fn encode_with<T: AsRef<[u8]>>(
        &self,
        images: &[T],
        options: EncodeOptions,
    ) -> Result<Vec<Vec<f32>>> {
        let request = EncodeRequest {
            images: images.iter().map(|i| STANDARD.encode(i.as_ref())).collect(),
            flip: options.flip,
            normalize: options.normalize,
        };
        let response: EncodeResponse = self.post("/v1/encode", &request)?;
        check_count(&response.embeddings, images.len(), &self.servers)?;
        Ok(response.embeddings)
    }

    /// The embeddings through PLSC's route (`POST /FaceClassifyService/inference`), for PLSC
    /// servers and plsc-serve alike.
    pub fn encode_plsc<T: AsRef<[u8]>>(&self, images: &[T]) -> Result<Vec<Vec<f32>>> {
        let request = crate::api::PlscRequest {
            base64_string: images.iter().map(|i| STANDARD.encode(i.as_ref())).collect(),
        };
        let response: crate::api::PlscResponse =
            self.post("/FaceClassifyService/inference", &request)?;
        let embeddings: Vec<Vec<f32>> =
            response.instance.into_iter().map(|i| i.embedding).collect();
        check_count(&embeddings, images.len(), &self.servers)?;
        Ok(embeddings)
    }

    /// The served model's description and the server's limits (`GET /v1/model`).
    pub fn model(&self) -> Result<ModelResponse> {
        self.with_failover(|base| {
            let response = self.agent.get(format!("{base}/v1/model")).call();
            read_json(base, response)
        })
    }

    /// Whether a server answers `GET /healthz` with 200 (the next one in turn).
    pub fn health(&self) -> Result<()> {
        self.with_failover(|base| {
            let response = self.agent.get(format!("{base}/healthz")).call();
            read_json::<serde_json::Value>(base, response).map(|_| ())
        })
    }

    /// A server's metrics in the Prometheus text format (`GET /metrics`).
    pub fn metrics(&self) -> Result<String> {
        self.with_failover(|base| {
            let mut response = self
                .agent
                .get(format!("{base}/metrics"))
                .call()
                .map_err(|e| transport(base, e))?;
            let status = response.status().as_u16();
            let text = response
                .body_mut()
                .with_config()
                .limit(MAX_RESPONSE_BYTES)
                .read_to_string()
                .map_err(|e| transport(base, e))?;
            if status != 200 {
                return Err(server_error(base, status, text.as_bytes()));
            }
            Ok(text)
        })
    }

    fn post<Q: Serialize, R: DeserializeOwned>(&self, path: &str, body: &Q) -> Result<R> {
        self.with_failover(|base| {
            let response = self.agent.post(format!("{base}{path}")).send_json(body);
            read_json(base, response)
        })
    }

    /// Runs `call` on the next server in turn; on a transport error or a 5xx answer, on the
    /// following ones, each once.
    fn with_failover<R>(&self, call: impl Fn(&str) -> Result<R>) -> Result<R> {
        let n = self.servers.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n {
            let base = &self.servers[(first + k) % n];
            match call(base) {
                Ok(r) => return Ok(r),
                Err(e) if retryable(&e) => {
                    tracing::warn!(server = %base, error = %e, "server failed; trying the next");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let last = last.unwrap_or(ServeError::NoServers);
        if n == 1 {
            Err(last)
        } else {
            Err(ServeError::AllServersFailed {
                tried: n,
                last: Box::new(last),
            })
        }
    }
}

/// Transport errors and 5xx answers are worth another server; 4xx ones are not.
fn retryable(e: &ServeError) -> bool {
    match e {
        ServeError::Transport { .. } => true,
        ServeError::Server { status, .. } => *status >= 500,
        _ => false,
    }
}

fn server_name(base: &str) -> String {
    base.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_string()
}

fn transport(base: &str, e: ureq::Error) -> ServeError {
    ServeError::Transport {
        server: server_name(base),
        detail: e.to_string(),
    }
}

/// The error of a non-200 answer, with the server's message when it sent a JSON error.
fn server_error(base: &str, status: u16, body: &[u8]) -> ServeError {
    let (message, index) = match serde_json::from_slice::<ErrorResponse>(body) {
        Ok(e) => (e.error, e.index),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let message = if text.is_empty() {
                "(no message)".to_string()
            } else {
                text.chars().take(500).collect()
            };
            (message, None)
        }
    };
    ServeError::Server {
        server: server_name(base),
        status,
        message,
        index,
    }
}

fn read_json<R: DeserializeOwned>(
    base: &str,
    response: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<R> {
    let mut response = response.map_err(|e| transport(base, e))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| transport(base, e))?;
    if status != 200 {
        return Err(server_error(base, status, &body));
    }
    serde_json::from_slice(&body).map_err(|e| ServeError::Transport {
        server: server_name(base),
        detail: format!("unreadable answer: {e}"),
    })
}

fn check_count(embeddings: &[Vec<f32>], images: usize, servers: &[String]) -> Result<()> {
    if embeddings.len() != images {
        return Err(ServeError::Transport {
            server: servers.join(", "),
            detail: format!(
                "the answer holds {} embeddings for {images} images",
                embeddings.len()
            ),
        });
    }
    Ok(())
}
