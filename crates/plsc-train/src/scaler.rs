//! Dynamic loss scaling (Paddle's `update_loss_scaling`, which PLSC uses): the loss gradient is
//! multiplied by the scale before the backward pass and the gradients divided by it after; a
//! step with a non-finite gradient is skipped and, after `decr_every_n_nan_or_inf` of them, the
//! scale shrinks; after `incr_every_n_steps` finite steps in a row it grows.

use crate::entry::LossScaleConfig;

/// The scaler's state.
#[derive(Debug, Clone, PartialEq)]
pub struct LossScaler {
    config: LossScaleConfig,
    scale: f64,
    good_steps: u64,
    bad_steps: u64,
    skipped_total: u64,
}

impl LossScaler {
    /// Starts at `config.init_loss_scaling`.
    pub fn new(config: LossScaleConfig) -> Self {
        Self {
            scale: config.init_loss_scaling,
            config,
            good_steps: 0,
            bad_steps: 0,
            skipped_total: 0,
        }
    }

    /// The current scale.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Steps skipped so far.
    pub fn skipped_total(&self) -> u64 {
        self.skipped_total
    }

    /// The state a checkpoint keeps (scale, the counters towards the next change, skips).
    pub fn state(&self) -> plsc_ckpt::LossScaleState {
        plsc_ckpt::LossScaleState {
            scale: self.scale,
            good_steps: self.good_steps,
            bad_steps: self.bad_steps,
            skipped_total: self.skipped_total,
        }
    }

    /// A scaler that continues from a checkpoint's `state`.
    pub fn restore(config: LossScaleConfig, state: &plsc_ckpt::LossScaleState) -> Self {
        Self {
            config,
            scale: state.scale,
            good_steps: state.good_steps,
            bad_steps: state.bad_steps,
            skipped_total: state.skipped_total,
        }
    }

    /// Records a step's outcome; returns `true` when the step may be applied.
    pub fn update(&mut self, finite: bool) -> bool {
        if finite {
            self.bad_steps = 0;
            self.good_steps += 1;
            if self.good_steps == self.config.incr_every_n_steps {
                let grown = self.scale * self.config.incr_ratio;
                if grown.is_finite() {
                    self.scale = grown;
                }
                self.good_steps = 0;
            }
        } else {
            self.skipped_total += 1;
            self.good_steps = 0;
            self.bad_steps += 1;
            if self.bad_steps == self.config.decr_every_n_nan_or_inf {
                self.scale = (self.scale * self.config.decr_ratio).max(f64::MIN_POSITIVE);
                self.bad_steps = 0;
            }
        }
        finite
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_after_good_runs_and_shrinks_after_bad_ones() {
        let mut s = LossScaler::new(LossScaleConfig {
            init_loss_scaling: 8.0,
            incr_every_n_steps: 2,
            decr_every_n_nan_or_inf: 2,
            incr_ratio: 2.0,
            decr_ratio: 0.5,
        });
        assert!(s.update(true));
        assert_eq!(s.scale(), 8.0);
        assert!(s.update(true));
        assert_eq!(s.scale(), 16.0);
        assert!(!s.update(false));
        assert_eq!(s.scale(), 16.0);
        assert!(!s.update(false));
        assert_eq!(s.scale(), 8.0);
        assert!(s.update(true));
        assert!(!s.update(false));
        assert_eq!(
            s.scale(),
            8.0,
            "a good step in between restarts the bad count"
        );
        assert_eq!(s.skipped_total(), 3);
    }

    #[test]
    fn a_restored_scaler_continues_like_the_original() {
        let cfg = LossScaleConfig {
            init_loss_scaling: 4.0,
            incr_every_n_steps: 3,
            decr_every_n_nan_or_inf: 2,
            incr_ratio: 2.0,
            decr_ratio: 0.5,
        };
        let mut a = LossScaler::new(cfg.clone());
        for f in [true, false, true, true] {
            a.update(f);
        }
        let mut b = LossScaler::restore(cfg, &a.state());
        assert_eq!(a, b);
        // The next good step completes a run of 3 only if the counter was carried over.
        a.update(true);
        b.update(true);
        assert_eq!(b.scale(), 8.0);
        assert_eq!(a, b);
    }
}
