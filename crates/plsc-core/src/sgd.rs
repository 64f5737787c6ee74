//! Sparse SGD with momentum for the weight shard.
//!
//! PyTorch / Paddle semantics without dampening, on the rows used this step only:
//!
//! ```text
//! v_j <- momentum * v_j + (g_j + weight_decay * w_j)
//! w_j <- w_j - lr * v_j
//! ```
//!
//! Rows not sampled this step keep their weight and their momentum. This is what Partial FC
//! does (arcface_torch keeps the optimiser state of the sampled rows only): a dense update would
//! decay every row's weight and move it along its stale momentum each step, at the cost of a
//! full pass over `C_r x D` weight and momentum, for classes that saw no gradient. With
//! `sample_ratio = 1` every row is used and the update is exactly dense SGD.
//!
//! The backbone's optimiser (`plsc_models::optim`) applies the same rule to its parameters
//! (the crate map keeps plsc-models from depending on plsc-core, so it is written there too; a
//! plsc-models test checks it against this formula). With 16-bit head storage the updated rows
//! are written back stochastically rounded (`crate::rounding`).

use burn::config::Config;

/// Settings of the head's optimiser (the learning rate comes with each step, from the
/// schedule).
#[derive(Config, Debug, PartialEq)]
pub struct SparseSgdConfig {
    /// Momentum factor (PLSC and arcface_torch: 0.9).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// L2 weight decay added to the gradient of the used rows (PLSC and arcface_torch: 5e-4).
    #[config(default = 5e-4)]
    pub weight_decay: f64,
}

/// One SGD-with-momentum update of a row (or any slice):
/// `v <- momentum v + (g + weight_decay w)`, `w <- w - lr v`.
#[inline]
pub fn sgd_update<T: num_traits::Float>(
    w: &mut [T],
    v: &mut [T],
    g: &[T],
    lr: T,
    momentum: T,
    weight_decay: T,
) {
    // Indexed over re-sliced equal lengths: the bounds checks go away and the loop vectorises
    // (the zipped-iterator form stayed scalar).
    let n = w.len().min(v.len()).min(g.len());
    let (w, v, g) = (&mut w[..n], &mut v[..n], &g[..n]);
    for i in 0..n {
        v[i] = momentum * v[i] + (g[i] + weight_decay * w[i]);
        w[i] = w[i] - lr * v[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_step_matches_a_hand_computation() {
        // w = 1, v = 0.5, g = 0.2, lr = 0.1, mu = 0.9, wd = 0.01:
        // v' = 0.9 * 0.5 + (0.2 + 0.01 * 1) = 0.66;  w' = 1 - 0.1 * 0.66 = 0.934.
        let (mut w, mut v) = ([1.0f64], [0.5f64]);
        sgd_update(&mut w, &mut v, &[0.2], 0.1, 0.9, 0.01);
        assert!((v[0] - 0.66).abs() < 1e-15 && (w[0] - 0.934).abs() < 1e-15);
        let c = SparseSgdConfig::new();
        assert_eq!((c.momentum, c.weight_decay), (0.9, 5e-4));
    }
}
