//! The yardsticks `xtask bench head` measures the head's step against, in the same run: a
//! plain `[b, d] x [d, c]` product on the head's GEMM (the rate the head's products could reach
//! at best), and the same product through burn-flex's matmul.

use std::time::Instant;

/// A plain `[b, d] x [d, c]` product with the `gemm` crate on all rayon threads, into a
/// reused buffer: the yardstick the head's rate is compared with.
pub struct PlainMatmul {
    b: usize,
    d: usize,
    c: usize,
    x: Vec<f32>,
    w: Vec<f32>,
    out: Vec<f32>,
}

impl PlainMatmul {
    /// Fixed operands `x [b, d]`, `w [c, d]` (sines and cosines) and a reused output.
    pub fn new(b: usize, d: usize, c: usize) -> Self {
        let x = (0..b * d).map(|i| (i as f32 * 0.001).sin()).collect();
        let w = (0..c * d).map(|i| (i as f32 * 0.0007).cos()).collect();
        Self {
            b,
            d,
            c,
            x,
            w,
            out: vec![0.0; b * c],
        }
    }

    /// Seconds of one product: with the `blas` feature, OpenBLAS (one thread per call, as the
    /// head runs it) over column blocks on the rayon threads, as `out^T = w . x^T`.
    #[cfg(feature = "blas")]
    pub fn time(&mut self) -> f64 {
        use rayon::prelude::*;
        let (b, d, c) = (self.b, self.d, self.c);
        let block = c.div_ceil(rayon::current_num_threads() * 4).max(1);
        let t = Instant::now();
        self.out
            .par_chunks_mut(block * b)
            .zip(self.w.par_chunks(block * d))
            .for_each(|(out, w)| {
                let rows = w.len() / d;
                crate::cpu::gemm::a_bt(out, w, &self.x, rows, b, d);
            });
        t.elapsed().as_secs_f64()
    }

    /// Seconds of one product.
    #[cfg(not(feature = "blas"))]
    pub fn time(&mut self) -> f64 {
        let (b, d, c) = (self.b, self.d, self.c);
        let t = Instant::now();
        // SAFETY: x is [b, d], w is [c, d] read as its transpose [d, c], out is [b, c]; all
        // strides below stay inside those buffers.
        unsafe {
            gemm::gemm(
                b,
                c,
                d,
                self.out.as_mut_ptr(),
                1,
                c as isize,
                false,
                self.x.as_ptr(),
                1,
                d as isize,
                self.w.as_ptr(),
                d as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            )
        };
        t.elapsed().as_secs_f64()
    }

    /// The product's rate at `seconds` a product.
    pub fn gflops(&self, seconds: f64) -> f64 {
        2.0 * (self.b * self.d * self.c) as f64 / seconds / 1e9
    }
}

/// Seconds of `iters` products `[b, d] x [d, c]` through burn-flex's matmul (a new output
/// every call, as burn does), after one warm-up product.
pub fn burn_matmul_seconds(b: usize, d: usize, c: usize, iters: usize) -> Vec<f64> {
    use burn::backend::Flex;
    use burn::tensor::{Distribution, Tensor};
    let device = Default::default();
    let x = Tensor::<Flex, 2>::random([b, d], Distribution::Default, &device);
    let w = Tensor::<Flex, 2>::random([d, c], Distribution::Default, &device);
    let mut times = Vec::new();
    for it in 0..=iters {
        let t = Instant::now();
        let y = x.clone().matmul(w.clone());
        let _ = y.into_data();
        if it > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times
}
