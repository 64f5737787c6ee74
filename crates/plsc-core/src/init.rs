//! Weight initialisation that depends only on `(seed, class index)`.
//!
//! Row `j` of the classification weight is drawn from `N(0, 0.01^2)` (arcface_torch's
//! initialisation) by a ChaCha8 generator seeded with `seed` on stream `j`. The full matrix is
//! therefore the same whatever the rank count: a 1-rank and a 4-rank run start from the same
//! model, and any shard can be initialised on its own.

use crate::cpu::HeadFloat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Standard deviation of the initial weight entries.
pub const INIT_STD: f64 = 0.01;

/// Fills `out` (row-major `[classes.len(), dim]`) with the initial rows of the given global
/// classes, in parallel over rows.
pub fn init_rows<T: HeadFloat>(seed: u64, first_class: usize, dim: usize, out: &mut [T]) {
    if dim == 0 {
        return;
    }
    let normal = Normal::new(0.0, INIT_STD).expect("constant std is valid");
    out.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream((first_class + i) as u64);
        for v in row.iter_mut() {
            *v = T::from_f64(normal.sample(&mut rng));
        }
    });
}

/// A bias of zeros (plain softmax), like PyTorch's and PLSC's default for the classifier.
pub fn init_bias<T: HeadFloat>(len: usize) -> Vec<T> {
    vec![T::zero(); len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_do_not_depend_on_the_split() {
        let (c, d) = (23, 5);
        let mut full = vec![0.0f32; c * d];
        init_rows(7, 0, d, &mut full);
        let mut tail = vec![0.0f32; 9 * d];
        init_rows(7, 14, d, &mut tail);
        assert_eq!(&full[14 * d..], &tail[..]);
        let mut other_seed = vec![0.0f32; c * d];
        init_rows(8, 0, d, &mut other_seed);
        assert_ne!(full, other_seed);
        let mean = full.iter().map(|v| *v as f64).sum::<f64>() / full.len() as f64;
        let var = full.iter().map(|v| (*v as f64 - mean).powi(2)).sum::<f64>() / full.len() as f64;
        assert!(
            mean.abs() < 0.005 && (var.sqrt() - INIT_STD).abs() < 0.004,
            "{mean} {var}"
        );
    }
}
