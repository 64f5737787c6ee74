//! The target-logit transform of the combined margin and its exact derivative.
//!
//! With `c = cos(theta)` of the target class:
//!
//! ```text
//! psi(c)  = cos(m1 * theta + m2) - m3                       theta = acos(c)
//! psi'(c) = m1 * sin(m1 * theta + m2) / sin(theta)
//! ```
//!
//! `psi` is only monotone while `m1 * theta + m2 <= pi`. Past that point we use InsightFace's
//! classic guard, generalised to `m1`: with `c* = cos((pi - m2) / m1)`,
//!
//! ```text
//! c >  c*:  psi(c) = cos(m1 * theta + m2) - m3,  psi'(c) as above
//! c <= c*:  psi(c) = c - m3 - mm,                 psi'(c) = 1,     mm = m2 * sin(pi - m2)
//! ```
//!
//! For ArcFace (`m1 = 1`) this is exactly InsightFace's `where(cos > cos(pi - m), phi, cos - mm)`.
//! With `easy_margin` the margin applies only where `c > 0` and `psi(c) = c - m3` elsewhere.
//! For `m1 = 1` the angle is never formed: `cos(theta + m2) = c cos m2 - sin(theta) sin m2`,
//! which is accurate near `c = +-1`. `sin(theta)` in the denominator of `psi'` is bounded below by 1e-6, which keeps it
//! finite at `c = +-1` (where the exact derivative is unbounded for `m2 > 0`).
//!
//! This is the exact derivative, not the straight-through shortcut (arcface_torch computes the
//! margin under `no_grad`, which back-propagates as if `psi(c) = c`).

use crate::loss::MarginParams;

/// Precomputed constants of one margin setting; evaluated in f64.
#[derive(Debug, Clone, Copy)]
pub struct Margin {
    m1: f64,
    m2: f64,
    m3: f64,
    cos_m2: f64,
    sin_m2: f64,
    /// Below (or at) this cosine the guard applies.
    threshold: f64,
    /// The guard's shift `m2 * sin(pi - m2)`.
    mm: f64,
}

impl Margin {
    pub fn new(p: &MarginParams) -> Self {
        let pi = std::f64::consts::PI;
        let threshold = if p.easy_margin {
            0.0
        } else {
            ((pi - p.m2) / p.m1).min(pi).cos()
        };
        Self {
            m1: p.m1,
            m2: p.m2,
            m3: p.m3,
            cos_m2: p.m2.cos(),
            sin_m2: p.m2.sin(),
            threshold,
            mm: if p.easy_margin {
                0.0
            } else {
                (pi - p.m2).sin() * p.m2
            },
        }
    }

    /// `(psi(c), psi'(c))` for a target cosine `c` in [-1, 1].
    #[inline]
    pub fn target(&self, c: f64) -> (f64, f64) {
        if self.m1 == 1.0 && self.m2 == 0.0 {
            return (c - self.m3, 1.0);
        }
        if c <= self.threshold {
            return (c - self.m3 - self.mm, 1.0);
        }
        let sin_t = (1.0 - c * c).max(0.0).sqrt();
        // Only the derivative's denominator is guarded.
        let sin_guarded = sin_t.max(1e-6);
        if self.m1 == 1.0 {
            let psi = c * self.cos_m2 - sin_t * self.sin_m2;
            let dpsi = self.cos_m2 + c * self.sin_m2 / sin_guarded;
            (psi - self.m3, dpsi)
        } else {
            let angle = self.m1 * c.acos() + self.m2;
            (angle.cos() - self.m3, self.m1 * angle.sin() / sin_guarded)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd(m: &Margin, c: f64) -> f64 {
        let h = 1e-6;
        (m.target(c + h).0 - m.target(c - h).0) / (2.0 * h)
    }

    #[test]
    fn derivative_matches_finite_differences_in_f64() {
        let presets = [
            MarginParams::arcface(),
            MarginParams::cosface(),
            MarginParams::sphereface(),
            MarginParams::new(1.2, 0.3, 0.1, 30.0),
        ];
        for p in presets {
            let m = Margin::new(&p);
            for i in 1..40 {
                let c = -0.97 + i as f64 * 0.049;
                if (c - m.threshold).abs() < 1e-3 {
                    continue;
                }
                let (_, d) = m.target(c);
                let f = fd(&m, c);
                assert!(
                    (d - f).abs() <= 1e-6 * (1.0 + f.abs()),
                    "{p:?} c={c}: {d} vs {f}"
                );
            }
        }
    }

    #[test]
    fn arcface_matches_insightface_formula() {
        let m = Margin::new(&MarginParams::arcface());
        let pi = std::f64::consts::PI;
        for i in 0..=200 {
            let c: f64 = -1.0 + i as f64 * 0.01;
            let phi = (c.acos() + 0.5).cos();
            let expect = if c > (pi - 0.5).cos() {
                phi
            } else {
                c - (pi - 0.5).sin() * 0.5
            };
            assert!((m.target(c).0 - expect).abs() < 1e-12, "c={c}");
        }
    }

    #[test]
    fn easy_margin_only_where_cos_positive() {
        let mut p = MarginParams::arcface();
        p.easy_margin = true;
        let m = Margin::new(&p);
        assert_eq!(m.target(-0.3), (-0.3, 1.0));
        assert!((m.target(0.6).0 - (0.6f64.acos() + 0.5).cos()).abs() < 1e-12);
    }
}
