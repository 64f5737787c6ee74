//! Serving for plsc-rs: an HTTP/JSON embedding server with dynamic batching, and its client.
//!
//! In the flow: a model exported by `ckpt` is loaded with `models` and answers requests.
