//! The one error type of plsc-serve.

use std::path::PathBuf;

/// Everything that can go wrong when loading a model, serving it, or asking a server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The exported model directory could not be read (missing file, bad `model.json`,
    /// checksum mismatch).
    #[error("loading the model {}: {source}", dir.display())]
    LoadModel {
        /// The model directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: Box<plsc_ckpt::CkptError>,
    },
    /// The backbone could not be built, loaded or run.
    #[error("model {context}: {source}")]
    Model {
        /// What was being done (`building iresnet50`, `loading weights`, `forward`).
        context: String,
        /// The cause.
        #[source]
        source: Box<plsc_models::ModelError>,
    },
    /// A model directory could not be written.
    #[error("writing the model directory {}: {detail}", dir.display())]
    WriteModel {
        /// The directory.
        dir: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A setting is out of range.
    #[error("invalid serve configuration: {0}")]
    Config(String),
    /// One image of a request could not be used.
    #[error("image {index}: {detail}")]
    BadImage {
        /// Its index in the request.
        index: usize,
        /// What is wrong with it.
        detail: String,
    },
    /// Binding or serving on an address failed.
    #[error("{context} {addr}: {source}")]
    Io {
        /// What was being done (`binding`, `serving on`).
        context: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The inference workers are gone (the server is shutting down).
    #[error("the inference workers have stopped")]
    WorkersStopped,
    /// Inference failed inside a worker.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A server answered with an error status; `message` is the server's own.
    #[error("server {server} answered {status}: {message}")]
    Server {
        /// The server (`host:port`).
        server: String,
        /// The HTTP status.
        status: u16,
        /// The server's error message.
        message: String,
        /// The offending image index, when the server named one.
        index: Option<usize>,
    },
    /// A request to a server failed before an answer arrived (connection refused, timeout,
    /// broken connection, unreadable answer).
    #[error("server {server}: {detail}")]
    Transport {
        /// The server (`host:port`).
        server: String,
        /// What went wrong.
        detail: String,
    },
    /// Every server of the client failed; the last error is kept.
    #[error("all {tried} servers failed; last error: {last}")]
    AllServersFailed {
        /// How many servers were tried.
        tried: usize,
        /// The last server's error.
        #[source]
        last: Box<ServeError>,
    },
    /// A client was made with no server address.
    #[error("no server address given")]
    NoServers,
}

/// `Result` with [`ServeError`].
pub type Result<T, E = ServeError> = std::result::Result<T, E>;
