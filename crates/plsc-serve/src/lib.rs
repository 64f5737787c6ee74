//! Serving for plsc-rs: an HTTP/JSON embedding server with dynamic batching, and its client.
//!
//! In the flow: a model exported by `ckpt` is loaded with `models` and answers requests.
//!
//! - [`ServeModel::load`] reads an export (`model.json` + `backbone.safetensors`); images are
//!   preprocessed with plsc-data's training decoder (resize, grayscale <-> RGB, normalisation),
//!   so the server's embeddings are the model's own on the same images.
//! - [`Server`] (axum on tokio) answers `POST /v1/encode`, PLSC's
//!   `POST /FaceClassifyService/inference`, `GET /healthz`, `GET /v1/model` and `GET /metrics`
//!   (Prometheus text). The [`batcher`] groups the images of concurrent requests into one
//!   backbone run on inference threads. Limits ([`ServeConfig`]) answer 4xx/503 JSON errors;
//!   shutdown (SIGINT, SIGTERM, [`ServerHandle::shutdown`]) answers the requests in flight first.
//! - [`Client`] is PLSC's `FaceService`: `connect`, `connect_all` (round-robin with retry on
//!   the next server), `encode`.
//!
//! Face models expect aligned face crops, as in training: the server does not detect or align
//! faces.

pub mod api;
pub mod batcher;
pub mod client;
pub mod config;
pub mod error;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod server;

pub use api::{
    EncodeRequest, EncodeResponse, ErrorResponse, ModelResponse, PlscRequest, PlscResponse,
};
pub use client::{Client, EncodeOptions};
pub use config::ServeConfig;
pub use error::{Result, ServeError};
pub use metrics::{BatchStats, Metrics};
pub use model::{ModelInfo, ServeModel, write_model_dir};
pub use server::{RunningServer, Server, ServerHandle, serve_blocking};
