//! Checkpoints for plsc-rs: a directory with `manifest.json` and safetensors files, saved
//! atomically, verified on load, resharded from N to M ranks, exported for inference.
//!
//! In the flow: `train` saves and resumes through **`ckpt`**; `serve` loads its exports.
