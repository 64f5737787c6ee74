//! The learning-rate schedule: linear warmup, then piecewise-constant decay at step boundaries
//! (PLSC's default) or polynomial decay (arcface_torch's `PolyScheduler`).
//!
//! A pure function of the global step, so that a run resumed at step `k` sees exactly the rates
//! of an uninterrupted one. (burn's `LrScheduler`s are stateful iterators that would have to be
//! replayed on resume; none of them offers piecewise decay with warmup, so this small one is
//! ours.)

use serde::{Deserialize, Serialize};

/// Decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrPolicy {
    /// `base * decay^(number of boundaries <= step)`.
    #[default]
    Piecewise,
    /// `end + (base - end) * (1 - t)^power` with `t` the fraction of the post-warmup steps done.
    Poly,
}

impl std::str::FromStr for LrPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "piecewise" | "step" => Ok(Self::Piecewise),
            "poly" | "polynomial" => Ok(Self::Poly),
            _ => Err(format!(
                "unknown lr policy `{s}`: expected piecewise or poly"
            )),
        }
    }
}

/// A complete schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct LrSchedule {
    /// Rate after warmup, before any decay (already scaled by the global batch).
    pub base_lr: f64,
    /// Decay policy.
    pub policy: LrPolicy,
    /// Piecewise boundaries (global steps).
    pub boundaries: Vec<u64>,
    /// Piecewise factor.
    pub decay_factor: f64,
    /// Polynomial power.
    pub poly_power: f64,
    /// Polynomial end rate relative to `base_lr`.
    pub poly_end_ratio: f64,
    /// Linear warmup steps: step `k < warmup` gets `base * (k + 1) / warmup`.
    pub warmup_steps: u64,
    /// Total steps of the run.
    pub total_steps: u64,
}

impl LrSchedule {
    /// The rate of global step `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        match self.policy {
            LrPolicy::Piecewise => {
                let passed = self.boundaries.iter().filter(|&&b| b <= step).count();
                self.base_lr * self.decay_factor.powi(passed as i32)
            }
            LrPolicy::Poly => {
                let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
                let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
                let end = self.base_lr * self.poly_end_ratio;
                end + (self.base_lr - end) * (1.0 - t).powf(self.poly_power)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(policy: LrPolicy) -> LrSchedule {
        LrSchedule {
            base_lr: 0.4,
            policy,
            boundaries: vec![10, 20],
            decay_factor: 0.1,
            poly_power: 2.0,
            poly_end_ratio: 0.0,
            warmup_steps: 4,
            total_steps: 24,
        }
    }

    #[test]
    fn warmup_then_piecewise() {
        let s = sched(LrPolicy::Piecewise);
        assert_eq!(s.lr_at(0), 0.1);
        assert_eq!(s.lr_at(3), 0.4);
        assert_eq!(s.lr_at(9), 0.4);
        assert!((s.lr_at(10) - 0.04).abs() < 1e-15);
        assert!((s.lr_at(25) - 0.004).abs() < 1e-15);
    }

    #[test]
    fn poly_reaches_the_end_rate() {
        let s = sched(LrPolicy::Poly);
        assert_eq!(s.lr_at(4), 0.4);
        // Half way through the 20 post-warmup steps: 0.4 * 0.5^2.
        assert!((s.lr_at(14) - 0.1).abs() < 1e-15);
        assert_eq!(s.lr_at(24), 0.0);
    }
}
