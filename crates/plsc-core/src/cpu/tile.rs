//! What the head does to one tile of logits: the `[B, K]` block of a class tile, row-major.
//!
//! Forward (`transform` then `accumulate_stats`), on raw products `r_ij = xop_i . w_j`:
//!
//! ```text
//! softmax:  z_ij = r_ij + b_j
//! margin:   c_ij = clamp(r_ij / |w_j|, -1, 1)         (xop rows are already unit length)
//!           c_ij = 0 where j != y_i and c_ij > t        (inter-class filtering, if on)
//!           z_ij = s c_ij,  z_iy = s psi(c_iy)          (psi: crate::margin)
//! ```
//!
//! and the running softmax statistics of each row: `M_i = max_j z_ij` and
//! `S_i = sum_j exp(z_ij - M_i)`, merged tile by tile (`S <- S e^(M - M') + sum e^(z - M')`).
//!
//! Backward (`gradient`), with `lse_i = M_i + ln S_i` after the all-reduce, `p_ij = exp(z_ij -
//! lse_i)` and the global-batch normaliser `n`:
//!
//! ```text
//! dL/dz_ij  = (p_ij - [j = y_i]) / n
//! softmax:  g_ij = dL/dz_ij
//! margin:   g_ij = dL/dz_ij * s * psi'(c_iy)^[j = y_i] / |w_j|   (0 where filtered)
//! ```
//!
//! so that `dL/dxop = g . W` and `dL/dw_j = g_j^T . xop` (margin: before the projection of the
//! weight normalisation, see `crate::cpu::rows`). Filtered entries are stored as `-0.0`, a
//! value a real logit `s c` only takes for an exactly orthogonal pair, to mark them for the
//! backward pass without a separate mask.

use super::HeadFloat;
use super::rows::{max_of, sum_of};
use super::topk::TopK;
use crate::float::Precision;
use crate::margin::Margin;

/// The loss-specific constants of the tile math.
#[derive(Debug, Clone, Copy)]
pub enum TileLoss<T> {
    Softmax,
    Margin {
        margin: Margin,
        scale: T,
        filter: Option<T>,
    },
}

/// Where a row's target class lies relative to a tile.
pub const NO_TARGET: usize = usize::MAX;

/// The per-row results a worker keeps across its tiles.
#[derive(Debug, Default, Clone)]
pub struct RowStats<T> {
    pub max: Vec<T>,
    pub sum: Vec<T>,
    /// The target logit `z_iy` where this worker holds the target, else 0.
    pub target: Vec<T>,
    /// `psi'(c_iy)` where this worker holds the target.
    pub dpsi: Vec<f64>,
    pub has_target: Vec<bool>,
    pub topk: Vec<TopK>,
}

impl<T: HeadFloat> RowStats<T> {
    pub fn reset(&mut self, rows: usize, with_topk: bool) {
        self.max.clear();
        self.max.resize(rows, T::neg_infinity());
        self.sum.clear();
        self.sum.resize(rows, T::zero());
        self.target.clear();
        self.target.resize(rows, T::zero());
        self.dpsi.clear();
        self.dpsi.resize(rows, 1.0);
        self.has_target.clear();
        self.has_target.resize(rows, false);
        self.topk.clear();
        if with_topk {
            self.topk.resize(rows, TopK::default());
        }
    }

    pub fn bytes(&self) -> usize {
        (self.max.capacity() + self.sum.capacity() + self.target.capacity()) * size_of::<T>()
            + self.dpsi.capacity() * 8
            + self.has_target.capacity()
            + self.topk.capacity() * size_of::<TopK>()
    }
}

/// The tile's position: columns `0..kc` are the sampled positions `p0..p0 + kc`.
pub struct TileInfo<'a, T> {
    pub kc: usize,
    pub p0: usize,
    /// `1 / |w_j|` for the tile's columns (margin losses).
    pub inv_norm: &'a [T],
    /// `b_j` for the tile's columns (softmax).
    pub bias: &'a [T],
    /// Global class index of each column (for the accuracy).
    pub classes: &'a [i64],
}

impl<T> TileInfo<'_, T> {
    /// The column of sampled position `pos` in this tile, or [`NO_TARGET`].
    #[inline]
    pub fn column_of(&self, pos: usize) -> usize {
        if pos != NO_TARGET && pos >= self.p0 && pos < self.p0 + self.kc {
            pos - self.p0
        } else {
            NO_TARGET
        }
    }
}

with_avx2! {
/// Turns raw products into logits in place (see the module doc); records target logits,
/// `psi'` and, when `stats.topk` is not empty, the running top-k of `s c` (or `z` for softmax).
pub fn transform<T: HeadFloat>(
    z: &mut [T],
    rows: usize,
    tile: &TileInfo<'_, T>,
    targets: &[usize],
    loss: &TileLoss<T>,
    stats: &mut RowStats<T>,
) {
    let kc = tile.kc;
    let with_topk = !stats.topk.is_empty();
    for i in 0..rows {
        let row = &mut z[i * kc..(i + 1) * kc];
        let t = targets[i];
        let jt = tile.column_of(t);
        match loss {
            TileLoss::Softmax => {
                for (v, b) in row.iter_mut().zip(tile.bias) {
                    *v = *v + *b;
                }
                if jt != NO_TARGET {
                    stats.target[i] = row[jt];
                    stats.has_target[i] = true;
                }
                if with_topk {
                    for (j, v) in row.iter().enumerate() {
                        stats.topk[i].offer(v.as_f64(), tile.classes[j]);
                    }
                }
            }
            TileLoss::Margin {
                margin,
                scale,
                filter,
            } => {
                let one = T::one();
                let clamp = |v: T| {
                    if v > one {
                        one
                    } else if v < -one {
                        -one
                    } else {
                        v
                    }
                };
                let target = (jt != NO_TARGET).then(|| {
                    let c = clamp(row[jt] * tile.inv_norm[jt]);
                    margin.target(c.as_f64())
                });
                if with_topk {
                    for (j, v) in row.iter().enumerate() {
                        let c = clamp(*v * tile.inv_norm[j]);
                        stats.topk[i].offer((*scale * c).as_f64(), tile.classes[j]);
                    }
                }
                match filter {
                    None => {
                        for (v, inv) in row.iter_mut().zip(tile.inv_norm) {
                            *v = *scale * clamp(*v * *inv);
                        }
                    }
                    Some(th) => {
                        let marker = -T::zero();
                        for (v, inv) in row.iter_mut().zip(tile.inv_norm) {
                            let c = clamp(*v * *inv);
                            *v = if c > *th { marker } else { *scale * c };
                        }
                    }
                }
                if let Some((psi, dpsi)) = target {
                    let zt = *scale * T::from_f64(psi);
                    row[jt] = zt;
                    stats.target[i] = zt;
                    stats.dpsi[i] = dpsi;
                    stats.has_target[i] = true;
                }
            }
        }
    }
}
}

with_avx2! {
/// Merges a tile of logits into the running `max` and `sum` of each row.
pub fn accumulate_stats<T: HeadFloat>(
    z: &[T],
    rows: usize,
    kc: usize,
    scratch: &mut Vec<T>,
    stats: &mut RowStats<T>,
) {
    scratch.resize(kc, T::zero());
    for i in 0..rows {
        let row = &z[i * kc..(i + 1) * kc];
        let tile_max = max_of(row);
        let old = stats.max[i];
        let new = if tile_max > old { tile_max } else { old };
        if new == T::neg_infinity() {
            continue;
        }
        for (s, v) in scratch.iter_mut().zip(row) {
            *s = *v - new;
        }
        T::exp_nonpositive_in_place(scratch);
        let rescale = if old == T::neg_infinity() {
            T::zero()
        } else {
            (old - new).exp()
        };
        stats.sum[i] = stats.sum[i] * rescale + sum_of(scratch);
        stats.max[i] = new;
    }
}
}

with_avx2! {
/// Turns a tile of logits into the gradient `g` in place (see the module doc) and rounds it to
/// the operand precision. `col_sums`, when given, receives `sum_i g_ij` (the bias gradient).
#[allow(clippy::too_many_arguments)]
pub fn gradient<T: HeadFloat>(
    z: &mut [T],
    rows: usize,
    tile: &TileInfo<'_, T>,
    targets: &[usize],
    lse: &[T],
    dpsi: &[f64],
    inv_batch: T,
    loss: &TileLoss<T>,
    precision: Precision,
    col_sums: Option<&mut [T]>,
) {
    let kc = tile.kc;
    for i in 0..rows {
        let row = &mut z[i * kc..(i + 1) * kc];
        let t = targets[i];
        let jt = tile.column_of(t);
        let filtered: Vec<usize> = match loss {
            TileLoss::Margin {
                filter: Some(_), ..
            } => row
                .iter()
                .enumerate()
                .filter(|(_, v)| **v == T::zero() && v.is_sign_negative())
                .map(|(j, _)| j)
                .collect(),
            _ => Vec::new(),
        };
        for v in row.iter_mut() {
            *v = *v - lse[i];
        }
        T::exp_nonpositive_in_place(row);
        if jt != NO_TARGET {
            row[jt] = row[jt] - T::one();
        }
        match loss {
            TileLoss::Softmax => {
                for v in row.iter_mut() {
                    *v = *v * inv_batch;
                }
            }
            TileLoss::Margin { scale, .. } => {
                let coef = *scale * inv_batch;
                for (v, inv) in row.iter_mut().zip(tile.inv_norm) {
                    *v = *v * coef * *inv;
                }
                if jt != NO_TARGET {
                    row[jt] = row[jt] * T::from_f64(dpsi[i]);
                }
                for j in filtered {
                    row[j] = T::zero();
                }
            }
        }
        if precision != Precision::F32 {
            for v in row.iter_mut() {
                *v = v.round_to(precision);
            }
        }
    }
    if let Some(sums) = col_sums {
        sums[..kc].fill(T::zero());
        for i in 0..rows {
            for (s, v) in sums.iter_mut().zip(&z[i * kc..(i + 1) * kc]) {
                *s = *s + *v;
            }
        }
    }
}
}
