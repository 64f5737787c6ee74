//! The convolution of `plsc_models::flex_conv` on `Autodiff<Flex>`: the same forward and input
//! gradient as burn's `Conv2d::forward`, and a weight gradient that matches burn's (f32), finite
//! differences of an f64 convolution, and a naive f64 sum, bit-identical for any thread count.

use burn::backend::{Autodiff, Flex};
use burn::module::Initializer;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, Tensor};
use plsc_models::flex_conv::{self, Geometry, weight_grad};

type A = Autodiff<Flex>;

/// (images, c_in, c_out, side, kernel, stride, padding): the backbones' kinds of convolution.
const CASES: [(usize, usize, usize, usize, usize, usize, usize); 5] = [
    (3, 2, 4, 7, 3, 1, 1),
    (3, 3, 5, 8, 3, 2, 1),
    (2, 4, 3, 7, 1, 2, 0),
    (5, 1, 6, 9, 3, 1, 1),
    (2, 3, 2, 5, 3, 2, 0),
];

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, pad: usize) -> Conv2d<A> {
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::Normal {
            mean: 0.0,
            std: 0.3,
        })
        .init(&Default::default())
}

fn values(t: Tensor<Flex, 4>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// Output, input gradient and weight gradient of `L = sum(y * g)`.
fn run(
    conv: &Conv2d<A>,
    x: &Tensor<Flex, 4>,
    g: &Tensor<Flex, 4>,
    ours: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let xa = Tensor::<A, 4>::from_inner(x.clone()).require_grad();
    let y = if ours {
        flex_conv::conv2d(conv, xa.clone())
    } else {
        conv.forward(xa.clone())
    };
    let grads = (y.clone() * Tensor::from_inner(g.clone())).sum().backward();
    let dx = xa.grad(&grads).unwrap();
    let dw = conv.weight.val().grad(&grads).unwrap();
    (values(y.inner()), values(dx), values(dw))
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

#[test]
fn same_forward_and_gradients_as_burns_own_op() {
    let dev = Default::default();
    for (n, ci, co, s, k, stride, pad) in CASES {
        let conv = conv(ci, co, k, stride, pad);
        assert!(
            flex_conv::takes_fast_path(&conv),
            "case {n} {ci} {co} {s} {k}"
        );
        let x = Tensor::<Flex, 4>::random([n, ci, s, s], Distribution::Normal(0.0, 1.0), &dev);
        let y_dims = conv.forward(Tensor::<A, 4>::from_inner(x.clone())).dims();
        let g = Tensor::<Flex, 4>::random(y_dims, Distribution::Normal(0.0, 1.0), &dev);
        let (y1, dx1, dw1) = run(&conv, &x, &g, true);
        let (y2, dx2, dw2) = run(&conv, &x, &g, false);
        assert_eq!(y1, y2, "forward, case {n} {ci} {co} {s} {k} {stride} {pad}");
        assert_eq!(dx1, dx2, "input gradient");
        let scale = max_abs(&dw2);
        let worst = dw1
            .iter()
            .zip(&dw2)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-5 * scale.max(1.0),
            "weight gradient differs from burn's by {worst} (scale {scale}), case {n} {ci} {co} {s} {k} {stride} {pad}"
        );
    }
}

/// `L(w) = sum(conv(x, w) * g)` in f64, from the definition of the convolution.
fn loss_f64(geo: &Geometry, x: &[f64], w: &[f64], g: &[f64]) -> f64 {
    let mut loss = 0.0;
    for n in 0..geo.n {
        for co in 0..geo.c_out {
            for oy in 0..geo.oh {
                for ox in 0..geo.ow {
                    let mut y = 0.0;
                    for ci in 0..geo.c_in {
                        for ky in 0..geo.kh {
                            for kx in 0..geo.kw {
                                let iy =
                                    (oy * geo.stride[0] + ky) as isize - geo.padding[0] as isize;
                                let ix =
                                    (ox * geo.stride[1] + kx) as isize - geo.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= geo.h as isize || ix >= geo.w as isize
                                {
                                    continue;
                                }
                                y += x[((n * geo.c_in + ci) * geo.h + iy as usize) * geo.w
                                    + ix as usize]
                                    * w[((co * geo.c_in + ci) * geo.kh + ky) * geo.kw + kx];
                            }
                        }
                    }
                    loss += y * g[((n * geo.c_out + co) * geo.oh + oy) * geo.ow + ox];
                }
            }
        }
    }
    loss
}

#[test]
fn weight_gradient_matches_finite_differences() {
    let dev = Default::default();
    for (n, ci, co, s, k, stride, pad) in CASES {
        let conv = conv(ci, co, k, stride, pad);
        let x = Tensor::<Flex, 4>::random([n, ci, s, s], Distribution::Normal(0.0, 1.0), &dev);
        let y_dims = conv.forward(Tensor::<A, 4>::from_inner(x.clone())).dims();
        let g = Tensor::<Flex, 4>::random(y_dims, Distribution::Normal(0.0, 1.0), &dev);
        let (_, _, dw) = run(&conv, &x, &g, true);
        let ws = conv.weight.val().dims();
        let w64: Vec<f64> = values(conv.weight.val().inner())
            .iter()
            .map(|&v| v as f64)
            .collect();
        let x64: Vec<f64> = values(x.clone()).iter().map(|&v| v as f64).collect();
        let g64: Vec<f64> = values(g.clone()).iter().map(|&v| v as f64).collect();
        let opts = ConvOptions::new([stride, stride], [pad, pad], [1, 1], 1);
        let geo = Geometry::new(x.dims(), ws, y_dims, &opts);
        let h = 1e-3;
        for idx in (0..w64.len()).step_by(w64.len().div_ceil(7)) {
            let (mut up, mut down) = (w64.clone(), w64.clone());
            up[idx] += h;
            down[idx] -= h;
            let fd =
                (loss_f64(&geo, &x64, &up, &g64) - loss_f64(&geo, &x64, &down, &g64)) / (2.0 * h);
            let got = dw[idx] as f64;
            assert!(
                (got - fd).abs() <= 1e-4 * fd.abs().max(1.0),
                "dW[{idx}] = {got}, finite differences {fd}, case {n} {ci} {co} {s} {k} {stride} {pad}"
            );
        }
    }
}

/// A plain f64 sum over (n, oh, ow), the definition of the weight gradient.
fn naive(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f64> {
    let mut dw = vec![0.0f64; g.c_out * g.c_in * g.kh * g.kw];
    for n in 0..g.n {
        for co in 0..g.c_out {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let d = dy[((n * g.c_out + co) * g.oh + oy) * g.ow + ox] as f64;
                    for ci in 0..g.c_in {
                        for ky in 0..g.kh {
                            for kx in 0..g.kw {
                                let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                                let ix = (ox * g.stride[1] + kx) as isize - g.padding[1] as isize;
                                if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                    continue;
                                }
                                let v =
                                    x[((n * g.c_in + ci) * g.h + iy as usize) * g.w + ix as usize];
                                dw[((co * g.c_in + ci) * g.kh + ky) * g.kw + kx] += d * v as f64;
                            }
                        }
                    }
                }
            }
        }
    }
    dw
}

/// Several chunks of images (64 x 3 x 3 x 28 x 28 = 451,584 im2col values per image, so two
/// images per 1 Mi-value chunk and three chunks for five images): the sum over chunks matches
/// the naive sum, and the result has the same bits on 1, 2 and 3 threads.
#[test]
fn chunked_weight_gradient_matches_the_definition_on_any_thread_count() {
    let opts = ConvOptions::new([1, 1], [1, 1], [1, 1], 1);
    let g = Geometry::new([5, 64, 28, 28], [4, 64, 3, 3], [5, 4, 28, 28], &opts);
    let mut state = 12345u64;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let x: Vec<f32> = (0..5 * 64 * 28 * 28).map(|_| next()).collect();
    let dy: Vec<f32> = (0..5 * 4 * 28 * 28).map(|_| next()).collect();
    let want = naive(&g, &x, &dy);
    let on = |threads: usize| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
            .install(|| weight_grad(&g, &x, &dy))
    };
    let got = on(2);
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!(
            (*a as f64 - b).abs() <= 1e-3 * b.abs().max(1.0),
            "dW[{i}] = {a}, the definition gives {b}"
        );
    }
    for threads in [1, 3] {
        let other = on(threads);
        assert!(
            got.iter()
                .zip(&other)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{threads} threads changed the bits"
        );
    }
}

/// Other backends and other kinds of convolution keep burn's op.
#[test]
fn only_plain_convolutions_on_autodiff_flex_take_the_path() {
    let dev = Default::default();
    let plain = Conv2dConfig::new([2, 3], [3, 3]).with_bias(false);
    assert!(
        !flex_conv::takes_fast_path(&plain.init::<Flex>(&dev)),
        "Flex without autodiff"
    );
    assert!(flex_conv::takes_fast_path(&plain.init::<A>(&dev)));
    let biased = Conv2dConfig::new([2, 3], [3, 3]).with_bias(true);
    assert!(!flex_conv::takes_fast_path(&biased.init::<A>(&dev)), "bias");
    let grouped = Conv2dConfig::new([2, 4], [3, 3])
        .with_bias(false)
        .with_groups(2);
    assert!(
        !flex_conv::takes_fast_path(&grouped.init::<A>(&dev)),
        "groups"
    );
}
