//! Training data for plsc-rs: PLSC's base64 TSV layout, a lossless global shuffle-and-split,
//! importers (MXNet RecordIO, image folders, label lists) and per-rank batch streams.
//!
//! In the flow: **`data`** -> `models` (backbone) -> `core` (head). A leaf crate.
//!
//! - [`format`](mod@format): the layout (`file_list.txt` + parts of `<base64>\t<label>` lines), line
//!   parsing and the `--skip-bad` policy.
//! - [`shuffle`]: global shuffle-and-split over memory-mapped inputs.
//! - [`recordio`]: MXNet RecordIO `.rec`/`.idx` (InsightFace's MS1M, Glint360K, WebFace).
//! - [`import`], [`synth`], [`inspect`]: the data tools; [`folder`]: a folder of identities.
//! - [`idx`]: IDX files (MNIST, Fashion-MNIST) and the class hold-out of `xtask import-idx`.
//! - [`pairs`]: verification pair sets (half genuine, half impostor) from labelled images.
//! - [`decode`], [`source`], [`stream`]: decoding, augmentation and per-rank batches.
//! - [`resize`]: the aspect-ratio policy (`squash`, `pad`, `center-crop`) of every consumer.

pub mod decode;
pub mod error;
pub mod folder;
pub mod format;
pub mod idx;
pub mod import;
pub mod index;
pub mod inspect;
pub mod output;
pub mod pairs;
pub mod recordio;
pub mod resize;
pub mod shuffle;
pub mod source;
pub mod stream;
pub mod synth;
pub mod writer;

pub use error::{DataError, LineError, Location, Result};
pub use resize::Resize;
