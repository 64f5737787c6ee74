//! Verification for plsc-rs: InsightFace `.bin` pair sets, 10-fold accuracy with the flip test,
//! TAR at a fixed FAR and XNorm.
//!
//! It takes an embedding function ([`Embedder`]), so it needs no model. Images go through
//! plsc-data's pipeline (decode, [`Resize`] policy, normalisation; the model input is a
//! [`plsc_data::decode::ImageSpec`]), the one training and the server use. `train` calls it.
//!
//! * [`metrics`]: InsightFace's `calculate_roc` / `calculate_val` (10 contiguous folds, thresholds
//!   0..4 step 0.01 chosen on nine folds, TAR at FAR = 1e-3), XNorm, ROC data.
//! * [`bin_file`]: read and write `.bin` pair sets (a pickle of `(images, issame)`).
//! * [`pair_set`]: decode a pair set to the model input; NCHW batches, plain and flipped.
//! * [`embed`]: the flip test with an [`Embedder`].
//! * [`embeddings_file`]: given embeddings (safetensors) and labels (JSON), for
//!   `cargo xtask eval --embeddings`.
//!
//! Our own pair sets are drawn by plsc-data's builder (`plsc_data::pairs`) and written by
//! [`write_bin`].

pub mod bin_file;
pub mod embed;
pub mod embeddings_file;
mod error;
pub mod metrics;
pub mod numeric;
pub mod pair_set;

pub use bin_file::{BinPairs, encode_bin, parse_bin, read_bin, write_bin};
pub use embed::{Embedder, EvalOptions, FlipEmbeddings, embed_with_flip, verify_pair_set};
pub use embeddings_file::{
    EmbeddingMatrix, read_embeddings, read_issame, write_embeddings, write_issame,
};
pub use error::{EmbedderError, EvalError, Result};
pub use metrics::{Metrics, Roc, Verification, VerifyConfig, evaluate, verify_embeddings};
pub use pair_set::{PairSet, STANDARD_SETS};
pub use plsc_data::Resize;

use std::path::Path;

/// Verifies the given embeddings file against the given labels file, as
/// `cargo xtask eval --embeddings E.safetensors --issame I.json` does.
pub fn verify_files(
    embeddings: &Path,
    issame: &Path,
    config: &VerifyConfig,
) -> Result<Verification> {
    let m = read_embeddings(embeddings)?;
    let labels = read_issame(issame)?;
    verify_embeddings(
        &m.data,
        m.dim,
        &labels,
        config,
        &embeddings.display().to_string(),
    )
}

/// Loads each `.bin` file, its images decoded to `spec` (brought to its size by `spec.resize`),
/// and verifies it with the embedder (flip test); returns the set names with their reports, in
/// the order given.
pub fn verify_bin_files(
    paths: &[&Path],
    spec: &plsc_data::decode::ImageSpec,
    embedder: &mut dyn Embedder,
    options: &EvalOptions,
) -> Result<Vec<(String, Verification)>> {
    paths
        .iter()
        .map(|path| {
            let set = PairSet::load(path, spec)?;
            let report = verify_pair_set(&set, embedder, options)?;
            Ok((set.name.clone(), report))
        })
        .collect()
}
