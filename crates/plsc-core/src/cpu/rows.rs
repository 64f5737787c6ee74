//! Row-wise vector helpers: dot products, norms, the normalisation and its backward.
//!
//! Row normalisation is `xn = x / max(|x|, eps)` (PyTorch's `F.normalize`). Its backward, for an
//! incoming gradient `g = dL/dxn` and `|x| > eps`, is `dL/dx = (g - (g . xn) xn) / |x|`.

use super::HeadFloat;

/// The epsilon of the row normalisation (PyTorch's `F.normalize` default).
pub const NORM_EPS: f64 = 1e-12;

/// Dot product with eight independent accumulators (vectorisable, fixed summation order).
#[inline]
pub fn dot<T: HeadFloat>(a: &[T], b: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] = acc[l] + x[l] * y[l];
        }
    }
    let mut tail = T::zero();
    for (x, y) in ra.iter().zip(rb) {
        tail = tail + *x * *y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `1 / max(|row|, eps)`.
#[inline]
pub fn inv_norm<T: HeadFloat>(row: &[T]) -> T {
    let n = dot(row, row).sqrt();
    T::one() / n.max(T::from_f64(NORM_EPS))
}

with_avx2! {
/// `*out = 1 / max(|row|, eps)` ([`inv_norm`] compiled for the CPU's vector width).
pub fn inv_norm_into<T: HeadFloat>(row: &[T], out: &mut T) {
    *out = inv_norm(row);
}
}

with_avx2! {
/// The backward of the weight normalisation for one class row, in place:
/// `u <- u - (u . w) w / |w|^2` with `inv2 = 1 / |w|^2`.
pub fn project_out<T: HeadFloat>(u: &mut [T], w: &[T], inv2: T) {
    let proj = dot(u, w) * inv2;
    let n = u.len().min(w.len());
    let (u, w) = (&mut u[..n], &w[..n]);
    for i in 0..n {
        u[i] = u[i] - proj * w[i];
    }
}
}

with_avx2! {
/// [`crate::sgd::sgd_update`] on one row, vectorised: `v <- mu v + (g + wd w)`, `w <- w - lr v`.
pub fn sgd_row<T: HeadFloat>(w: &mut [T], v: &mut [T], g: &[T], lr: T, mu: T, wd: T) {
    crate::sgd::sgd_update(w, v, g, lr, mu, wd);
}
}

/// How many rows ahead the scattered-row loops ask for their next rows (Partial FC: the sampled
/// classes' rows lie at random places, where the hardware prefetcher cannot guess them).
pub const PREFETCH_ROWS_AHEAD: usize = 4;

/// Asks the CPU to start loading `row` into its caches: a hint that changes no result.
#[inline(always)]
pub fn prefetch_row<T>(row: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let base = row.as_ptr().cast::<i8>();
        for offset in (0..size_of_val(row)).step_by(64) {
            // SAFETY: a prefetch never faults and the address lies inside `row`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.add(offset)) };
        }
    }
}

/// Normalises every row of `x` (`[rows, dim]`) into `out`, returning `1 / max(|x_i|, eps)` per row.
pub fn normalize_rows<T: HeadFloat>(x: &[T], dim: usize, out: &mut Vec<T>) -> Vec<T> {
    out.clear();
    out.extend_from_slice(x);
    let mut inv = Vec::with_capacity(x.len() / dim.max(1));
    for row in out.chunks_exact_mut(dim) {
        let s = inv_norm(row);
        for v in row.iter_mut() {
            *v = *v * s;
        }
        inv.push(s);
    }
    inv
}

/// In place: `g = (g - (g . xn) xn) * inv_norm`, the backward of the row normalisation.
pub fn normalize_backward_row<T: HeadFloat>(g: &mut [T], xn: &[T], inv_norm: T) {
    let proj = dot(g, xn);
    for (gv, xv) in g.iter_mut().zip(xn) {
        *gv = (*gv - proj * *xv) * inv_norm;
    }
}

/// Row-wise `max` of a slice with eight lanes (NaN-insensitive; NaN shows up in the sums).
#[inline]
pub fn max_of<T: HeadFloat>(row: &[T]) -> T {
    let mut acc = [T::neg_infinity(); 8];
    let chunks = row.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = if c[l] > acc[l] { c[l] } else { acc[l] };
        }
    }
    let mut m = T::neg_infinity();
    for v in acc.iter().chain(rem) {
        if *v > m {
            m = *v;
        }
    }
    m
}

/// Sum with eight lanes (fixed order).
#[inline]
pub fn sum_of<T: HeadFloat>(row: &[T]) -> T {
    let mut acc = [T::zero(); 8];
    let chunks = row.chunks_exact(8);
    let rem = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = acc[l] + c[l];
        }
    }
    let mut tail = T::zero();
    for v in rem {
        tail = tail + *v;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}
