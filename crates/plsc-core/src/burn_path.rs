//! The head on burn tensors, generic over the backend: the path for GPU backends (`Cuda`), and
//! the reference the CPU kernel is tested against on `Flex`.
//!
//! The same distributed softmax as [`crate::ShardedHead::step`] (see `head.rs`), on tensors:
//! all-gather of features (through [`plsc_comm::tensor::TensorComm`], which device backends
//! implement without a host round trip), per class chunk `cos = Xn Wn^T` with the margin at the
//! target and running max / sum-exp, **all-reduce (max)** then one fused **all-reduce (sum)**,
//! the chunk gradients recomputed in the backward pass, **reduce-scatter** of `dXn`. Only the
//! `B` target cosines of a chunk visit the host, where `psi` and `psi'` are evaluated in f64
//! ([`crate::margin::Margin`]).
//!
//! It returns gradients (the update is the caller's, as tensors); the chunk width is
//! `chunk_size` (default: the whole sampled shard in one chunk).

use crate::cpu::tile::NO_TARGET;
use crate::error::HeadError;
use crate::head::{HeadConfig, batch_classes, validate_labels};
use crate::loss::LossKind;
use crate::margin::Margin;
use crate::sampling::SampledClasses;
use crate::shard::ClassShard;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, IndexingUpdateOp, Int, Tensor, TensorData};
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommExt, Communicator, ReduceOp};

/// Loss and gradients of one step of the burn path.
pub struct BurnHeadOutput<B: Backend> {
    /// Mean loss over the global batch.
    pub loss: f64,
    /// `dL/dx` of this rank's rows `[b, D]`.
    pub grad_features: Tensor<B, 2>,
    /// `dL/dW` of the shard `[C_r, D]` (zero rows for classes not sampled).
    pub grad_weight: Tensor<B, 2>,
    /// `dL/db` (plain softmax).
    pub grad_bias: Option<Tensor<B, 1>>,
}

struct Chunk<B: Backend> {
    /// Logits `[B, K]`.
    z: Tensor<B, 2>,
    /// Target entries `[B, K]`.
    target: Tensor<B, 2, Bool>,
    /// Filtered entries `[B, K]` (inter-class filtering).
    filtered: Option<Tensor<B, 2, Bool>>,
    /// `psi'` per row `[B, 1]` (1 where the target is not in the chunk).
    dpsi: Tensor<B, 2>,
    /// `Wn` (margin) or `W` (softmax) of the chunk `[K, D]`.
    w_op: Tensor<B, 2>,
    /// `1 / |w_j|` `[K, 1]` (margin).
    inv_wnorm: Option<Tensor<B, 2>>,
}

/// `1 / max(|row|, eps)` of every row, `[rows, 1]` (the epsilon of `crate::cpu::rows`).
fn inv_row_norms<B: Backend>(m: &Tensor<B, 2>) -> Tensor<B, 2> {
    m.clone()
        .square()
        .sum_dim(1)
        .sqrt()
        .clamp_min(crate::cpu::rows::NORM_EPS)
        .recip()
}

fn column<B: Backend>(values: Vec<f32>, device: &B::Device) -> Tensor<B, 2> {
    let n = values.len();
    Tensor::from_data(TensorData::new(values, [n, 1]), device)
}

/// Logits of chunk `[c0, c1)` of the sampled weight rows `ws` (`[C_s, D]`).
#[allow(clippy::too_many_arguments)]
fn chunk_logits<B: Backend>(
    kind: &LossKind,
    xop: &Tensor<B, 2>,
    ws: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    targets: &[usize],
    c0: usize,
    c1: usize,
    device: &B::Device,
) -> Chunk<B> {
    let rows = targets.len();
    let k = c1 - c0;
    let wc = ws.clone().narrow(0, c0, k);
    let tpos: Vec<i64> = targets
        .iter()
        .map(|&t| {
            if t != NO_TARGET && (c0..c1).contains(&t) {
                (t - c0) as i64
            } else {
                -1
            }
        })
        .collect();
    let tpos = Tensor::<B, 1, Int>::from_data(TensorData::new(tpos, [rows]), device)
        .reshape([rows, 1])
        .expand([rows, k]);
    let cols = Tensor::<B, 1, Int>::arange(0..k as i64, device)
        .reshape([1, k])
        .expand([rows, k]);
    let target = tpos.equal(cols);
    match kind {
        LossKind::Softmax => {
            let mut z = xop.clone().matmul(wc.clone().transpose());
            if let Some(b) = bias {
                z = z + b.clone().narrow(0, c0, k).reshape([1, k]);
            }
            Chunk {
                z,
                target,
                filtered: None,
                dpsi: Tensor::ones([rows, 1], device),
                w_op: wc,
                inv_wnorm: None,
            }
        }
        LossKind::Margin(p) => {
            let inv_wnorm = inv_row_norms(&wc);
            let wn = wc * inv_wnorm.clone();
            let cos = xop.clone().matmul(wn.clone().transpose()).clamp(-1.0, 1.0);
            // The B target cosines go to the host for psi and psi' in f64.
            let cos_t: Vec<f32> = (cos.clone() * target.clone().float())
                .sum_dim(1)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            let margin = Margin::new(p);
            let (mut psi, mut dpsi) = (vec![0.0f32; rows], vec![1.0f32; rows]);
            for i in 0..rows {
                if targets[i] != NO_TARGET && (c0..c1).contains(&targets[i]) {
                    let (a, b) = margin.target(cos_t[i] as f64);
                    psi[i] = a as f32;
                    dpsi[i] = b as f32;
                }
            }
            let filtered = p.interclass_filter.map(|t| {
                cos.clone()
                    .greater_elem(t)
                    .bool_and(target.clone().bool_not())
            });
            let mut z = cos.mul_scalar(p.scale);
            if let Some(f) = &filtered {
                z = z.mask_fill(f.clone(), 0.0);
            }
            let psi_z = column::<B>(psi, device)
                .mul_scalar(p.scale)
                .expand([rows, k]);
            let z = z.mask_where(target.clone(), psi_z);
            Chunk {
                z,
                target,
                filtered,
                dpsi: column(dpsi, device),
                w_op: wn,
                inv_wnorm: Some(inv_wnorm),
            }
        }
    }
}

/// One forward + backward step of the head on burn tensors (see the module doc).
///
/// `weight` `[C_r, D]` and `bias` `[C_r]` are this rank's shard (the whole head when the loss
/// is not sharded); `features` `[b, D]` and `labels` `[b]` this rank's rows.
#[allow(clippy::too_many_arguments)]
pub fn burn_head_step<B: Backend>(
    comm: &dyn Communicator,
    config: &HeadConfig,
    shard: ClassShard,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    features: Tensor<B, 2>,
    labels: &[i64],
    step: u64,
) -> Result<BurnHeadOutput<B>, HeadError> {
    config.validate()?;
    let device = features.device();
    let d = config.embedding_size;
    let [b_local, fd] = features.dims();
    let rank = comm.rank();
    if fd != d || b_local != labels.len() {
        return Err(HeadError::Shape {
            rank,
            tensor: "features",
            got: vec![b_local, fd],
            expected: vec![labels.len(), d],
        });
    }
    if weight.dims() != [shard.len, d] {
        return Err(HeadError::Shape {
            rank,
            tensor: "weight",
            got: weight.dims().to_vec(),
            expected: vec![shard.len, d],
        });
    }
    let sharded = config.loss.sharded && comm.world_size() > 1;
    let (x, row_counts, labels_g) = if sharded {
        let (x, counts) = comm.all_gather_rows_varcount(features)?;
        let (lg, _) = comm.all_gather_varcount(labels)?;
        (x, counts, lg)
    } else {
        (features, vec![b_local], labels.to_vec())
    };
    validate_labels(&labels_g, &row_counts, config.num_classes)?;
    let rows = labels_g.len();
    let batch_norm = if config.loss.sharded {
        rows
    } else {
        let mut n = [b_local as i64];
        comm.all_reduce(&mut n, ReduceOp::Sum)?;
        n[0] as usize
    };
    let (sampled, targets) = batch_classes(shard, &labels_g, config, step);
    let indices = match &sampled {
        SampledClasses::All { .. } => None,
        SampledClasses::Subset(v) => {
            let idx: Vec<i64> = v.iter().map(|c| *c as i64).collect();
            Some(Tensor::<B, 1, Int>::from_data(
                TensorData::new(idx, [v.len()]),
                &device,
            ))
        }
    };
    let (ws, bs) = match &indices {
        None => (weight.clone(), bias.clone()),
        Some(idx) => (
            weight.clone().select(0, idx.clone()),
            bias.clone().map(|b| b.select(0, idx.clone())),
        ),
    };
    let kind = config.loss.kind;
    let (xop, inv_xnorm) = match kind {
        LossKind::Margin(_) => {
            let inv = inv_row_norms(&x);
            (x.clone() * inv.clone(), Some(inv))
        }
        LossKind::Softmax => (x.clone(), None),
    };
    let cs = sampled.len();
    let k = config.chunk_size.unwrap_or(cs).clamp(1, cs.max(1));
    let bounds: Vec<(usize, usize)> = (0..cs)
        .step_by(k)
        .map(|c0| (c0, (c0 + k).min(cs)))
        .collect();

    // Forward: running max, sum-exp and target logit per row.
    let mut max = Tensor::<B, 2>::full([rows, 1], f32::NEG_INFINITY, &device);
    let mut sum = Tensor::<B, 2>::zeros([rows, 1], &device);
    let mut tgt = Tensor::<B, 2>::zeros([rows, 1], &device);
    for &(c0, c1) in &bounds {
        let ch = chunk_logits(&kind, &xop, &ws, bs.as_ref(), &targets, c0, c1, &device);
        let new_max = max.clone().max_pair(ch.z.clone().max_dim(1));
        sum =
            sum * (max - new_max.clone()).exp() + (ch.z.clone() - new_max.clone()).exp().sum_dim(1);
        max = new_max;
        tgt = tgt + (ch.z * ch.target.float()).sum_dim(1);
    }
    // Rows whose max is still -inf (no class on this rank): their sum stays 0.
    let sum = sum.mask_fill(max.clone().equal_elem(f32::NEG_INFINITY), 0.0);
    let (max, sum, tgt) = if sharded {
        let gmax = comm.all_reduce_tensor(max.clone(), ReduceOp::Max)?;
        let sum = sum * (max - gmax.clone()).exp();
        let mut fused = comm.all_reduce_sum_fused_tensors(vec![sum, tgt])?;
        let tgt = fused.pop().expect("two tensors");
        let sum = fused.pop().expect("two tensors");
        (gmax, sum, tgt)
    } else {
        (max, sum, tgt)
    };
    let lse = max + sum.log();
    let mut loss: f64 = (lse.clone() - tgt)
        .sum()
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .map_or(f64::NAN, |v| v[0]);
    if !config.loss.sharded && comm.world_size() > 1 {
        let mut l = [loss];
        comm.all_reduce(&mut l, ReduceOp::Sum)?;
        loss = l[0];
    }
    let loss = loss / batch_norm as f64;

    // Backward: recompute each chunk, g = dL/dz (times the margin's chain factors).
    let inv_batch = 1.0 / batch_norm as f64;
    let mut dxop = Tensor::<B, 2>::zeros([rows, d], &device);
    let mut dws = Vec::with_capacity(bounds.len());
    let mut dbs = Vec::with_capacity(bounds.len());
    for &(c0, c1) in &bounds {
        let ch = chunk_logits(&kind, &xop, &ws, bs.as_ref(), &targets, c0, c1, &device);
        let mut g = ((ch.z - lse.clone()).exp() - ch.target.clone().float()).mul_scalar(inv_batch);
        if let LossKind::Margin(p) = &kind {
            let kk = c1 - c0;
            g = g
                .clone()
                .mask_where(ch.target, g * ch.dpsi.expand([rows, kk]))
                .mul_scalar(p.scale);
            if let Some(f) = ch.filtered {
                g = g.mask_fill(f, 0.0);
            }
        }
        dxop = dxop + g.clone().matmul(ch.w_op.clone());
        let dw_op = g.clone().transpose().matmul(xop.clone());
        let dw = match ch.inv_wnorm {
            // dL/dw = (dL/dwn - (dL/dwn . wn) wn) / |w|
            Some(inv) => (dw_op.clone() - dw_op.mul(ch.w_op.clone()).sum_dim(1) * ch.w_op) * inv,
            None => dw_op,
        };
        dws.push(dw);
        if bs.is_some() {
            dbs.push(g.sum_dim(0).reshape([c1 - c0]));
        }
    }
    let dws = Tensor::cat(dws, 0);
    let mut grad_weight = match &indices {
        None => dws,
        Some(idx) => Tensor::zeros([shard.len, d], &device).select_assign(
            0,
            idx.clone(),
            dws,
            IndexingUpdateOp::Add,
        ),
    };
    let mut grad_bias = (!dbs.is_empty()).then(|| {
        let db = Tensor::cat(dbs, 0);
        match &indices {
            None => db,
            Some(idx) => Tensor::zeros([shard.len], &device).select_assign(
                0,
                idx.clone(),
                db,
                IndexingUpdateOp::Add,
            ),
        }
    });
    if !config.loss.sharded && comm.world_size() > 1 {
        grad_weight = comm.all_reduce_tensor(grad_weight, ReduceOp::Sum)?;
        if let Some(gb) = grad_bias.take() {
            grad_bias = Some(comm.all_reduce_tensor(gb, ReduceOp::Sum)?);
        }
    }

    // reduce-scatter dXn to the rows' owners, then the feature normalisation's backward.
    let (dx_local, first) = if sharded {
        let first: usize = row_counts[..rank].iter().sum();
        (comm.reduce_scatter_rows(dxop, &row_counts)?, first)
    } else {
        (dxop, 0)
    };
    let grad_features = match inv_xnorm {
        Some(inv) => {
            let xn = xop.narrow(0, first, b_local);
            let inv = inv.narrow(0, first, b_local);
            let proj = (dx_local.clone() * xn.clone()).sum_dim(1);
            (dx_local - xn * proj) * inv
        }
        None => dx_local,
    };
    Ok(BurnHeadOutput {
        loss,
        grad_features,
        grad_weight,
        grad_bias,
    })
}
