//! The fused PReLU of `plsc_models::flex_prelu` on `Autodiff<Flex>`: output and gradients
//! against the composed burn operations (`ops::prelu_composed`) and finite differences, and the
//! same bits on any thread count.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use plsc_models::ops::{prelu, prelu_composed};

type A = Autodiff<Flex>;

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Output, input gradient and slope gradient of `L = sum(prelu(x) * g)`.
fn run<const D: usize>(
    x: &Tensor<Flex, D>,
    alpha: &Tensor<Flex, 1>,
    g: &Tensor<Flex, D>,
    fused: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let xa = Tensor::<A, D>::from_inner(x.clone()).require_grad();
    let aa = Tensor::<A, 1>::from_inner(alpha.clone()).require_grad();
    let y = if fused {
        prelu(xa.clone(), aa.clone())
    } else {
        prelu_composed(xa.clone(), aa.clone())
    };
    let grads = (y.clone() * Tensor::from_inner(g.clone())).sum().backward();
    (
        values(y.inner()),
        values(xa.grad(&grads).unwrap()),
        values(aa.grad(&grads).unwrap()),
    )
}

fn close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    assert_eq!(a.len(), b.len(), "{what}");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: fused {x}, composed {y}"
        );
    }
}

#[test]
fn fused_prelu_matches_the_composed_operations() {
    let dev = Default::default();
    for dims in [[4, 3, 5, 6], [64, 16, 7, 7]] {
        let x = Tensor::<Flex, 4>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
        let alpha = Tensor::<Flex, 1>::random([dims[1]], Distribution::Uniform(0.0, 0.5), &dev);
        let g = Tensor::<Flex, 4>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
        let (y1, dx1, da1) = run(&x, &alpha, &g, true);
        let (y2, dx2, da2) = run(&x, &alpha, &g, false);
        assert_eq!(y1, y2, "output {dims:?}");
        assert_eq!(dx1, dx2, "input gradient {dims:?}");
        close(&da1, &da2, 1e-5, &format!("slope gradient {dims:?}"));
    }
}

#[test]
fn fused_prelu_slope_gradient_matches_finite_differences() {
    let dev = Default::default();
    let (n, c, rest) = (3, 4, 10);
    let x = Tensor::<Flex, 3>::random([n, c, rest], Distribution::Normal(0.0, 1.0), &dev);
    let alpha = Tensor::<Flex, 1>::random([c], Distribution::Uniform(0.0, 0.5), &dev);
    let g = Tensor::<Flex, 3>::random([n, c, rest], Distribution::Normal(0.0, 1.0), &dev);
    let (_, _, da) = run(&x, &alpha, &g, true);
    let (xv, av, gv) = (values(x), values(alpha.unsqueeze::<3>()), values(g));
    let loss = |a: &[f64]| -> f64 {
        (0..n * c * rest)
            .map(|i| {
                let v = xv[i] as f64;
                let y = if v > 0.0 { v } else { a[(i / rest) % c] * v };
                y * gv[i] as f64
            })
            .sum()
    };
    let a64: Vec<f64> = av.iter().map(|&v| v as f64).collect();
    let h = 1e-3;
    for ch in 0..c {
        let (mut up, mut down) = (a64.clone(), a64.clone());
        up[ch] += h;
        down[ch] -= h;
        let fd = (loss(&up) - loss(&down)) / (2.0 * h);
        assert!(
            (da[ch] as f64 - fd).abs() <= 1e-4 * fd.abs().max(1.0),
            "dalpha[{ch}] {} vs {fd}",
            da[ch]
        );
    }
}

#[test]
fn fused_prelu_has_the_same_bits_on_any_thread_count() {
    let dev = Default::default();
    let x = Tensor::<Flex, 4>::random([32, 16, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
    let alpha = Tensor::<Flex, 1>::random([16], Distribution::Uniform(0.0, 0.5), &dev);
    let g = Tensor::<Flex, 4>::random([32, 16, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run(&x, &alpha, &g, true))
    };
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let (a, b) = (on(1), on(3));
    assert_eq!(bits(&a.0), bits(&b.0));
    assert_eq!(bits(&a.1), bits(&b.1));
    assert_eq!(bits(&a.2), bits(&b.2));
}
