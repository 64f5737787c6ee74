//! Thin, checked wrappers over the `gemm` crate for the three products of the head, on
//! row-major buffers. Every product runs single-threaded: the head parallelises over class
//! ranges, one worker per thread, so each worker's tile stays in its own core's cache.
//!
//! With the feature `blas`, f32 and f64 products go to the system OpenBLAS instead
//! (`cblas_sgemm` / `cblas_dgemm`, OpenBLAS limited to one thread per call for the same
//! reason); [`backend_name`] says which one a build uses.

use super::HeadFloat;
use gemm::Parallelism;

/// The GEMM implementation of this build: `"gemm crate"` or `"OpenBLAS"`.
pub fn backend_name() -> &'static str {
    if cfg!(feature = "blas") {
        "OpenBLAS"
    } else {
        "gemm crate"
    }
}

#[cfg(feature = "blas")]
mod blas {
    use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE, cblas_dgemm, cblas_sgemm};
    use std::any::TypeId;
    use std::os::raw::c_int;
    use std::sync::Once;

    #[link(name = "openblas")]
    unsafe extern "C" {
        fn openblas_set_num_threads(n: c_int);
    }

    /// `C[m x n] = alpha * op(A) . op(B) + beta * C`, row-major, for f32 and f64; `false`
    /// (nothing done) for other element types.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm<T: 'static>(
        trans_a: bool,
        trans_b: bool,
        m: usize,
        n: usize,
        k: usize,
        a: &[T],
        lda: usize,
        b: &[T],
        ldb: usize,
        beta: f64,
        c: &mut [T],
    ) -> bool {
        static ONE_THREAD: Once = Once::new();
        // SAFETY: a plain setter of OpenBLAS's thread count, called once.
        ONE_THREAD.call_once(|| unsafe { openblas_set_num_threads(1) });
        let t = |on: bool| {
            if on {
                CBLAS_TRANSPOSE::CblasTrans
            } else {
                CBLAS_TRANSPOSE::CblasNoTrans
            }
        };
        let dims = [m, n, k, lda, ldb, n].map(|v| v as c_int);
        let [m, n, k, lda, ldb, ldc] = dims;
        let layout = CBLAS_LAYOUT::CblasRowMajor;
        // SAFETY: the callers assert that the slices hold the shapes passed; T is f32 or f64
        // exactly when the pointer casts below are taken.
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f32>() {
                cblas_sgemm(
                    layout,
                    t(trans_a),
                    t(trans_b),
                    m,
                    n,
                    k,
                    1.0,
                    a.as_ptr().cast(),
                    lda,
                    b.as_ptr().cast(),
                    ldb,
                    beta as f32,
                    c.as_mut_ptr().cast(),
                    ldc,
                );
                true
            } else if TypeId::of::<T>() == TypeId::of::<f64>() {
                cblas_dgemm(
                    layout,
                    t(trans_a),
                    t(trans_b),
                    m,
                    n,
                    k,
                    1.0,
                    a.as_ptr().cast(),
                    lda,
                    b.as_ptr().cast(),
                    ldb,
                    beta,
                    c.as_mut_ptr().cast(),
                    ldc,
                );
                true
            } else {
                false
            }
        }
    }
}

/// `dst[m x n] = a[m x k] . b[n x k]^T` (both row-major): logits = features . weight^T.
pub fn a_bt<T: HeadFloat>(dst: &mut [T], a: &[T], b: &[T], m: usize, n: usize, k: usize) {
    assert!(
        dst.len() >= m * n && a.len() >= m * k && b.len() >= n * k,
        "gemm a_bt shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    #[cfg(feature = "blas")]
    if blas::gemm(false, true, m, n, k, a, k, b, k, 0.0, dst) {
        return;
    }
    // SAFETY: the asserts above keep every index the kernel forms (row < m, col < n, inner < k
    // with the strides below) inside the three slices; dst does not alias a or b (&mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            k as isize,
            1,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `dst[m x n] += a[m x k] . b[k x n]` (row-major): feature gradient += g . weight.
pub fn acc_a_b<T: HeadFloat>(dst: &mut [T], a: &[T], b: &[T], m: usize, n: usize, k: usize) {
    assert!(
        dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n,
        "gemm acc_a_b shapes"
    );
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    #[cfg(feature = "blas")]
    if blas::gemm(false, false, m, n, k, a, k, b, n, 1.0, dst) {
        return;
    }
    // SAFETY: as in `a_bt`, the asserts bound every index; dst is exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

/// `dst[m x n] = a[k x m]^T . b[k x n]` (both row-major): weight gradient = g^T . features.
pub fn at_b<T: HeadFloat>(dst: &mut [T], a: &[T], b: &[T], m: usize, n: usize, k: usize) {
    assert!(
        dst.len() >= m * n && a.len() >= k * m && b.len() >= k * n,
        "gemm at_b shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        dst[..m * n].fill(T::zero());
        return;
    }
    #[cfg(feature = "blas")]
    if blas::gemm(true, false, m, n, k, a, m, b, n, 0.0, dst) {
        return;
    }
    // SAFETY: as in `a_bt`, the asserts bound every index; dst is exclusive.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            m as isize,
            1,
            b.as_ptr(),
            1,
            n as isize,
            T::zero(),
            T::one(),
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(
        m: usize,
        n: usize,
        k: usize,
        a: impl Fn(usize, usize) -> f64,
        b: impl Fn(usize, usize) -> f64,
    ) -> Vec<f64> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a(i, p) * b(p, j)).sum();
            }
        }
        out
    }

    #[test]
    fn the_three_products_match_naive_loops() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let bt: Vec<f64> = (0..n * k).map(|i| (i as f64 * 0.11).cos()).collect();
        let mut d = vec![0.0; m * n];
        a_bt(&mut d, &a, &bt, m, n, k);
        let e = naive(m, n, k, |i, p| a[i * k + p], |p, j| bt[j * k + p]);
        assert!(d.iter().zip(&e).all(|(x, y)| (x - y).abs() < 1e-12));

        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.23).sin()).collect();
        let mut acc = vec![1.0; m * n];
        acc_a_b(&mut acc, &a, &b, m, n, k);
        let e = naive(m, n, k, |i, p| a[i * k + p], |p, j| b[p * n + j]);
        assert!(acc.iter().zip(&e).all(|(x, y)| (x - 1.0 - y).abs() < 1e-12));

        let at: Vec<f64> = (0..k * m).map(|i| (i as f64 * 0.71).cos()).collect();
        let mut d = vec![5.0; m * n];
        at_b(&mut d, &at, &b, m, n, k);
        let e = naive(m, n, k, |i, p| at[p * m + i], |p, j| b[p * n + j]);
        assert!(d.iter().zip(&e).all(|(x, y)| (x - y).abs() < 1e-12));
    }
}
