//! The fused training-mode BatchNorm of `plsc_models::flex_norm` on `Autodiff<Flex>`: output,
//! input/weight/bias gradients and running statistics against the composed burn operations
//! (`BatchNorm::forward_train_composed`) and against finite differences of an f64 BatchNorm,
//! and the same bits on any thread count.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use plsc_models::norm::BatchNorm;

type A = Autodiff<Flex>;

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// A BatchNorm with non-trivial weight and bias.
fn norm(c: usize, fixed_scale: bool) -> BatchNorm<A> {
    let dev = Default::default();
    let mut bn = BatchNorm::<A>::new(c, fixed_scale, &dev);
    if !fixed_scale {
        bn.weight = bn
            .weight
            .map(|_| Tensor::random([c], Distribution::Uniform(0.5, 1.5), &dev).require_grad());
    }
    bn.bias = bn
        .bias
        .map(|_| Tensor::random([c], Distribution::Uniform(-0.5, 0.5), &dev).require_grad());
    bn
}

struct Run {
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Option<Vec<f32>>,
    db: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

fn run<const D: usize>(
    bn: &BatchNorm<A>,
    x: &Tensor<Flex, D>,
    g: &Tensor<Flex, D>,
    fused: bool,
) -> Run {
    let bn = bn.fresh_replica();
    let xa = Tensor::<A, D>::from_inner(x.clone()).require_grad();
    let y = if fused {
        bn.forward(xa.clone())
    } else {
        bn.forward_train_composed(xa.clone())
    };
    let grads = (y.clone() * Tensor::from_inner(g.clone())).sum().backward();
    Run {
        y: values(y.inner()),
        dx: values(xa.grad(&grads).unwrap()),
        dw: bn.weight.val().grad(&grads).map(values),
        db: values(bn.bias.val().grad(&grads).unwrap()),
        running_mean: values(bn.running_mean().inner()),
        running_var: values(bn.running_var().inner()),
    }
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: length");
    let scale = b.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= tol * scale,
            "{what}[{i}]: fused {x}, composed {y}"
        );
    }
}

fn compare<const D: usize>(dims: [usize; D], fixed_scale: bool) {
    let dev = Default::default();
    let bn = norm(dims[1], fixed_scale);
    let x = Tensor::<Flex, D>::random(dims, Distribution::Normal(0.3, 2.0), &dev);
    let g = Tensor::<Flex, D>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
    let fused = run(&bn, &x, &g, true);
    let composed = run(&bn, &x, &g, false);
    let what = format!("{dims:?} fixed_scale {fixed_scale}");
    assert_close(&fused.y, &composed.y, 1e-5, &format!("y {what}"));
    assert_close(&fused.dx, &composed.dx, 1e-4, &format!("dx {what}"));
    assert_close(&fused.db, &composed.db, 1e-4, &format!("dbias {what}"));
    match (&fused.dw, &composed.dw) {
        (Some(a), Some(b)) => assert_close(a, b, 1e-4, &format!("dweight {what}")),
        (None, None) => assert!(fixed_scale, "no weight gradient"),
        _ => panic!("weight gradient in one path only ({what})"),
    }
    assert_close(
        &fused.running_mean,
        &composed.running_mean,
        1e-5,
        "running mean",
    );
    assert_close(
        &fused.running_var,
        &composed.running_var,
        1e-5,
        "running var",
    );
}

#[test]
fn fused_batchnorm_matches_the_composed_operations() {
    compare([4, 3, 5, 6], false);
    compare([64, 16, 7, 7], false);
    compare([8, 5], false);
    compare([8, 5], true);
}

/// `L = sum(bn(x) * g)` in f64 from the definition, `x` `[n, c, rest]` row-major.
fn loss_f64(x: &[f64], w: &[f64], b: &[f64], g: &[f64], n: usize, c: usize, rest: usize) -> f64 {
    let mut loss = 0.0;
    for ch in 0..c {
        let at = |i: usize, r: usize| (i * c + ch) * rest + r;
        let count = (n * rest) as f64;
        let mean = (0..n)
            .flat_map(|i| (0..rest).map(move |r| (i, r)))
            .map(|(i, r)| x[at(i, r)])
            .sum::<f64>()
            / count;
        let var = (0..n)
            .flat_map(|i| (0..rest).map(move |r| (i, r)))
            .map(|(i, r)| (x[at(i, r)] - mean).powi(2))
            .sum::<f64>()
            / count;
        for i in 0..n {
            for r in 0..rest {
                let y = (x[at(i, r)] - mean) / (var + 1e-5).sqrt() * w[ch] + b[ch];
                loss += y * g[at(i, r)];
            }
        }
    }
    loss
}

#[test]
fn fused_batchnorm_gradients_match_finite_differences() {
    let dev = Default::default();
    let (n, c, s) = (3, 2, 4);
    let bn = norm(c, false);
    let x = Tensor::<Flex, 4>::random([n, c, s, s], Distribution::Normal(0.0, 1.0), &dev);
    let g = Tensor::<Flex, 4>::random([n, c, s, s], Distribution::Normal(0.0, 1.0), &dev);
    let got = run(&bn, &x, &g, true);
    let f64s = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
    let (x64, g64) = (f64s(values(x)), f64s(values(g)));
    let w64 = f64s(values(bn.weight.val().inner()));
    let b64 = f64s(values(bn.bias.val().inner()));
    let h = 1e-4;
    let rest = s * s;
    let loss = |x: &[f64], w: &[f64], b: &[f64]| loss_f64(x, w, b, &g64, n, c, rest);
    for idx in [0, 7, 19, 40, x64.len() - 1] {
        let (mut up, mut down) = (x64.clone(), x64.clone());
        up[idx] += h;
        down[idx] -= h;
        let fd = (loss(&up, &w64, &b64) - loss(&down, &w64, &b64)) / (2.0 * h);
        let d = got.dx[idx] as f64;
        assert!(
            (d - fd).abs() <= 1e-3 * fd.abs().max(1.0),
            "dx[{idx}] {d} vs {fd}"
        );
    }
    let dw = got.dw.expect("weight gradient");
    for ch in 0..c {
        let (mut up, mut down) = (w64.clone(), w64.clone());
        up[ch] += h;
        down[ch] -= h;
        let fd = (loss(&x64, &up, &b64) - loss(&x64, &down, &b64)) / (2.0 * h);
        assert!(
            (dw[ch] as f64 - fd).abs() <= 1e-3 * fd.abs().max(1.0),
            "dweight[{ch}]"
        );
        let (mut up, mut down) = (b64.clone(), b64.clone());
        up[ch] += h;
        down[ch] -= h;
        let fd = (loss(&x64, &w64, &up) - loss(&x64, &w64, &down)) / (2.0 * h);
        assert!(
            (got.db[ch] as f64 - fd).abs() <= 1e-3 * fd.abs().max(1.0),
            "dbias[{ch}]"
        );
    }
}

#[test]
fn fused_batchnorm_has_the_same_bits_on_any_thread_count() {
    let dev = Default::default();
    let bn = norm(16, false);
    let x = Tensor::<Flex, 4>::random([32, 16, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
    let g = Tensor::<Flex, 4>::random([32, 16, 9, 9], Distribution::Normal(0.0, 1.0), &dev);
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| run(&bn, &x, &g, true))
    };
    let (a, b) = (on(1), on(3));
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.y), bits(&b.y), "output");
    assert_eq!(bits(&a.dx), bits(&b.dx), "input gradient");
    assert_eq!(
        bits(&a.dw.unwrap()),
        bits(&b.dw.unwrap()),
        "weight gradient"
    );
}
