//! The CPU kernel of the head: class tiles on rayon workers, `gemm` products with fused
//! epilogues, and buffers reused across tiles and steps.
//!
//! The sampled classes of the shard are split into one contiguous range per worker (thread).
//! Each worker walks its range in tiles of `K` classes: the tile's weight rows, one `[B, K]`
//! block of logits and its own `[B, D]` feature-gradient accumulator stay in that core's cache.
//! Workers' partial results (row statistics, feature gradient) are merged in worker order, so
//! a run is reproducible for a given thread count.
//!
//! Two paths, chosen by [`Plan`]:
//! - materialised: the forward pass keeps every tile's logits (`B x C_s` values) for the
//!   backward pass: `6 B D C_s` flops;
//! - chunked: the forward pass keeps only the row statistics and the backward pass recomputes
//!   each tile's logits: `8 B D C_s` flops, memory `O(B K + K D + B D)` per worker.

#[macro_use]
mod simd;
pub mod gemm;
pub mod rows;
pub mod stored;
pub mod tile;
pub mod topk;
pub mod yardstick;

use crate::float::Precision;
use crate::rounding::{self, RoundedTensor};
use crate::sampling::SampledClasses;
use plsc_comm::Element;
use rayon::prelude::*;
use std::ops::Range;
use stored::{RowRounding, Rows, RowsMut};
use tile::{RowStats, TileInfo, TileLoss};

/// Default class-tile width: a `[128, 256]` logit block plus two `[256, 512]` row blocks fit a
/// 2 MiB L2 cache in f32.
pub const DEFAULT_TILE: usize = 256;

/// Class ranges per thread (see [`Plan::new`]).
pub const RANGES_PER_THREAD: usize = 4;

/// How one step is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Keep all logits between the forward and backward pass.
    pub materialise: bool,
    /// Class-tile width `K`.
    pub tile: usize,
    /// Sampled positions handled by each worker.
    pub ranges: Vec<Range<usize>>,
}

impl Plan {
    /// Chooses the path: an explicit `chunk_size` below the sampled count forces chunking with
    /// that tile, one at or above it forces materialising; otherwise the logits are kept when
    /// `rows * classes` values (plus the per-worker tiles) fit `budget_bytes`.
    pub fn new(
        rows: usize,
        dim: usize,
        classes: usize,
        threads: usize,
        chunk_size: Option<usize>,
        budget_bytes: usize,
        elem: usize,
    ) -> Self {
        // A few class ranges per thread, so rayon can even out a thread that runs slow (a busy
        // core), but never ranges narrower than a tile.
        let workers = (threads.max(1) * RANGES_PER_THREAD)
            .min(classes.div_ceil(chunk_size.unwrap_or(DEFAULT_TILE).max(1)))
            .max(1);
        let per_worker = |k: usize| (rows * k + 2 * k * dim + rows * dim + 4 * k) * elem;
        let (materialise, mut tile) = match chunk_size {
            Some(k) if k >= classes => (true, DEFAULT_TILE),
            Some(k) => (false, k.max(1)),
            None => {
                let fixed = workers * per_worker(DEFAULT_TILE);
                (rows * classes * elem + fixed <= budget_bytes, DEFAULT_TILE)
            }
        };
        if chunk_size.is_none() && !materialise {
            while tile > 8 && workers * per_worker(tile) > budget_bytes {
                tile /= 2;
            }
        }
        tile = tile.min(classes.max(1));
        let ranges = (0..workers)
            .map(|w| (classes * w / workers)..(classes * (w + 1) / workers))
            .collect();
        Self {
            materialise,
            tile,
            ranges,
        }
    }

    /// Flops of the matrix products of one step on this path.
    pub fn gemm_flops(&self, rows: usize, dim: usize, classes: usize) -> f64 {
        let per = 2.0 * rows as f64 * dim as f64 * classes as f64;
        if self.materialise {
            3.0 * per
        } else {
            4.0 * per
        }
    }
}

/// The kernel's two passes as methods of the element type, implemented for `f32` and `f64`
/// below. A generic function is compiled in the crate that instantiates it, with that crate's
/// optimisation level: called directly, the kernel's loops ran at the level of the caller (a
/// dev-profile binary: scalar, unvectorised code). These impls are concrete, so the kernel is
/// compiled here, with this crate's `opt-level = 3`, whoever calls it.
pub trait Kernel: Sized {
    /// [`forward`] for this element type.
    fn kernel_forward(
        ws: &mut Workspace<Self>,
        setup: &StepSetup<'_, Self>,
        plan: &Plan,
        weight: Rows<'_, Self>,
        bias: Option<&[Self]>,
    ) -> RowStats<Self>;

    /// [`backward`] for this element type.
    #[allow(clippy::too_many_arguments)]
    fn kernel_backward(
        ws: &mut Workspace<Self>,
        setup: &StepSetup<'_, Self>,
        plan: &Plan,
        lse: &[Self],
        dpsi: &[f64],
        inv_batch: Self,
        weight: RowsMut<'_, Self>,
        bias: Option<&mut [Self]>,
        sink: RowSink<'_, Self>,
    ) -> Vec<Self>;
}

macro_rules! impl_kernel {
    ($($t:ty),*) => {$(
        impl Kernel for $t {
            fn kernel_forward(
                ws: &mut Workspace<Self>,
                setup: &StepSetup<'_, Self>,
                plan: &Plan,
                weight: Rows<'_, Self>,
                bias: Option<&[Self]>,
            ) -> RowStats<Self> {
                forward_impl(ws, setup, plan, weight, bias)
            }

            fn kernel_backward(
                ws: &mut Workspace<Self>,
                setup: &StepSetup<'_, Self>,
                plan: &Plan,
                lse: &[Self],
                dpsi: &[f64],
                inv_batch: Self,
                weight: RowsMut<'_, Self>,
                bias: Option<&mut [Self]>,
                sink: RowSink<'_, Self>,
            ) -> Vec<Self> {
                backward_impl(ws, setup, plan, lse, dpsi, inv_batch, weight, bias, sink)
            }
        }
    )*};
}

impl_kernel!(f32, f64);

/// A float the host head computes in, with its CPU kernel ([`Kernel`]). Implemented for `f32`
/// and `f64`. It lives with the kernel (not in [`crate::float`]) so that the kernel and the
/// float type it is compiled for are one module: `float` holds only the operand [`Precision`].
pub trait HeadFloat:
    num_traits::Float + Element + std::fmt::Debug + std::iter::Sum + Send + Sync + 'static + Kernel
{
    fn from_f64(v: f64) -> Self;
    fn as_f64(self) -> f64;
    /// Rounds to the operand precision (identity for `F32` and for `f64`).
    fn round_to(self, p: Precision) -> Self;
    /// `out[i] = exp(x[i])` for `x[i] <= 0` (softmax numerators after the max is subtracted).
    fn exp_nonpositive_in_place(x: &mut [Self]);
    /// The slice itself when the type is f32 (16-bit storage rounds from f32).
    fn slice_as_f32(s: &[Self]) -> Option<&[f32]>;
    /// [`Self::slice_as_f32`], mutably.
    fn slice_as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
}

impl HeadFloat for f32 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn round_to(self, p: Precision) -> Self {
        match p {
            Precision::F32 => self,
            Precision::F16 => half::f16::from_f32(self).to_f32(),
            Precision::Bf16 => half::bf16::from_f32(self).to_f32(),
        }
    }
    fn exp_nonpositive_in_place(x: &mut [Self]) {
        crate::fast_exp::exp_in_place(x)
    }
    fn slice_as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn slice_as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
}

impl HeadFloat for f64 {
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn round_to(self, _p: Precision) -> Self {
        self
    }
    fn exp_nonpositive_in_place(x: &mut [Self]) {
        for v in x {
            *v = v.exp();
        }
    }
    fn slice_as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    fn slice_as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

/// Everything the kernel reads for one step.
pub struct StepSetup<'a, T> {
    pub rows: usize,
    pub dim: usize,
    /// Matrix-product operand rows `[rows, dim]`: normalised features (margin) or raw features
    /// (softmax), rounded to the operand precision.
    pub xop: &'a [T],
    /// Each row's target position in the sampled set, or [`tile::NO_TARGET`].
    pub targets: &'a [usize],
    pub sampled: &'a SampledClasses,
    /// Global index of the shard's first class.
    pub class_offset: usize,
    pub loss: TileLoss<T>,
    pub precision: Precision,
    pub calc_acc: bool,
    /// How updated rows are written back: `None` when they are stored in the compute type,
    /// else the step's stochastic-rounding keys (16-bit storage).
    pub rounding: Option<&'a StepRounding>,
}

/// A step's stochastic-rounding keys ([`crate::rounding`]): one per tensor, and the per-column
/// keys shared by every row.
#[derive(Debug, Clone)]
pub struct StepRounding {
    weight: u32,
    momentum: u32,
    columns: Vec<u32>,
}

impl StepRounding {
    /// The keys of step `step` of a run seeded with `seed`, for rows of width `dim`.
    pub fn new(seed: u64, step: u64, dim: usize) -> Self {
        Self {
            weight: rounding::step_key(seed, step, RoundedTensor::Weight),
            momentum: rounding::step_key(seed, step, RoundedTensor::Momentum),
            columns: stored::column_keys(dim),
        }
    }

    /// The rounding of global class `class`'s row of `tensor`.
    #[inline]
    pub fn row(&self, tensor: RoundedTensor, class: usize) -> RowRounding {
        let key = match tensor {
            RoundedTensor::Weight => self.weight,
            RoundedTensor::Momentum => self.momentum,
        };
        RowRounding {
            row_key: rounding::row_key(key, class as u64),
        }
    }

    /// The per-column keys.
    pub fn columns(&self) -> &[u32] {
        &self.columns
    }

    /// Writes row `r` (global class `class`) of weight `w` and momentum `v` back from their
    /// updated values in the compute type, each stochastically rounded with its own keys.
    pub fn write_back<T: HeadFloat>(
        &self,
        w: &mut RowsMut<'_, T>,
        v: &mut RowsMut<'_, T>,
        r: usize,
        class: usize,
        new_w: &[T],
        new_v: &[T],
    ) {
        let cols = self.columns();
        w.write_row(r, new_w, self.row(RoundedTensor::Weight, class), cols);
        v.write_row(r, new_v, self.row(RoundedTensor::Momentum, class), cols);
    }
}

/// What the backward pass does with each used weight row's gradient.
pub enum RowSink<'a, T> {
    /// Sparse SGD with momentum (PyTorch semantics, no dampening):
    /// `v <- mu v + (g + wd w)`, `w <- w - lr v`, on used rows only.
    Sgd {
        lr: T,
        momentum: T,
        weight_decay: T,
        velocity: RowsMut<'a, T>,
        bias_velocity: Option<&'a mut [T]>,
    },
    /// Write the gradient of used rows into dense buffers shaped like the weight (and bias).
    Gradient {
        weight: &'a mut [T],
        bias: Option<&'a mut [T]>,
    },
    /// Write the gradient of used rows into buffers of the sampled rows only, in sampled order
    /// (`[C_s, D]` and `[C_s]`).
    SampledGradient {
        weight: &'a mut [T],
        bias: Option<&'a mut [T]>,
    },
}

#[derive(Default)]
struct WorkerBuf<T> {
    wtile: Vec<T>,
    /// One weight row and one momentum row in the compute type (16-bit storage).
    wrow: Vec<T>,
    vrow: Vec<T>,
    ztile: Vec<T>,
    utile: Vec<T>,
    dxn: Vec<T>,
    scratch: Vec<T>,
    colsum: Vec<T>,
    bias_tile: Vec<T>,
    classes: Vec<i64>,
    stats: RowStats<T>,
}

impl<T: HeadFloat> WorkerBuf<T> {
    fn bytes(&self) -> usize {
        let e = size_of::<T>();
        (self.wtile.capacity()
            + self.wrow.capacity()
            + self.vrow.capacity()
            + self.ztile.capacity()
            + self.utile.capacity()
            + self.dxn.capacity()
            + self.scratch.capacity()
            + self.colsum.capacity()
            + self.bias_tile.capacity())
            * e
            + self.classes.capacity() * 8
            + self.stats.bytes()
    }
}

/// Buffers reused across tiles and steps (never shrunk, so a steady state allocates nothing).
#[derive(Default)]
pub struct Workspace<T> {
    workers: Vec<WorkerBuf<T>>,
    logits: Vec<T>,
    inv_norm: Vec<T>,
}

impl<T: HeadFloat> Workspace<T> {
    /// Bytes held by the kernel's buffers.
    pub fn bytes(&self) -> usize {
        self.workers.iter().map(WorkerBuf::bytes).sum::<usize>()
            + (self.logits.capacity() + self.inv_norm.capacity()) * size_of::<T>()
    }
}

/// Splits `buf` (`unit` elements per position) into one slice per range.
fn split_ranges<'b, E>(
    mut buf: &'b mut [E],
    ranges: &[Range<usize>],
    unit: usize,
) -> Vec<&'b mut [E]> {
    let mut out = Vec::with_capacity(ranges.len());
    let mut at = 0;
    for r in ranges {
        let (skip, rest) = buf.split_at_mut((r.start - at) * unit);
        let _ = skip;
        let (mine, rest) = rest.split_at_mut(r.len() * unit);
        out.push(mine);
        buf = rest;
        at = r.end;
    }
    out
}

/// The local class boundaries of the workers: worker `w` owns weight rows
/// `bounds[w]..bounds[w + 1]`; every class it uses lies in there because the sampled classes
/// are sorted.
fn class_bounds(sampled: &SampledClasses, ranges: &[Range<usize>], shard_len: usize) -> Vec<usize> {
    let mut b: Vec<usize> = ranges
        .iter()
        .map(|r| {
            if r.start == 0 {
                0
            } else {
                sampled.class_at(r.start)
            }
        })
        .collect();
    b.push(shard_len);
    b
}

/// [`split_rows`] of an optional per-class vector (bias, its momentum or gradient).
fn split_optional<'b, E>(buf: Option<&'b mut [E]>, bounds: &[usize]) -> Vec<Option<&'b mut [E]>> {
    match buf {
        Some(b) => split_rows(b, bounds, 1).into_iter().map(Some).collect(),
        None => bounds.windows(2).map(|_| None).collect(),
    }
}

fn split_rows<'b, E>(buf: &'b mut [E], bounds: &[usize], dim: usize) -> Vec<&'b mut [E]> {
    let ranges: Vec<Range<usize>> = bounds.windows(2).map(|w| w[0]..w[1]).collect();
    split_ranges(buf, &ranges, dim)
}

/// Whether the tile's rows can be read in place (stored in the compute type, no gather, no
/// rounding).
fn rows_in_place<T: HeadFloat>(setup: &StepSetup<'_, T>, weight: &Rows<'_, T>) -> bool {
    matches!(setup.sampled, SampledClasses::All { .. })
        && setup.precision == Precision::F32
        && weight.full().is_some()
}

/// Forward pass: fills the logits (materialised) and returns this rank's merged row statistics.
pub fn forward<T: HeadFloat>(
    ws: &mut Workspace<T>,
    setup: &StepSetup<'_, T>,
    plan: &Plan,
    weight: Rows<'_, T>,
    bias: Option<&[T]>,
) -> RowStats<T> {
    T::kernel_forward(ws, setup, plan, weight, bias)
}

fn forward_impl<T: HeadFloat>(
    ws: &mut Workspace<T>,
    setup: &StepSetup<'_, T>,
    plan: &Plan,
    weight: Rows<'_, T>,
    bias: Option<&[T]>,
) -> RowStats<T> {
    let (rows, dim) = (setup.rows, setup.dim);
    let classes = setup.sampled.len();
    let in_place = rows_in_place(setup, &weight);
    ws.workers
        .resize_with(plan.ranges.len(), WorkerBuf::default);
    ws.inv_norm.resize(classes, T::zero());
    if plan.materialise {
        ws.logits.resize(rows * classes, T::zero());
    }
    let invs = split_ranges(&mut ws.inv_norm, &plan.ranges, 1);
    let mut regions: Vec<Option<&mut [T]>> = if plan.materialise {
        split_ranges(&mut ws.logits, &plan.ranges, rows)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        plan.ranges.iter().map(|_| None).collect()
    };
    ws.workers
        .par_iter_mut()
        .zip(plan.ranges.par_iter())
        .zip(invs.into_par_iter())
        .zip(regions.par_iter_mut())
        .for_each(|(((buf, range), inv), region)| {
            let WorkerBuf {
                wtile,
                wrow,
                ztile,
                scratch,
                bias_tile,
                classes,
                stats,
                ..
            } = buf;
            stats.reset(rows, setup.calc_acc);
            let mut p0 = range.start;
            while p0 < range.end {
                let kc = plan.tile.min(range.end - p0);
                let tile_inv = &mut inv[p0 - range.start..p0 - range.start + kc];
                classes.clear();
                bias_tile.clear();
                if !in_place {
                    wtile.resize(kc * dim, T::zero());
                }
                for (j, inv_j) in tile_inv.iter_mut().enumerate() {
                    prefetch_ahead(&weight, dim, setup.sampled, p0 + j, p0 + kc, |c| c);
                    let class = setup.sampled.class_at(p0 + j);
                    classes.push((setup.class_offset + class) as i64);
                    let row = weight.row(class, dim, wrow);
                    rows::inv_norm_into(row, inv_j);
                    if !in_place {
                        copy_rounded(&mut wtile[j * dim..(j + 1) * dim], row, setup.precision);
                    }
                    if let Some(b) = bias {
                        bias_tile.push(b[class]);
                    }
                }
                let w_rows: &[T] = match weight.full() {
                    Some(w) if in_place => &w[p0 * dim..(p0 + kc) * dim],
                    _ => &wtile[..kc * dim],
                };
                let z: &mut [T] = match region {
                    Some(r) => &mut r[(p0 - range.start) * rows..(p0 - range.start + kc) * rows],
                    None => {
                        ztile.resize(rows * kc, T::zero());
                        &mut ztile[..rows * kc]
                    }
                };
                gemm::a_bt(z, setup.xop, w_rows, rows, kc, dim);
                let info = TileInfo {
                    kc,
                    p0,
                    inv_norm: tile_inv,
                    bias: bias_tile,
                    classes,
                };
                tile::transform(z, rows, &info, setup.targets, &setup.loss, stats);
                tile::accumulate_stats(z, rows, kc, scratch, stats);
                p0 += kc;
            }
        });
    merge_stats(&ws.workers, rows, setup.calc_acc)
}

/// With Partial FC, starts loading the row (of `rows`, `[_, dim]`) of the sampled position
/// [`rows::PREFETCH_ROWS_AHEAD`] after `pos`, if it is below `end`: the sampled rows lie at
/// random places, where the hardware prefetcher cannot follow. `local` maps a shard-local class
/// to its row index in `rows`. Nothing when every class is used (the rows are contiguous).
fn prefetch_ahead<T: HeadFloat>(
    rows_of: &Rows<'_, T>,
    dim: usize,
    sampled: &SampledClasses,
    pos: usize,
    end: usize,
    local: impl Fn(usize) -> usize,
) {
    let ahead = pos + rows::PREFETCH_ROWS_AHEAD;
    if ahead < end && !matches!(sampled, SampledClasses::All { .. }) {
        rows_of.prefetch_row(local(sampled.class_at(ahead)), dim);
    }
}

/// `to = from`, rounded to the operand precision.
#[inline]
fn copy_rounded<T: HeadFloat>(to: &mut [T], from: &[T], precision: Precision) {
    if precision == Precision::F32 {
        to.copy_from_slice(from);
    } else {
        for (d, s) in to.iter_mut().zip(from) {
            *d = s.round_to(precision);
        }
    }
}

/// Copies the tile's weight rows, converted to the compute type and rounded to the operand
/// precision, into `dst`. `local` maps a shard-local class to its row index in `weight`.
fn gather_rows<T: HeadFloat>(
    dst: &mut Vec<T>,
    weight: &Rows<'_, T>,
    setup: &StepSetup<'_, T>,
    p0: usize,
    kc: usize,
    local: impl Fn(usize) -> usize,
) {
    let dim = setup.dim;
    dst.resize(kc * dim, T::zero());
    for j in 0..kc {
        prefetch_ahead(weight, dim, setup.sampled, p0 + j, p0 + kc, &local);
        let r = local(setup.sampled.class_at(p0 + j));
        let to = &mut dst[j * dim..(j + 1) * dim];
        match weight.full() {
            Some(w) => copy_rounded(to, &w[r * dim..(r + 1) * dim], setup.precision),
            None => {
                weight.read(r * dim..(r + 1) * dim, to);
                if setup.precision != Precision::F32 {
                    for v in to.iter_mut() {
                        *v = v.round_to(setup.precision);
                    }
                }
            }
        }
    }
}

fn merge_stats<T: HeadFloat>(
    workers: &[WorkerBuf<T>],
    rows: usize,
    with_topk: bool,
) -> RowStats<T> {
    let mut out = RowStats::default();
    out.reset(rows, with_topk);
    for w in workers {
        let s = &w.stats;
        if s.max.len() != rows {
            continue;
        }
        for i in 0..rows {
            let (m0, m1) = (out.max[i], s.max[i]);
            let m = if m1 > m0 { m1 } else { m0 };
            if m != T::neg_infinity() {
                let a = if m0 == T::neg_infinity() {
                    T::zero()
                } else {
                    out.sum[i] * (m0 - m).exp()
                };
                let b = if m1 == T::neg_infinity() {
                    T::zero()
                } else {
                    s.sum[i] * (m1 - m).exp()
                };
                out.sum[i] = a + b;
                out.max[i] = m;
            }
            if s.has_target[i] {
                out.has_target[i] = true;
                out.target[i] = s.target[i];
                out.dpsi[i] = s.dpsi[i];
            }
            if with_topk {
                out.topk[i].merge(&s.topk[i]);
            }
        }
    }
    out
}

/// Backward pass: computes the gradient of every used weight row (handed to `sink`) and
/// returns this rank's partial gradient of the operand rows `[rows, dim]` (before any
/// reduce-scatter or normalisation backward).
#[allow(clippy::too_many_arguments)]
pub fn backward<T: HeadFloat>(
    ws: &mut Workspace<T>,
    setup: &StepSetup<'_, T>,
    plan: &Plan,
    lse: &[T],
    dpsi: &[f64],
    inv_batch: T,
    weight: RowsMut<'_, T>,
    bias: Option<&mut [T]>,
    sink: RowSink<'_, T>,
) -> Vec<T> {
    T::kernel_backward(ws, setup, plan, lse, dpsi, inv_batch, weight, bias, sink)
}

/// What one worker does with its rows' gradients (its part of the [`RowSink`]).
enum Part<'p, T> {
    Sgd {
        velocity: RowsMut<'p, T>,
        bias_velocity: Option<&'p mut [T]>,
        lr: T,
        mu: T,
        wd: T,
    },
    /// Dense buffers indexed by local class (minus the worker's first class).
    Grad(&'p mut [T], Option<&'p mut [T]>),
    /// Buffers indexed by sampled position (minus the worker's first position).
    SampledGrad(&'p mut [T], Option<&'p mut [T]>),
}

/// The sink split into one part per worker: by class bounds (weight-shaped buffers) or by
/// sampled position ranges (sampled-row buffers).
fn split_sink<'p, T: HeadFloat>(
    sink: RowSink<'p, T>,
    bounds: &[usize],
    ranges: &[Range<usize>],
    dim: usize,
) -> Vec<Part<'p, T>> {
    match sink {
        RowSink::Sgd {
            lr,
            momentum,
            weight_decay,
            velocity,
            bias_velocity,
        } => {
            let v = velocity.split(bounds, dim);
            let bv = split_optional(bias_velocity, bounds);
            v.into_iter()
                .zip(bv)
                .map(|(velocity, bias_velocity)| Part::Sgd {
                    velocity,
                    bias_velocity,
                    lr,
                    mu: momentum,
                    wd: weight_decay,
                })
                .collect()
        }
        RowSink::Gradient { weight, bias } => {
            let g = split_rows(weight, bounds, dim);
            let gb = split_optional(bias, bounds);
            g.into_iter()
                .zip(gb)
                .map(|(a, b)| Part::Grad(a, b))
                .collect()
        }
        RowSink::SampledGradient { weight, bias } => {
            let g = split_ranges(weight, ranges, dim);
            let gb: Vec<Option<&mut [T]>> = match bias {
                Some(b) => split_ranges(b, ranges, 1).into_iter().map(Some).collect(),
                None => ranges.iter().map(|_| None).collect(),
            };
            g.into_iter()
                .zip(gb)
                .map(|(a, b)| Part::SampledGrad(a, b))
                .collect()
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn backward_impl<T: HeadFloat>(
    ws: &mut Workspace<T>,
    setup: &StepSetup<'_, T>,
    plan: &Plan,
    lse: &[T],
    dpsi: &[f64],
    inv_batch: T,
    weight: RowsMut<'_, T>,
    bias: Option<&mut [T]>,
    sink: RowSink<'_, T>,
) -> Vec<T> {
    let (rows, dim) = (setup.rows, setup.dim);
    let shard_len = weight.as_rows().len() / dim.max(1);
    let in_place = rows_in_place(setup, &weight.as_rows());
    let bounds = class_bounds(setup.sampled, &plan.ranges, shard_len);
    let weights = weight.split(&bounds, dim);
    let biases = split_optional(bias, &bounds);
    let parts = split_sink(sink, &bounds, &plan.ranges, dim);
    let invs: Vec<&[T]> = plan
        .ranges
        .iter()
        .map(|r| &ws.inv_norm[r.clone()])
        .collect();
    let regions: Vec<Option<&[T]>> = plan
        .ranges
        .iter()
        .map(|r| {
            plan.materialise
                .then(|| &ws.logits[r.start * rows..r.end * rows])
        })
        .collect();
    let is_margin = matches!(setup.loss, TileLoss::Margin { .. });
    ws.workers
        .par_iter_mut()
        .zip(plan.ranges.par_iter())
        .zip(weights.into_par_iter())
        .zip(biases.into_par_iter())
        .zip(parts.into_par_iter())
        .zip(invs.into_par_iter())
        .zip(regions.into_par_iter())
        .zip(bounds.par_windows(2))
        .for_each(
            |(((((((buf, range), mut wslice), mut bslice), mut part), inv), region), bound)| {
                let WorkerBuf {
                    wtile,
                    wrow,
                    vrow,
                    ztile,
                    utile,
                    dxn,
                    colsum,
                    bias_tile,
                    classes,
                    stats,
                    ..
                } = buf;
                let off = bound[0];
                dxn.clear();
                dxn.resize(rows * dim, T::zero());
                stats.reset(rows, false);
                let mut p0 = range.start;
                while p0 < range.end {
                    let kc = plan.tile.min(range.end - p0);
                    let tile_inv = &inv[p0 - range.start..p0 - range.start + kc];
                    bias_tile.clear();
                    classes.clear();
                    for j in 0..kc {
                        let class = setup.sampled.class_at(p0 + j);
                        classes.push((setup.class_offset + class) as i64);
                        if let Some(b) = bslice.as_deref() {
                            bias_tile.push(b[class - off]);
                        }
                    }
                    let materialised = region.is_some();
                    ztile.resize(rows * kc, T::zero());
                    let g: &mut [T] = &mut ztile[..rows * kc];
                    if let Some(r) = region {
                        // The kept logits are copied into the cache-resident tile, where they
                        // turn into the gradient: the big buffer is only read, never written
                        // back.
                        g.copy_from_slice(
                            &r[(p0 - range.start) * rows..(p0 - range.start + kc) * rows],
                        );
                    }
                    {
                        let stored = wslice.as_rows();
                        let w_rows: &[T] = match stored.full() {
                            Some(w) if in_place => &w[(p0 - off) * dim..(p0 - off + kc) * dim],
                            _ => {
                                gather_rows(wtile, &stored, setup, p0, kc, |c| c - off);
                                &wtile[..kc * dim]
                            }
                        };
                        let info = TileInfo {
                            kc,
                            p0,
                            inv_norm: tile_inv,
                            bias: bias_tile,
                            classes,
                        };
                        if !materialised {
                            gemm::a_bt(g, setup.xop, w_rows, rows, kc, dim);
                            tile::transform(g, rows, &info, setup.targets, &setup.loss, stats);
                        }
                        colsum.resize(kc, T::zero());
                        let sums = bslice.is_some().then_some(&mut colsum[..kc]);
                        tile::gradient(
                            g,
                            rows,
                            &info,
                            setup.targets,
                            lse,
                            dpsi,
                            inv_batch,
                            &setup.loss,
                            setup.precision,
                            sums,
                        );
                        gemm::acc_a_b(dxn, g, w_rows, rows, dim, kc);
                    }
                    utile.resize(kc * dim, T::zero());
                    gemm::at_b(utile, g, setup.xop, kc, dim, rows);
                    let half = !matches!(wslice, RowsMut::Full(_));
                    for j in 0..kc {
                        if let Part::Sgd { velocity, .. } = &part {
                            let sampled = setup.sampled;
                            let v = velocity.as_rows();
                            prefetch_ahead(&v, dim, sampled, p0 + j, p0 + kc, |c| c - off);
                        }
                        let class = setup.sampled.class_at(p0 + j);
                        let r = class - off;
                        let u = &mut utile[j * dim..(j + 1) * dim];
                        // The row in the compute type: in place, or converted from storage.
                        if half {
                            wrow.resize(dim, T::zero());
                            wslice.as_rows().read(r * dim..(r + 1) * dim, wrow);
                        }
                        let w: &mut [T] = match wslice.full_row(r, dim) {
                            Some(w) => w,
                            None => &mut wrow[..dim],
                        };
                        if is_margin {
                            // dL/dw = u - (u . w) w / |w|^2: the weight normalisation's backward.
                            rows::project_out(u, w, tile_inv[j] * tile_inv[j]);
                        }
                        match &mut part {
                            Part::Sgd {
                                velocity,
                                bias_velocity,
                                lr,
                                mu,
                                wd,
                            } => {
                                let (lr, mu, wd) = (*lr, *mu, *wd);
                                match velocity.full_row(r, dim) {
                                    Some(v) => rows::sgd_row(w, v, u, lr, mu, wd),
                                    None => {
                                        vrow.resize(dim, T::zero());
                                        velocity.as_rows().read(r * dim..(r + 1) * dim, vrow);
                                        rows::sgd_row(w, vrow, u, lr, mu, wd);
                                    }
                                }
                                if let Some(keys) = setup.rounding.filter(|_| half) {
                                    let global = setup.class_offset + class;
                                    keys.write_back(
                                        &mut wslice,
                                        velocity,
                                        r,
                                        global,
                                        &wrow[..dim],
                                        &vrow[..dim],
                                    );
                                }
                                if let (Some(b), Some(bv)) =
                                    (bslice.as_deref_mut(), bias_velocity.as_deref_mut())
                                {
                                    bv[r] = mu * bv[r] + (colsum[j] + wd * b[r]);
                                    b[r] = b[r] - lr * bv[r];
                                }
                            }
                            Part::Grad(gw, gb) => {
                                gw[r * dim..(r + 1) * dim].copy_from_slice(u);
                                if let Some(gb) = gb.as_deref_mut() {
                                    gb[r] = colsum[j];
                                }
                            }
                            Part::SampledGrad(gw, gb) => {
                                let q = p0 + j - range.start;
                                gw[q * dim..(q + 1) * dim].copy_from_slice(u);
                                if let Some(gb) = gb.as_deref_mut() {
                                    gb[q] = colsum[j];
                                }
                            }
                        }
                    }
                    p0 += kc;
                }
            },
        );
    let mut out = vec![T::zero(); rows * dim];
    for w in &ws.workers {
        for (o, v) in out.iter_mut().zip(&w.dxn) {
            *o = *o + *v;
        }
    }
    out
}
