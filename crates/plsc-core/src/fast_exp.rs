//! A vectorised `exp` for f32 slices, for the softmax numerators of the head's epilogue.
//!
//! The head evaluates `exp(z - max)` for every logit (B x C of them, 128 million per step at
//! one million classes), so a scalar libm call per element would cost more than the matrix
//! products. This is the Cephes `expf` scheme written so the compiler vectorises it: range
//! reduction `x = n ln2 + r` with `ln2` split in two parts, a degree-6 polynomial for `e^r` on
//! `|r| <= ln2 / 2`, and `2^n` built in the exponent bits. Inputs below -87.3 give 0 (the true
//! value is below the smallest normal f32). Relative error is about 2 ulp on the range used.
//! On x86-64 the loop is compiled a second time with AVX2 + FMA and chosen at run time.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const MIN_INPUT: f32 = -87.336_55;
/// 1.5 * 2^23: adding and subtracting it rounds an f32 of magnitude below 2^22 to an integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

#[inline(always)]
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published
fn exp_one(x: f32) -> f32 {
    // A comparison, not `max`, so that NaN flows through (f32::max would drop it).
    let xc = if x < MIN_INPUT { MIN_INPUT } else { x };
    // Round to nearest through the float adder (vectorises; `f32::round` is a libm call).
    let n = (xc * LOG2E + ROUND_MAGIC) - ROUND_MAGIC;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5.000_000_1e-1;
    let y = (p * r) * r + r + 1.0;
    // 2^n without a float-to-int conversion: adding 1.5 * 2^23 + 127 leaves n + 127 in the low
    // mantissa bits, which the shift moves into the exponent field.
    let bits = (n + (ROUND_MAGIC + 127.0)).to_bits() << 23;
    let v = y * f32::from_bits(bits);
    if x < MIN_INPUT { 0.0 } else { v }
}

fn exp_in_place_generic(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = exp_one(*v);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn exp_in_place_avx2(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = exp_one(*v);
    }
}

/// `x[i] = exp(x[i])`, for inputs up to about 88 (the head only passes values <= 0).
pub fn exp_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA, checked just above.
        unsafe { exp_in_place_avx2(x) };
        return;
    }
    exp_in_place_generic(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_libm_within_a_few_ulp() {
        let mut xs: Vec<f32> = (0..200_000).map(|i| -90.0 + i as f32 * 0.00046).collect();
        xs.extend([
            0.0,
            -0.0,
            -1e-30,
            -87.0,
            -87.33,
            -87.34,
            -100.0,
            f32::NEG_INFINITY,
            1.5,
        ]);
        let mut ys = xs.clone();
        exp_in_place(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            let expect = (*x as f64).exp();
            if expect < f32::MIN_POSITIVE as f64 {
                assert!(*y as f64 <= f32::MIN_POSITIVE as f64 * 2.0, "x={x} y={y}");
                continue;
            }
            let rel = ((*y as f64) - expect).abs() / expect;
            assert!(
                rel < 4.0 * f32::EPSILON as f64,
                "x={x}: {y} vs {expect} (rel {rel})"
            );
        }
    }

    #[test]
    fn nan_stays_nan() {
        let mut v = [f32::NAN];
        exp_in_place(&mut v);
        assert!(v[0].is_nan());
    }
}
