//! Thin, checked wrappers over the `gemm` crate for the three products of the head, on
//! row-major buffers. Every product runs single-threaded: the head parallelises over class
//! ranges, one worker per thread, so each worker's tile stays in its own core's cache.

use crate::float::HeadFloat;
use gemm::Parallelism;

/// `dst[m x n] = a[m x k] . b[n x k]^T` (both row-major): logits = features . weight^T.
pub fn a_bt<T: HeadFloat>(dst: &mut [T], a: &[T], b: &[T], m: usize, n: usize, k: usize) {
    assert!(
        dst.len() >= m * n && a.len() >= m * k && b.len() >= n * k,
        "gemm a_bt shapes"
    );
    if m == 0 || n == 0 {
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
