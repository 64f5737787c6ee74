//! Small numerical helpers that reproduce NumPy's arithmetic order, so that our figures agree with
//! InsightFace's (NumPy) verification code to the last bit where the inputs are the same.

/// `np.arange(start, stop, step)` for floats: `ceil((stop - start) / step)` values
/// `start + i * delta` with `delta = (start + step) - start`, as NumPy fills them.
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// `np.sum` of a contiguous 1-D float64 array: NumPy's pairwise summation (8 accumulators in
/// blocks of at most 128, halving above that), started from the additive identity 0.
pub fn np_sum(values: &[f64]) -> f64 {
    0.0 + pairwise_sum(values)
}

fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= BLOCK {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for (j, acc) in r.iter_mut().enumerate() {
                *acc += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// `np.mean` of a 1-D array.
pub fn np_mean(values: &[f64]) -> f64 {
    np_sum(values) / values.len() as f64
}

/// `np.std` of a 1-D array (population standard deviation, `ddof = 0`).
pub fn np_std(values: &[f64]) -> f64 {
    let mean = np_mean(values);
    let squares: Vec<f64> = values
        .iter()
        .map(|&x| {
            let d = x - mean;
            d * d
        })
        .collect();
    (np_sum(&squares) / values.len() as f64).sqrt()
}

/// `np.mean(rows, axis=0)` of a C-contiguous 2-D array: NumPy adds the rows one after another,
/// then divides by their count.
pub fn np_mean_axis0(rows: &[Vec<f64>]) -> Vec<f64> {
    let Some(first) = rows.first() else {
        return Vec::new();
    };
    let mut acc = first.clone();
    for row in &rows[1..] {
        for (a, &x) in acc.iter_mut().zip(row) {
            *a += x;
        }
    }
    let n = rows.len() as f64;
    acc.iter_mut().for_each(|a| *a /= n);
    acc
}

/// `scipy.interpolate.interp1d(x, y, kind='slinear')(x_new)` as SciPy up to 1.8 computed it.
///
/// `slinear` builds a degree-1 B-spline with knots `[x0, x0, x1, ..., x_last, x_last]` and
/// coefficients `y` (SciPy special-cased k = 1 before any duplicate check; SciPy 1.9 and later
/// reject repeated `x`, which InsightFace's FAR curves always contain). Evaluating it finds the
/// largest `j <= n - 2` with `x[j] <= x_new` and blends `y[j]`, `y[j + 1]` with de Boor's weights;
/// an empty knot span (`x[j] == x[j + 1]`) contributes nothing, giving 0.
///
/// The caller guarantees `x` is sorted ascending, has at least two values, and
/// `x[0] <= x_new <= x[n - 1]` (interp1d raises outside that range).
pub fn slinear_interp(x: &[f64], y: &[f64], x_new: f64) -> f64 {
    debug_assert!(x.len() >= 2 && x.len() == y.len());
    let n = x.len();
    let mut j = 0;
    for (i, &xi) in x.iter().enumerate().take(n - 1) {
        if xi <= x_new {
            j = i;
        } else {
            break;
        }
    }
    let (xa, xb) = (x[j], x[j + 1]);
    if xa == xb {
        return 0.0;
    }
    let w = 1.0 / (xb - xa);
    let h0 = w * (xb - x_new);
    let h1 = w * (x_new - xa);
    0.0 + y[j] * h0 + y[j + 1] * h1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arange_matches_numpy_lengths() {
        // len(np.arange(0, 4, 0.01)) == 400 and len(np.arange(0, 4, 0.001)) == 4000.
        assert_eq!(arange(0.0, 4.0, 0.01).len(), 400);
        assert_eq!(arange(0.0, 4.0, 0.001).len(), 4000);
        assert_eq!(arange(0.0, 4.0, 0.01)[399], 399.0 * 0.01);
    }

    #[test]
    fn pairwise_sum_is_exact_on_integers() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(np_sum(&v), 500_500.0);
        assert_eq!(np_mean(&[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(np_std(&[1.0, 3.0]), 1.0);
    }

    #[test]
    fn slinear_interpolates_between_plateaus() {
        // The plateau [0, 0] ends at index 1, so the segment is (x1, y1) -> (x2, y2).
        let x = [0.0, 0.0, 0.5, 1.0, 1.0, 2.0];
        let y = [0.0, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(slinear_interp(&x, &y, 0.25), 1.5);
        // On a repeated value the last of the run is taken: x4 == 1.0 -> y4.
        assert_eq!(slinear_interp(&x, &y, 1.0), 4.0);
        // A repeated value at the very end is an empty span: 0.
        assert_eq!(slinear_interp(&[0.0, 1.0, 1.0], &[0.0, 1.0, 2.0], 1.0), 0.0);
    }
}
