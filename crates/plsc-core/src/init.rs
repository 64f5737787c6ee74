//! Weight initialisation that depends only on `(seed, class index)`.
//!
//! Row `j` of the classification weight is drawn from `N(0, 0.01^2)` (arcface_torch's
//! initialisation) by a ChaCha8 generator seeded with `seed` on stream `j`. The full matrix is
//! therefore the same whatever the rank count: a 1-rank and a 4-rank run start from the same
//! model, and any shard can be initialised on its own.

use crate::cpu::HeadFloat;
use crate::storage::RowsMut;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Standard deviation of the initial weight entries.
pub const INIT_STD: f64 = 0.01;

/// Fills `out` (row-major `[classes.len(), dim]`) with the initial rows of the given global
/// classes, in parallel over rows.
pub fn init_rows<T: HeadFloat>(seed: u64, first_class: usize, dim: usize, out: &mut [T]) {
    init_stored_rows(seed, first_class, dim, RowsMut::Full(out));
}

/// [`init_rows`] written straight into stored rows (rounded to nearest in 16-bit storage):
/// no copy of the shard in another type is ever made.
pub fn init_stored_rows<T: HeadFloat>(
    seed: u64,
    first_class: usize,
    dim: usize,
    out: RowsMut<'_, T>,
) {
    fn fill<E: Send>(
        seed: u64,
        first: usize,
        dim: usize,
        out: &mut [E],
        from: impl Fn(f64) -> E + Sync,
    ) {
        if dim == 0 {
            return;
        }
        let normal = Normal::new(0.0, INIT_STD).expect("constant std is valid");
        out.par_chunks_mut(dim).enumerate().for_each(|(i, row)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream((first + i) as u64);
            for v in row.iter_mut() {
                *v = from(normal.sample(&mut rng));
            }
        });
    }
    match out {
        RowsMut::Full(v) => fill(seed, first_class, dim, v, T::from_f64),
        RowsMut::Bf16(v) => fill(seed, first_class, dim, v, half::bf16::from_f64),
        RowsMut::F16(v) => fill(seed, first_class, dim, v, half::f16::from_f64),
    }
}

/// A bias of zeros (plain softmax), like PyTorch's and PLSC's default for the classifier.
pub fn init_bias<T: HeadFloat>(len: usize) -> Vec<T> {
    vec![T::zero(); len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_rows_are_the_rounded_f64_draws() {
        let (c, d) = (5, 7);
        let mut full = vec![0.0f64; c * d];
        init_rows(3, 2, d, &mut full);
        let mut b = vec![half::bf16::ZERO; c * d];
        init_stored_rows::<f32>(3, 2, d, RowsMut::Bf16(&mut b));
        for (x, y) in full.iter().zip(&b) {
            assert_eq!(*y, half::bf16::from_f64(*x));
        }
    }

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
