//! Batching and limits of a server.

use std::time::Duration;

use crate::error::{Result, ServeError};

/// How a server batches and what it accepts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeConfig {
    /// Most images run through the backbone at once (1 turns batching off: one request's
    /// images at a time, in chunks of one).
    pub max_batch: usize,
    /// Longest time the first job of a batch waits for more work before the batch runs.
    /// Zero runs each batch as soon as a worker is free, with whatever is queued.
    pub max_wait: Duration,
    /// Inference threads, each with its own copy of the model.
    pub workers: usize,
    /// Largest request body in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Most images in one request; more get 413.
    pub max_images_per_request: usize,
    /// Largest decoded image in pixels (width x height); larger images get 422, before any
    /// pixel is decoded.
    pub max_image_pixels: u64,
    /// Longest time a request may take from arrival to answer; later ones get 504.
    pub request_timeout: Duration,
    /// Most images waiting for a worker; a request that would exceed it gets 503 with
    /// `Retry-After`.
    pub max_queue_images: usize,
    /// Where the backbone runs: the CPU (burn-flex), or a GPU (burn-cuda, feature `cuda`);
    /// decoding and preprocessing stay on the CPU.
    pub device: plsc_models::device::Device,
}

impl Default for ServeConfig {
    /// Batches of up to 64 images, 5 ms wait, one worker, 32 MiB bodies, 256 images per
    /// request, 4096 x 4096 pixels per image, 30 s per request, 1024 queued images.
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_wait: Duration::from_millis(5),
            workers: 1,
            max_body_bytes: 32 << 20,
            max_images_per_request: 256,
            max_image_pixels: 4096 * 4096,
            request_timeout: Duration::from_secs(30),
            max_queue_images: 1024,
            device: plsc_models::device::Device::Cpu,
        }
    }
}

impl ServeConfig {
    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("max_batch", self.max_batch),
            ("workers", self.workers),
            ("max_body_bytes", self.max_body_bytes),
            ("max_images_per_request", self.max_images_per_request),
            ("max_queue_images", self.max_queue_images),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(ServeError::Config(format!("{name} must be at least 1")));
        }
        if self.max_image_pixels == 0 {
            return Err(ServeError::Config(
                "max_image_pixels must be at least 1".into(),
            ));
        }
        if self.request_timeout.is_zero() {
            return Err(ServeError::Config(
                "request_timeout must be longer than zero".into(),
            ));
        }
        if self.max_images_per_request > self.max_queue_images {
            return Err(ServeError::Config(format!(
                "max_images_per_request ({}) exceeds max_queue_images ({}): such a request \
                 could never be queued",
                self.max_images_per_request, self.max_queue_images
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_settings_are_named() {
        ServeConfig::default().validate().unwrap();
        let zero_batch = ServeConfig {
            max_batch: 0,
            ..ServeConfig::default()
        };
        assert!(
            zero_batch
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max_batch")
        );
        let unqueueable = ServeConfig {
            max_images_per_request: 10,
            max_queue_images: 5,
            ..ServeConfig::default()
        };
        let err = unqueueable.validate().unwrap_err().to_string();
        assert!(err.contains("could never be queued"), "{err}");
        let no_time = ServeConfig {
            request_timeout: Duration::ZERO,
            ..ServeConfig::default()
        };
        assert!(no_time.validate().is_err());
    }
}
