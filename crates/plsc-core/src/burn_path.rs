//! The head on burn tensors, generic over the backend and the communicator: the path of the
//! GPU backends (`Cuda`, with NCCL device collectives) and, on `Flex`, the one tested against
//! the CPU kernel. [`crate::DeviceHead`] holds the weight shard on the device and runs one step
//! through the phases below; [`burn_head_step`] runs them on given tensors (tests, benchmarks).
//!
//! The distributed softmax of [`crate::ShardedHead::step`] (see `head.rs` for the math), one
//! named function per phase, each collective named where it happens:
//!
//! 1. [`gather`]: **all-gather** of the features (device collective) and of the labels:
//!    `X [B, D]`, `y [B]` in rank order.
//! 2. [`prepare`]: `Xn = X / |X|` (margin losses), this rank's sampled classes (Partial FC, the
//!    `(seed, step, rank)` rule of the CPU kernel), their weight rows `W_s [C_s, D]`, and the
//!    class tiles of at most [`tile_width`] columns, so that no `B x C_r` logits are held beyond
//!    the memory budget.
//! 3. [`forward_tiles`]: per tile `cos = Xn Wn^T` (operands in the configured precision,
//!    results in f32), the margin `psi(cos) = cos(m1 theta + m2) - m3` at the target, logits
//!    `z = s psi` / `s cos`, and per row the running max `M^r`, sum-exp `S^r` and target logit.
//!    Only the `B` target cosines of a tile visit the host, where `psi` and `psi'` are evaluated
//!    in f64 ([`crate::margin::Margin`]), as the CPU kernel does.
//! 4. [`reduce_statistics`]: **all-reduce (max)** of `M`; `S^r <- S^r exp(M^r - M)`; one fused
//!    **all-reduce (sum)** of `S` and the target logits. `lse_i = M_i + ln S_i`,
//!    `L = mean_i (lse_i - z_iy)`.
//! 5. [`backward_tiles`]: per tile again, `g = (softmax - onehot) / B`, times `s psi'` at the
//!    target; with `g'_ij = g_ij / |w_j|` (the CPU kernel's factoring, which keeps
//!    half-precision operands in f16's normal range): `dXn += g' W`, `u = g'^T Xn`, and through
//!    the weight normalisation `dW_j = u_j - (u_j . w_j) w_j / |w_j|^2`. The weight gradient
//!    covers the sampled rows only.
//! 6. [`scatter_feature_grad`]: **reduce-scatter (sum)** of `dXn` to the rows' owners, then
//!    `dx_i = (dXn_i - (dXn_i . Xn_i) Xn_i) / |x_i|`.
//!
//! The replicated head (`sharded = false`) skips the all-gather and the reduce-scatter; its
//! weight gradient is **all-reduced (sum)** instead ([`burn_head_step`] and the device head's
//! update do that).

use crate::cpu::tile::NO_TARGET;
use crate::cpu::topk::{TOPK, TopK};
use crate::error::HeadError;
use crate::float::Precision;
use crate::head::{HeadConfig, batch_classes, validate_labels};
use crate::loss::LossKind;
use crate::margin::Margin;
use crate::sampling::SampledClasses;
use crate::shard::ClassShard;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, IndexingUpdateOp, Int, Tensor, TensorData};
use plsc_comm::tensor::TensorComm;
use plsc_comm::{CommExt, ReduceOp};

/// Loss and gradients of one step of [`burn_head_step`] (dense weight gradient).
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

/// Bytes of f32 work tensors one tile column costs per global-batch row: logits, cosines,
/// exponentials, the gradient and the masks of the two passes, with headroom for the
/// backend's temporaries.
const TILE_BYTES_PER_ENTRY: usize = 8 * 4;

/// The class-tile width: `chunk_size` when set, else the widest tile whose `rows x K` work
/// tensors fit `memory_budget` (at least 1, at most the sampled class count).
pub fn tile_width(config: &HeadConfig, rows: usize, sampled: usize) -> usize {
    let from_budget = config.memory_budget / (rows.max(1) * TILE_BYTES_PER_ENTRY);
    config
        .chunk_size
        .unwrap_or(from_budget)
        .clamp(1, sampled.max(1))
}

/// Phase 1's result: the global batch as this rank sees it.
pub struct Gathered<B: Backend> {
    /// Features of the global batch `[B, D]` (this rank's rows only when not sharded).
    pub x: Tensor<B, 2>,
    /// Labels of the same rows.
    pub labels: Vec<i64>,
    /// Rows per rank (one entry, this rank's, when not sharded).
    pub row_counts: Vec<usize>,
    /// The first row of this rank's samples in `x`.
    pub first_row: usize,
    /// This rank's rows.
    pub local_rows: usize,
    /// The loss is the mean over this many rows (the global batch).
    pub batch_norm: usize,
    /// Whether the collectives of the sharded head run (sharded and more than one rank).
    pub distributed: bool,
}

/// Phase 1: checks the shapes and **all-gathers** features and labels (sharded head).
pub fn gather<B: Backend, C: TensorComm<B> + ?Sized>(
    comm: &C,
    config: &HeadConfig,
    features: Tensor<B, 2>,
    labels: &[i64],
) -> Result<Gathered<B>, HeadError> {
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
    let distributed = config.loss.sharded && comm.world_size() > 1;
    let (x, row_counts, labels_g) = if distributed {
        let (x, counts) = comm.all_gather_rows_varcount(features)?;
        let (lg, _) = comm.all_gather_varcount(labels)?;
        (x, counts, lg)
    } else {
        (features, vec![b_local], labels.to_vec())
    };
    validate_labels(&labels_g, &row_counts, config.num_classes)?;
    let batch_norm = if config.loss.sharded {
        labels_g.len()
    } else {
        let mut n = [b_local as i64];
        comm.all_reduce(&mut n, ReduceOp::Sum)?;
        n[0] as usize
    };
    let first_row = if distributed {
        row_counts[..rank].iter().sum()
    } else {
        0
    };
    Ok(Gathered {
        x,
        labels: labels_g,
        row_counts,
        first_row,
        local_rows: b_local,
        batch_norm,
        distributed,
    })
}

/// Phase 2's result: normalised features, the sampled classes and their rows, the tiles.
pub struct Prepared<B: Backend> {
    /// `Xn` (margin losses) or `X` (softmax), `[B, D]`, f32.
    pub xop: Tensor<B, 2>,
    /// `1 / |x_i|` `[B, 1]` (margin losses).
    pub inv_xnorm: Option<Tensor<B, 2>>,
    /// This rank's classes taking part.
    pub sampled: SampledClasses,
    /// Each row's target position in `sampled` ([`NO_TARGET`] when another rank owns it or it
    /// was not sampled).
    pub targets: Vec<usize>,
    /// The sampled rows' indices in the shard (`None`: every row).
    pub indices: Option<Tensor<B, 1, Int>>,
    /// The sampled weight rows `[C_s, D]`.
    pub ws: Tensor<B, 2>,
    /// The sampled bias entries (softmax).
    pub bs: Option<Tensor<B, 1>>,
    /// Class tiles `[c0, c1)` over the sampled rows.
    pub tiles: Vec<(usize, usize)>,
    /// The first global class of the shard (for the accuracy's class indices).
    pub class_offset: usize,
}

/// Phase 2: normalisation, class sampling, the sampled rows, the tiles.
pub fn prepare<B: Backend>(
    config: &HeadConfig,
    shard: ClassShard,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
    gathered: &Gathered<B>,
    step: u64,
) -> Prepared<B> {
    let device = gathered.x.device();
    let (sampled, targets) = batch_classes(shard, &gathered.labels, config, step);
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
    // The sampled rows in f32 (16-bit storage is cast row by row here, never the shard).
    let (ws, bs) = match &indices {
        None => (
            crate::device_rounding::to_f32(weight.clone()),
            bias.cloned(),
        ),
        Some(idx) => (
            crate::device_rounding::to_f32(weight.clone().select(0, idx.clone())),
            bias.map(|b| b.clone().select(0, idx.clone())),
        ),
    };
    let (xop, inv_xnorm) = match config.loss.kind {
        LossKind::Margin(_) => {
            let inv = inv_row_norms(&gathered.x);
            (gathered.x.clone() * inv.clone(), Some(inv))
        }
        LossKind::Softmax => (gathered.x.clone(), None),
    };
    let cs = sampled.len();
    let k = tile_width(config, gathered.labels.len(), cs);
    let tiles = (0..cs)
        .step_by(k)
        .map(|c0| (c0, (c0 + k).min(cs)))
        .collect();
    Prepared {
        xop,
        inv_xnorm,
        sampled,
        targets,
        indices,
        ws,
        bs,
        tiles,
        class_offset: shard.start,
    }
}

/// Phase 3's result: per-row statistics of this rank's classes, `[B, 1]` each.
pub struct RowStats<B: Backend> {
    /// Running max of the logits (`-inf` where the rank has no class).
    pub max: Tensor<B, 2>,
    /// Sum of `exp(z - max)`.
    pub sum: Tensor<B, 2>,
    /// The target logit (0 where this rank does not hold the target).
    pub target: Tensor<B, 2>,
    /// Per-row top-k of this rank's scores (when the accuracy is asked for).
    pub topk: Vec<TopK>,
}

/// Phase 3: the forward pass over this rank's class tiles.
pub fn forward_tiles<B: Backend>(
    config: &HeadConfig,
    p: &Prepared<B>,
    with_topk: bool,
) -> RowStats<B> {
    let device = p.xop.device();
    let rows = p.targets.len();
    let mut max = Tensor::<B, 2>::full([rows, 1], f32::NEG_INFINITY, &device);
    let mut sum = Tensor::<B, 2>::zeros([rows, 1], &device);
    let mut tgt = Tensor::<B, 2>::zeros([rows, 1], &device);
    let mut topk = if with_topk {
        vec![TopK::default(); rows]
    } else {
        Vec::new()
    };
    for &(c0, c1) in &p.tiles {
        let ch = tile_logits(config, p, c0, c1);
        if with_topk {
            offer_topk(&mut topk, ch.score.clone(), p, c0);
        }
        let new_max = max.clone().max_pair(ch.z.clone().max_dim(1));
        sum =
            sum * (max - new_max.clone()).exp() + (ch.z.clone() - new_max.clone()).exp().sum_dim(1);
        max = new_max;
        tgt = tgt + (ch.z * ch.target.float()).sum_dim(1);
    }
    // Rows whose max is still -inf (no class on this rank): their sum stays 0.
    let sum = sum.mask_fill(max.clone().equal_elem(f32::NEG_INFINITY), 0.0);
    RowStats {
        max,
        sum,
        target: tgt,
        topk,
    }
}

/// Phase 4: **all-reduce (max)** then one fused **all-reduce (sum)** of the rescaled sum-exp and
/// the target logits. Returns `lse [B, 1]` and the loss summed over the rows this rank
/// computed (the global batch when sharded).
pub fn reduce_statistics<B: Backend, C: TensorComm<B> + ?Sized>(
    comm: &C,
    gathered: &Gathered<B>,
    stats: RowStats<B>,
) -> Result<(Tensor<B, 2>, f64), HeadError> {
    let RowStats {
        max,
        sum,
        target: tgt,
        ..
    } = stats;
    let (max, sum, tgt) = if gathered.distributed {
        let gmax = comm.all_reduce_tensor(max.clone(), ReduceOp::Max)?;
        let sum = sum * (max - gmax.clone()).exp();
        let mut fused = comm.all_reduce_sum_fused_tensors(vec![sum, tgt])?;
        let (Some(tgt), Some(sum)) = (fused.pop(), fused.pop()) else {
            return Err(HeadError::Config {
                name: "communicator",
                detail: "the fused all-reduce returned fewer tensors than it was given".into(),
            });
        };
        (gmax, sum, tgt)
    } else {
        (max, sum, tgt)
    };
    let lse = max + sum.log();
    let loss_sum = scalar_f64((lse.clone() - tgt).sum());
    Ok((lse, loss_sum))
}

/// Phase 5's result.
pub struct TileGrads<B: Backend> {
    /// `dL/dXn` (or `dL/dX` for softmax) of the global batch `[B, D]`, this rank's classes'
    /// share.
    pub dxop: Tensor<B, 2>,
    /// `dL/dW` of the sampled rows `[C_s, D]`, in the order of `Prepared::sampled`.
    pub dws: Tensor<B, 2>,
    /// `dL/db` of the sampled entries (softmax).
    pub dbs: Option<Tensor<B, 1>>,
}

/// Phase 5: the backward pass over the same tiles (logits recomputed).
pub fn backward_tiles<B: Backend>(
    config: &HeadConfig,
    p: &Prepared<B>,
    lse: &Tensor<B, 2>,
    batch_norm: usize,
) -> TileGrads<B> {
    let device = p.xop.device();
    let [rows, d] = p.xop.dims();
    let inv_batch = 1.0 / batch_norm as f64;
    let mut dxop = Tensor::<B, 2>::zeros([rows, d], &device);
    let mut dws = Vec::with_capacity(p.tiles.len());
    let mut dbs = Vec::with_capacity(p.tiles.len());
    for &(c0, c1) in &p.tiles {
        let ch = tile_logits(config, p, c0, c1);
        let mut g = ((ch.z - lse.clone()).exp() - ch.target.clone().float()).mul_scalar(inv_batch);
        if let LossKind::Margin(m) = &config.loss.kind {
            let kk = c1 - c0;
            g = g
                .clone()
                .mask_where(ch.target, g * ch.dpsi.expand([rows, kk]))
                .mul_scalar(m.scale);
            if let Some(f) = ch.filtered {
                g = g.mask_fill(f, 0.0);
            }
        }
        let dw = match ch.inv_wnorm {
            // The CPU kernel's factoring: g' = g / |w_j| (so that the half-precision operands
            // keep f16's normal range), dX += g' W, u = g'^T Xn,
            // dL/dw = u - (u . w) w / |w|^2 (the weight normalisation's backward).
            Some(inv) => {
                let kk = c1 - c0;
                let gs = g.clone() * inv.clone().reshape([1, kk]);
                dxop = dxop + product(config.precision, &gs, &ch.w_raw, false);
                let u = product(config.precision, &gs.transpose(), &p.xop, false);
                let uw = u.clone().mul(ch.w_raw.clone()).sum_dim(1);
                u - uw * ch.w_raw * inv.square()
            }
            None => {
                dxop = dxop + product(config.precision, &g, &ch.w_op, false);
                product(config.precision, &g.clone().transpose(), &p.xop, false)
            }
        };
        dws.push(dw);
        if p.bs.is_some() {
            dbs.push(g.sum_dim(0).reshape([c1 - c0]));
        }
    }
    let dws = if dws.is_empty() {
        Tensor::zeros([0, d], &device)
    } else {
        Tensor::cat(dws, 0)
    };
    TileGrads {
        dxop,
        dws,
        dbs: (!dbs.is_empty()).then(|| Tensor::cat(dbs, 0)),
    }
}

/// Phase 6: **reduce-scatter (sum)** of `dXn` to the rows' owners, then the feature
/// normalisation's backward. Returns `dL/dx` of this rank's rows `[b, D]`.
pub fn scatter_feature_grad<B: Backend, C: TensorComm<B> + ?Sized>(
    comm: &C,
    gathered: &Gathered<B>,
    p: &Prepared<B>,
    dxop: Tensor<B, 2>,
) -> Result<Tensor<B, 2>, HeadError> {
    let dx_local = if gathered.distributed {
        comm.reduce_scatter_rows(dxop, &gathered.row_counts)?
    } else {
        dxop
    };
    Ok(match &p.inv_xnorm {
        Some(inv) => {
            let xn = p
                .xop
                .clone()
                .narrow(0, gathered.first_row, gathered.local_rows);
            let inv = inv
                .clone()
                .narrow(0, gathered.first_row, gathered.local_rows);
            let proj = (dx_local.clone() * xn.clone()).sum_dim(1);
            (dx_local - xn * proj) * inv
        }
        None => dx_local,
    })
}

/// The sampled rows' gradient as a dense `[C_r, D]` one (zero rows elsewhere).
pub fn densify<B: Backend, const D: usize>(
    sparse: Tensor<B, D>,
    indices: Option<&Tensor<B, 1, Int>>,
    dense_shape: [usize; D],
) -> Tensor<B, D> {
    match indices {
        None => sparse,
        Some(idx) => Tensor::zeros(dense_shape, &sparse.device()).select_assign(
            0,
            idx.clone(),
            sparse,
            IndexingUpdateOp::Add,
        ),
    }
}

/// One forward + backward step of the head on given tensors, through the phases above.
///
/// `weight` `[C_r, D]` and `bias` `[C_r]` are this rank's shard (the whole head when the loss
/// is not sharded); `features` `[b, D]` and `labels` `[b]` this rank's rows. The weight
/// gradient is dense (zero rows for classes not sampled); [`crate::DeviceHead`] updates the
/// sampled rows in place instead.
#[allow(clippy::too_many_arguments)]
pub fn burn_head_step<B: Backend, C: TensorComm<B> + ?Sized>(
    comm: &C,
    config: &HeadConfig,
    shard: ClassShard,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
    features: Tensor<B, 2>,
    labels: &[i64],
    step: u64,
) -> Result<BurnHeadOutput<B>, HeadError> {
    config.validate()?;
    let d = config.embedding_size;
    if weight.dims() != [shard.len, d] {
        return Err(HeadError::Shape {
            rank: comm.rank(),
            tensor: "weight",
            got: weight.dims().to_vec(),
            expected: vec![shard.len, d],
        });
    }
    let gathered = gather(comm, config, features, labels)?;
    let p = prepare(config, shard, &weight, bias.as_ref(), &gathered, step);
    let stats = forward_tiles(config, &p, false);
    let (lse, loss_sum) = reduce_statistics(comm, &gathered, stats)?;
    let loss = replicated_loss(comm, config, loss_sum)? / gathered.batch_norm as f64;
    let grads = backward_tiles(config, &p, &lse, gathered.batch_norm);
    let mut grad_weight = densify(grads.dws, p.indices.as_ref(), [shard.len, d]);
    let mut grad_bias = grads
        .dbs
        .map(|db| densify(db, p.indices.as_ref(), [shard.len]));
    if !config.loss.sharded && comm.world_size() > 1 {
        grad_weight = comm.all_reduce_tensor(grad_weight, ReduceOp::Sum)?;
        if let Some(gb) = grad_bias.take() {
            grad_bias = Some(comm.all_reduce_tensor(gb, ReduceOp::Sum)?);
        }
    }
    let grad_features = scatter_feature_grad(comm, &gathered, &p, grads.dxop)?;
    Ok(BurnHeadOutput {
        loss,
        grad_features,
        grad_weight,
        grad_bias,
    })
}

/// The loss sum over the global batch: the sharded head has it on every rank already; the
/// replicated head **all-reduces (sum)** its ranks' row sums.
pub(crate) fn replicated_loss<B: Backend, C: TensorComm<B> + ?Sized>(
    comm: &C,
    config: &HeadConfig,
    loss_sum: f64,
) -> Result<f64, HeadError> {
    if !config.loss.sharded && comm.world_size() > 1 {
        let mut l = [loss_sum];
        comm.all_reduce(&mut l, ReduceOp::Sum)?;
        return Ok(l[0]);
    }
    Ok(loss_sum)
}

/// The first value of a tensor as f64 (NaN when it cannot be read).
pub(crate) fn scalar_f64<B: Backend, const D: usize>(t: Tensor<B, D>) -> f64 {
    t.into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .map_or(f64::NAN, |v| v.first().copied().unwrap_or(f64::NAN))
}

/// `a b^T` (`transpose_b`) or `a b`, with the operands rounded to `precision` and the result
/// in f32: the half-precision products of mixed precision, accumulated by the backend in f32.
fn product<B: Backend>(
    precision: Precision,
    a: &Tensor<B, 2>,
    b: &Tensor<B, 2>,
    transpose_b: bool,
) -> Tensor<B, 2> {
    let b = if transpose_b {
        b.clone().transpose()
    } else {
        b.clone()
    };
    let half = match precision {
        Precision::F32 => return a.clone().matmul(b),
        Precision::F16 => DType::F16,
        Precision::Bf16 => DType::BF16,
    };
    a.clone().cast(half).matmul(b.cast(half)).cast(DType::F32)
}

/// One tile's logits and what its backward needs.
struct Tile<B: Backend> {
    /// Logits `[B, K]`.
    z: Tensor<B, 2>,
    /// The scores ranked for the accuracy: `s cos` (margin) or `z` (softmax), `[B, K]`.
    score: Tensor<B, 2>,
    /// Target entries `[B, K]`.
    target: Tensor<B, 2, Bool>,
    /// Filtered entries `[B, K]` (inter-class filtering).
    filtered: Option<Tensor<B, 2, Bool>>,
    /// `psi'` per row `[B, 1]` (1 where the target is not in the tile).
    dpsi: Tensor<B, 2>,
    /// `Wn` (margin) or `W` (softmax) of the tile `[K, D]`.
    w_op: Tensor<B, 2>,
    /// `W` of the tile `[K, D]`.
    w_raw: Tensor<B, 2>,
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

/// Logits of tile `[c0, c1)` of the sampled rows.
fn tile_logits<B: Backend>(config: &HeadConfig, p: &Prepared<B>, c0: usize, c1: usize) -> Tile<B> {
    let device = p.xop.device();
    let rows = p.targets.len();
    let k = c1 - c0;
    let wc = p.ws.clone().narrow(0, c0, k);
    let tpos: Vec<i64> = p
        .targets
        .iter()
        .map(|&t| {
            if t != NO_TARGET && (c0..c1).contains(&t) {
                (t - c0) as i64
            } else {
                -1
            }
        })
        .collect();
    let tpos = Tensor::<B, 1, Int>::from_data(TensorData::new(tpos, [rows]), &device)
        .reshape([rows, 1])
        .expand([rows, k]);
    let cols = Tensor::<B, 1, Int>::arange(0..k as i64, &device)
        .reshape([1, k])
        .expand([rows, k]);
    let target = tpos.equal(cols);
    match &config.loss.kind {
        LossKind::Softmax => {
            let mut z = product(config.precision, &p.xop, &wc, true);
            if let Some(b) = &p.bs {
                z = z + b.clone().narrow(0, c0, k).reshape([1, k]);
            }
            Tile {
                score: z.clone(),
                z,
                target,
                filtered: None,
                dpsi: Tensor::ones([rows, 1], &device),
                w_op: wc.clone(),
                w_raw: wc,
                inv_wnorm: None,
            }
        }
        LossKind::Margin(m) => {
            let inv_wnorm = inv_row_norms(&wc);
            let wn = wc.clone() * inv_wnorm.clone();
            let cos = product(config.precision, &p.xop, &wn, true).clamp(-1.0, 1.0);
            // The B target cosines go to the host for psi and psi' in f64.
            let cos_t: Vec<f32> = (cos.clone() * target.clone().float())
                .sum_dim(1)
                .into_data()
                .convert::<f32>()
                .into_vec()
                .unwrap_or_default();
            let margin = Margin::new(m);
            let (mut psi, mut dpsi) = (vec![0.0f32; rows], vec![1.0f32; rows]);
            for i in 0..rows.min(cos_t.len()) {
                let t = p.targets[i];
                if t != NO_TARGET && (c0..c1).contains(&t) {
                    let (a, b) = margin.target(f64::from(cos_t[i]));
                    psi[i] = a as f32;
                    dpsi[i] = b as f32;
                }
            }
            let filtered = m.interclass_filter.map(|t| {
                cos.clone()
                    .greater_elem(t)
                    .bool_and(target.clone().bool_not())
            });
            let score = cos.mul_scalar(m.scale);
            let mut z = score.clone();
            if let Some(f) = &filtered {
                z = z.mask_fill(f.clone(), 0.0);
            }
            let psi_z = column::<B>(psi, &device)
                .mul_scalar(m.scale)
                .expand([rows, k]);
            let z = z.mask_where(target.clone(), psi_z);
            Tile {
                z,
                score,
                target,
                filtered,
                dpsi: column(dpsi, &device),
                w_op: wn,
                w_raw: wc,
                inv_wnorm: Some(inv_wnorm),
            }
        }
    }
}

/// Offers each row's best `TOPK` scores of a tile (global class indices) to its running top-k.
fn offer_topk<B: Backend>(topk: &mut [TopK], score: Tensor<B, 2>, p: &Prepared<B>, c0: usize) {
    let [rows, k] = score.dims();
    let kk = TOPK.min(k);
    let (values, idx) = score.topk_with_indices(kk, 1);
    let values: Vec<f32> = values
        .into_data()
        .convert::<f32>()
        .into_vec()
        .unwrap_or_default();
    let idx: Vec<i64> = idx
        .into_data()
        .convert::<i64>()
        .into_vec()
        .unwrap_or_default();
    for i in 0..rows.min(topk.len()) {
        for j in 0..kk {
            let Some((&v, &c)) = values.get(i * kk + j).zip(idx.get(i * kk + j)) else {
                continue;
            };
            let class = p.class_offset + p.sampled.class_at(c0 + c as usize);
            topk[i].offer(f64::from(v), class as i64);
        }
    }
}
