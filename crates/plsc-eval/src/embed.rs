//! The flip test: embed every image and its left-right mirror, add the two embeddings, normalise,
//! and compute the metrics, as InsightFace's `verification.test` does.

use serde::{Deserialize, Serialize};

use crate::error::{EmbedderError, EvalError, Result};
use crate::metrics::{Verification, VerifyConfig, evaluate, l2_normalize_rows, xnorm};
use crate::pair_set::PairSet;

/// Anything that turns a batch of images into embeddings: a model in eval mode.
pub trait Embedder {
    /// Embeds `shape[0]` images given as normalised NCHW `f32` (`shape = [n, c, h, w]`), returning
    /// `n * d` values, one row of `d` per image, in order.
    fn embed(&mut self, images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, EmbedderError>;
}

impl<F> Embedder for F
where
    F: FnMut(&[f32], [usize; 4]) -> Result<Vec<f32>, EmbedderError>,
{
    fn embed(&mut self, images: &[f32], shape: [usize; 4]) -> Result<Vec<f32>, EmbedderError> {
        self(images, shape)
    }
}

/// Settings of an evaluation with a model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Images per embedder call.
    pub batch_size: usize,
    /// Folds and FAR target.
    pub verify: VerifyConfig,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch_size: 64,
            verify: VerifyConfig::default(),
        }
    }
}

/// Raw embeddings of every image of a pair set, plain and mirrored.
#[derive(Debug, Clone, PartialEq)]
pub struct FlipEmbeddings {
    /// Embedding size.
    pub dim: usize,
    /// Embeddings of the images as given, `[2P, dim]`.
    pub plain: Vec<f32>,
    /// Embeddings of the mirrored images, `[2P, dim]`.
    pub flipped: Vec<f32>,
}

impl FlipEmbeddings {
    /// XNorm over both sets of raw embeddings, plain first (InsightFace's order).
    pub fn xnorm(&self) -> f64 {
        let mut all = Vec::with_capacity(self.plain.len() + self.flipped.len());
        all.extend_from_slice(&self.plain);
        all.extend_from_slice(&self.flipped);
        xnorm(&all, self.dim)
    }

    /// `normalize(plain + flipped)` in float64.
    pub fn combined_normalized(&self) -> Vec<f64> {
        let sum: Vec<f64> = self
            .plain
            .iter()
            .zip(&self.flipped)
            .map(|(&a, &b)| f64::from(a) + f64::from(b))
            .collect();
        l2_normalize_rows(&sum, self.dim)
    }
}

fn embed_all(
    set: &PairSet,
    embedder: &mut dyn Embedder,
    flip: bool,
    options: &EvalOptions,
    dim: &mut Option<usize>,
) -> Result<Vec<f32>> {
    if options.batch_size == 0 {
        return Err(EvalError::Config(
            "the batch size must be at least 1".into(),
        ));
    }
    let spec = set.spec();
    let n = set.images();
    let mut out = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + options.batch_size).min(n);
        let batch = set.batch_nchw(start..end, flip);
        let shape = [
            end - start,
            spec.channels,
            spec.height as usize,
            spec.width as usize,
        ];
        let emb = embedder
            .embed(&batch, shape)
            .map_err(|source| EvalError::Embedder { start, end, source })?;
        let images = end - start;
        let d = emb.len() / images;
        if emb.is_empty() || emb.len() % images != 0 || dim.is_some_and(|known| known != d) {
            return Err(EvalError::EmbedderOutput {
                values: emb.len(),
                images,
            });
        }
        *dim = Some(d);
        if let Some(row) = emb
            .chunks_exact(d)
            .position(|r| r.iter().any(|x| !x.is_finite()))
        {
            return Err(EvalError::NonFinite { row: start + row });
        }
        out.extend_from_slice(&emb);
        start = end;
    }
    Ok(out)
}

/// Embeds every image of `set` plain and mirrored, in batches of `options.batch_size`.
pub fn embed_with_flip(
    set: &PairSet,
    embedder: &mut dyn Embedder,
    options: &EvalOptions,
) -> Result<FlipEmbeddings> {
    let mut dim = None;
    let plain = embed_all(set, embedder, false, options, &mut dim)?;
    let flipped = embed_all(set, embedder, true, options, &mut dim)?;
    let Some(dim) = dim else {
        return Err(EvalError::TooFewPairs {
            pairs: 0,
            folds: options.verify.folds,
        });
    };
    Ok(FlipEmbeddings {
        dim,
        plain,
        flipped,
    })
}

/// The full flip-test verification of one pair set with a model.
pub fn verify_pair_set(
    set: &PairSet,
    embedder: &mut dyn Embedder,
    options: &EvalOptions,
) -> Result<Verification> {
    let emb = embed_with_flip(set, embedder, options)?;
    let metrics = evaluate(
        &emb.combined_normalized(),
        emb.dim,
        &set.issame,
        &options.verify,
    )?;
    let report = Verification {
        xnorm: emb.xnorm(),
        metrics,
    };
    tracing::info!(
        set = %set.name,
        "accuracy-flip {:.5}+-{:.5}, TAR@FAR={} {:.5}+-{:.5}, XNorm {:.4}",
        report.metrics.accuracy_mean,
        report.metrics.accuracy_std,
        report.metrics.far_target,
        report.metrics.tar_mean,
        report.metrics.tar_std,
        report.xnorm
    );
    Ok(report)
}
