//! The whole distributed head on given inputs, for checking it against another implementation
//! (`cargo xtask head-check`: a PyTorch or InsightFace run writes features, labels and weight;
//! this computes the loss and the gradients the way training does, on N rank threads).
//!
//! [`check_head`] splits the global batch over the ranks in contiguous blocks, gives each rank
//! its class shard of the weight (and bias), runs one forward+backward step with
//! [`WeightUpdate::Gradient`] (no update: the gradients come back), and gathers the results
//! into the global shapes: the feature gradient `[B, D]` in batch order, the weight gradient
//! `[C, D]` in class order (sharded heads: each rank's rows; replicated heads: rank 0's sum).

use plsc_comm::{Communicator, run_ranks};

use crate::cpu::HeadFloat;
use crate::error::HeadError;
use crate::head::{HeadConfig, ShardedHead, WeightUpdate};
use crate::storage::RowStore;

/// The inputs of one checked step, in float64 (converted to the head's float type).
#[derive(Debug, Clone, PartialEq)]
pub struct CheckInputs {
    /// Global batch size `B`.
    pub rows: usize,
    /// Embedding size `D`.
    pub dim: usize,
    /// Class count `C`.
    pub classes: usize,
    /// Features `[B, D]`, row-major.
    pub features: Vec<f64>,
    /// Labels `[B]`.
    pub labels: Vec<i64>,
    /// Weight `[C, D]`, row-major.
    pub weight: Vec<f64>,
    /// Bias `[C]` (plain softmax with a bias); `None` keeps the head's initial bias.
    pub bias: Option<Vec<f64>>,
}

/// The outputs of one checked step, in float64, in the global shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutputs {
    /// The mean loss over the global batch.
    pub loss: f64,
    /// Gradient of the loss with respect to the features, `[B, D]`.
    pub grad_features: Vec<f64>,
    /// Gradient with respect to the weight, `[C, D]`.
    pub grad_weight: Vec<f64>,
    /// Gradient with respect to the bias, `[C]`, for heads with a bias.
    pub grad_bias: Option<Vec<f64>>,
}

impl CheckInputs {
    fn validate(&self) -> Result<(), HeadError> {
        let shape = |tensor: &'static str, got: usize, expected: Vec<usize>| {
            if got == expected.iter().product::<usize>() {
                Ok(())
            } else {
                Err(HeadError::Shape {
                    rank: 0,
                    tensor,
                    got: vec![got],
                    expected,
                })
            }
        };
        shape("features", self.features.len(), vec![self.rows, self.dim])?;
        shape("labels", self.labels.len(), vec![self.rows])?;
        shape("weight", self.weight.len(), vec![self.classes, self.dim])?;
        if let Some(b) = &self.bias {
            shape("bias", b.len(), vec![self.classes])?;
        }
        Ok(())
    }
}

/// One forward+backward step of the head described by `config` (class count and embedding
/// size must be `inputs`') on `ranks` rank threads, in float type `T`. Fails with the first
/// failing rank's error (bad labels, shapes or settings fail every rank alike).
pub fn check_head<T: HeadFloat>(
    inputs: &CheckInputs,
    config: &HeadConfig,
    ranks: usize,
) -> Result<CheckOutputs, HeadError> {
    inputs.validate()?;
    if ranks == 0 {
        return Err(HeadError::Config {
            name: "ranks",
            detail: "at least 1 rank is needed".into(),
        });
    }
    let d = inputs.dim;
    let results = run_ranks(ranks, |comm| {
        let r = comm.rank();
        let (lo, hi) = (inputs.rows * r / ranks, inputs.rows * (r + 1) / ranks);
        let mut head = ShardedHead::<T>::new(config.clone(), r, ranks)?;
        let s = head.shard();
        let conv = |v: &[f64]| v.iter().map(|x| T::from_f64(*x)).collect::<Vec<T>>();
        let bias = head.bias().map(|b| {
            inputs
                .bias
                .as_ref()
                .map_or_else(|| b.to_vec(), |given| conv(&given[s.start..s.end()]))
        });
        head.set_weight(
            RowStore::Full(conv(&inputs.weight[s.start * d..s.end() * d])),
            bias,
        )?;
        let mut gw = vec![T::zero(); s.len * d];
        let mut gb = head.bias().map(|b| vec![T::zero(); b.len()]);
        let x = conv(&inputs.features[lo * d..hi * d]);
        let out = head.step(
            &comm,
            &x,
            &inputs.labels[lo..hi],
            0,
            WeightUpdate::Gradient {
                weight: &mut gw,
                bias: gb.as_deref_mut(),
            },
        )?;
        let back = |v: &[T]| v.iter().map(|x| x.as_f64()).collect::<Vec<f64>>();
        Ok::<_, HeadError>((
            out.loss,
            back(&out.grad_features),
            back(&gw),
            gb.map(|b| back(&b)),
        ))
    });
    let parts = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    // Sharded: each rank holds its classes' rows; replicated: every rank holds the summed whole.
    let take = if config.loss.sharded { parts.len() } else { 1 };
    let grad_bias = parts[0].3.as_ref().map(|_| {
        parts
            .iter()
            .take(take)
            .flat_map(|p| p.3.clone().unwrap_or_default())
            .collect()
    });
    Ok(CheckOutputs {
        loss: parts[0].0,
        grad_features: parts.iter().flat_map(|p| p.1.clone()).collect(),
        grad_weight: parts.iter().take(take).flat_map(|p| p.2.clone()).collect(),
        grad_bias,
    })
}
