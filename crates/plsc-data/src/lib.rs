//! Training data for plsc-rs: PLSC's base64 TSV layout, a lossless global shuffle-and-split,
//! importers (MXNet RecordIO, image folders, label lists) and per-rank batch streams.
//!
//! In the flow: **`data`** -> `models` (backbone) -> `core` (head). A leaf crate.
