//! SGD-momentum against a hand computation; global-norm clipping.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, Param};
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use plsc_models::clip::{CLIP_EPS, clip_grad_norm, global_grad_norm};
use plsc_models::optim::SgdMomentumConfig;

type AB = Autodiff<Flex>;

#[derive(Module, Debug)]
struct Two<B: Backend> {
    a: Param<Tensor<B, 1>>,
    b: Param<Tensor<B, 2>>,
}

fn two(a: &[f32], b: &[f32]) -> Two<AB> {
    let dev = Default::default();
    Two {
        a: Param::from_tensor(Tensor::from_data(
            TensorData::new(a.to_vec(), [a.len()]),
            &dev,
        )),
        b: Param::from_tensor(Tensor::from_data(
            TensorData::new(b.to_vec(), [2, b.len() / 2]),
            &dev,
        )),
    }
}

/// Gradients of L = sum(a * ca) + sum(b * cb): exactly ca and cb.
fn grads(m: &Two<AB>, ca: &[f32], cb: &[f32]) -> GradientsParams {
    let dev = Default::default();
    let ta = Tensor::<AB, 1>::from_data(TensorData::new(ca.to_vec(), [ca.len()]), &dev);
    let tb = Tensor::<AB, 2>::from_data(TensorData::new(cb.to_vec(), [2, cb.len() / 2]), &dev);
    let loss = (m.a.val() * ta).sum() + (m.b.val() * tb).sum();
    GradientsParams::from_grads(loss.backward(), m)
}

fn values<const D: usize>(p: &Param<Tensor<AB, D>>) -> Vec<f32> {
    p.val().into_data().to_vec::<f32>().unwrap()
}

#[test]
fn sgd_momentum_matches_pytorch_by_hand() {
    let (lr, mu, wd) = (0.1f64, 0.9f64, 5e-4f64);
    let a0 = [1.0f32, -2.0, 0.5];
    let b0 = [0.25f32, 3.0, -1.0, 2.0];
    let ga = [0.3f32, -0.7, 1.1];
    let gb = [-0.2f32, 0.4, 0.9, -1.5];
    let mut optim = SgdMomentumConfig::new().init::<AB, Two<AB>>();
    let mut m = two(&a0, &b0);
    for _ in 0..2 {
        let g = grads(&m, &ga, &gb);
        m = optim.step(lr, m, g);
    }
    // PyTorch, dampening 0: d = g + wd p; v1 = d1; v2 = mu v1 + d2; p -= lr v.
    let by_hand = |p0: &[f32], g: &[f32]| -> Vec<f64> {
        p0.iter()
            .zip(g)
            .map(|(&p, &g)| {
                let (p, g) = (p as f64, g as f64);
                let v1 = g + wd * p;
                let p1 = p - lr * v1;
                let v2 = mu * v1 + (g + wd * p1);
                p1 - lr * v2
            })
            .collect()
    };
    for (got, want) in [
        (values(&m.a), by_hand(&a0, &ga)),
        (values(&m.b), by_hand(&b0, &gb)),
    ] {
        for (g, w) in got.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-6, "{g} vs {w}");
        }
    }
    // burn's default dampening (0.1) would give a visibly different second step.
    let damped =
        (a0[0] as f64 - lr * (ga[0] as f64 + wd * a0[0] as f64)) - lr * 0.9 * (ga[0] as f64);
    assert!((values(&m.a)[0] as f64 - damped).abs() > 1e-3);
}

#[test]
fn weight_decay_and_momentum_can_be_off() {
    let mut optim = SgdMomentumConfig::new()
        .with_momentum(0.0)
        .with_weight_decay(0.0)
        .init::<AB, Two<AB>>();
    let mut m = two(&[1.0, 2.0], &[3.0, 4.0]);
    for _ in 0..2 {
        let g = grads(&m, &[0.5, -0.5], &[1.0, 2.0]);
        m = optim.step(0.5, m, g);
    }
    // Plain SGD: p - 2 * lr * g.
    assert_eq!(values(&m.a), vec![0.5, 2.5]);
    assert_eq!(values(&m.b), vec![2.0, 2.0]);
}

#[test]
fn global_norm_clipping_scales_all_tensors_by_one_factor() {
    let m = two(&[0.0; 3], &[0.0; 4]);
    let ga = [3.0f32, 0.0, 0.0];
    let gb = [0.0f32, 4.0, 0.0, 12.0];
    // Global norm sqrt(9 + 16 + 144) = 13.
    let mut g = grads(&m, &ga, &gb);
    assert!((global_grad_norm(&m, &g) - 13.0).abs() < 1e-6);
    let norm = clip_grad_norm(&m, &mut g, 5.0);
    assert!((norm - 13.0).abs() < 1e-6);
    let f = 5.0 / (13.0 + CLIP_EPS);
    let got_a = g
        .get::<Flex, 1>(m.a.id)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let got_b = g
        .get::<Flex, 2>(m.b.id)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (got, want) in got_a.iter().chain(&got_b).zip(ga.iter().chain(&gb)) {
        assert!(
            (*got as f64 - *want as f64 * f).abs() < 1e-6,
            "{got} vs {want} * {f}"
        );
    }
    // The new global norm is the maximum; per-tensor clipping would have left `a` (norm 3) alone.
    assert!((global_grad_norm(&m, &g) - 5.0).abs() < 1e-5);
    assert!(got_a[0] < 3.0 - 1.0);

    // Below the threshold nothing changes.
    let mut g = grads(&m, &ga, &gb);
    let norm = clip_grad_norm(&m, &mut g, 20.0);
    assert!((norm - 13.0).abs() < 1e-6);
    let got_b = g
        .get::<Flex, 2>(m.b.id)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(got_b, gb.to_vec());
}

#[test]
fn a_step_on_a_backbone_moves_weights_but_not_the_frozen_scale_or_buffers() {
    use burn::tensor::Distribution;
    use plsc_models::grad::backbone_gradients;
    use plsc_models::{Backbone, BackboneConfig};
    let dev = Default::default();
    let m: Backbone<AB> = BackboneConfig::new("iresnet_tiny".into())
        .with_input_size(28)
        .with_embedding_size(8)
        .init(&dev)
        .unwrap();
    let x = Tensor::<AB, 4>::random([4, 3, 28, 28], Distribution::Normal(0.0, 1.0), &dev);
    let y = m.forward(x);
    let before = m.state_tensors();
    let dy = Tensor::<Flex, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &dev);
    let mut grads = backbone_gradients(&m, y, dy).unwrap();
    let norm = clip_grad_norm(&m, &mut grads, 5.0);
    assert!(norm.is_finite() && norm > 0.0);
    let mut optim = SgdMomentumConfig::new().init::<AB, Backbone<AB>>();
    let m = optim.step(0.1, m, grads);
    let after = m.state_tensors();
    for (b, a) in before.iter().zip(&after) {
        let name = &b.name;
        let moved = a.values != b.values;
        match b.kind {
            plsc_models::TensorKind::Param => assert!(moved, "{name} did not move"),
            _ => assert!(!moved, "{name} moved"),
        }
    }
}
