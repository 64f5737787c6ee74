//! The JSON bodies of the routes, shared by the server and the client.

use serde::{Deserialize, Serialize};

use crate::model::ModelInfo;

/// `POST /v1/encode` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeRequest {
    /// Encoded images (JPEG, PNG or PNM), standard base64 (padding optional; a
    /// `data:...;base64,` prefix is accepted).
    pub images: Vec<String>,
    /// The flip test: embed each image and its mirror image and return their sum.
    #[serde(default)]
    pub flip: bool,
    /// Return unit-length (L2-normalised) embeddings.
    #[serde(default)]
    pub normalize: bool,
}

/// `POST /v1/encode` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodeResponse {
    /// One embedding per image, in request order.
    pub embeddings: Vec<Vec<f32>>,
    /// Embedding size.
    pub dim: usize,
}

/// PLSC's `POST /FaceClassifyService/inference` request (what PLSC's `FaceService.encode`
/// sends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlscRequest {
    /// Base64-encoded images.
    pub base64_string: Vec<String>,
}

/// One entry of PLSC's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlscInstance {
    /// The image's embedding (raw, as the model gives it).
    pub embedding: Vec<f32>,
}

/// PLSC's `POST /FaceClassifyService/inference` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlscResponse {
    /// One entry per image, in request order.
    pub instance: Vec<PlscInstance>,
}

/// The limits a server enforces (part of `GET /v1/model`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Most images per backbone run.
    pub max_batch: usize,
    /// Longest wait for more work before a batch runs, in milliseconds.
    pub max_wait_ms: f64,
    /// Inference threads.
    pub workers: usize,
    /// Largest request body in bytes.
    pub max_body_bytes: usize,
    /// Most images per request.
    pub max_images_per_request: usize,
    /// Largest image in pixels.
    pub max_image_pixels: u64,
    /// Longest time per request, in milliseconds.
    pub request_timeout_ms: f64,
    /// Most images waiting for a worker.
    pub max_queue_images: usize,
}

/// `GET /v1/model` answer: `model.json`'s description and the server's limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelResponse {
    /// The model.
    #[serde(flatten)]
    pub model: ModelInfo,
    /// The server's limits.
    pub limits: Limits,
}

/// Every 4xx and 5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What went wrong, in words (names the image index where one image is at fault).
    pub error: String,
    /// A stable machine-readable kind: `bad_json`, `no_images`, `bad_base64`, `bad_image`,
    /// `too_many_images`, `body_too_large`, `queue_full`, `timeout`, `shutting_down`,
    /// `inference_failed`, `not_found`.
    pub code: String,
    /// The index of the offending image in the request, when one image is at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}
