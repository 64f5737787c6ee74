//! Gradient injection: backward from the embedding with the head's dL/dx.

use burn::backend::{Autodiff, Flex};
use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use plsc_models::grad::{backbone_gradients, backward_with_grad};
use plsc_models::{Backbone, BackboneConfig, ModelError};

type B = Flex;
type AB = Autodiff<Flex>;

#[test]
fn injected_gradient_reaches_the_graph_exactly() {
    let dev = Default::default();
    let x = Tensor::<AB, 2>::random([4, 8], Distribution::Normal(0.0, 1.0), &dev).require_grad();
    let g = Tensor::<B, 2>::random([4, 8], Distribution::Normal(0.0, 3.0), &dev);
    let grads = backward_with_grad(x.clone(), g.clone()).unwrap();
    let dx = x.grad(&grads).unwrap();
    // Bit for bit.
    assert_eq!(dx.into_data(), g.into_data());
}

#[test]
fn mismatched_gradient_shape_is_a_named_error() {
    let dev = Default::default();
    let x = Tensor::<AB, 2>::zeros([4, 8], &dev).require_grad();
    let g = Tensor::<B, 2>::zeros([4, 9], &dev);
    match backward_with_grad(x, g) {
        Err(ModelError::BadInput { found, .. }) => assert_eq!(found, vec![4, 9]),
        Err(other) => panic!("expected BadInput, got {other}"),
        Ok(_) => panic!("a [4, 9] gradient for a [4, 8] embedding was accepted"),
    }
}

/// Collects every parameter's gradient, in visiting order.
struct Collect<'a> {
    grads: &'a GradientsParams,
    out: Vec<(ParamId, Option<Vec<f32>>)>,
}

impl ModuleVisitor<AB> for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<AB, D>>) {
        let g = self
            .grads
            .get::<B, D>(p.id)
            .map(|t| t.into_data().to_vec::<f32>().unwrap());
        self.out.push((p.id, g));
    }
}

fn collect(m: &Backbone<AB>, grads: &GradientsParams) -> Vec<(ParamId, Option<Vec<f32>>)> {
    let mut c = Collect {
        grads,
        out: Vec::new(),
    };
    m.visit(&mut c);
    c.out
}

#[test]
fn injection_matches_autodiff_of_an_equivalent_scalar_loss() {
    let dev = Default::default();
    let m: Backbone<AB> = BackboneConfig::new("iresnet_tiny".into())
        .with_input_size(32)
        .with_embedding_size(16)
        .init(&dev)
        .unwrap();
    let n = 6;
    let images = Tensor::<AB, 4>::random([n, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let target = Tensor::<AB, 2>::random([n, 16], Distribution::Normal(0.0, 1.0), &dev);

    // Reference: L = sum((x - t)^2) / (2n) with burn autodiff all the way.
    let x = m.forward(images.clone());
    let loss = (x - target.clone())
        .square()
        .sum()
        .div_scalar(2.0 * n as f64);
    let reference = GradientsParams::from_grads(loss.backward(), &m);

    // Injection: the "head" computes dL/dx = (x - t) / n outside the graph.
    let x = m.forward(images);
    let dx: Tensor<B, 2> = (x.clone().inner() - target.inner()).div_scalar(n as f64);
    let injected = backbone_gradients(&m, x, dx).unwrap();

    let a = collect(&m, &reference);
    let b = collect(&m, &injected);
    assert_eq!(a.len(), b.len());
    // Tensors whose exact gradient is zero (fc.bias before the batch-normalised embedding)
    // carry only rounding noise: judge them against the largest gradient of the model.
    let global = a
        .iter()
        .filter_map(|(_, g)| g.as_ref())
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    let mut with_grad = 0;
    for ((id, ga), (_, gb)) in a.iter().zip(&b) {
        match (ga, gb) {
            (Some(ga), Some(gb)) => {
                with_grad += 1;
                let scale = ga
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    .max(1e-3 * global);
                // Plus an absolute floor at the rounding noise of the model's largest gradient:
                // a tensor whose gradient is itself at noise level (~1e-7) differs by noise.
                for (u, v) in ga.iter().zip(gb) {
                    assert!(
                        (u - v).abs() <= 1e-4 * scale + 1e-5 * global,
                        "param {id}: {u} vs {v} (largest gradient {global})"
                    );
                }
            }
            (None, None) => {}
            _ => panic!("param {id}: gradient in one run only"),
        }
    }
    // Every parameter but the frozen features.weight (buffers have none either).
    assert_eq!(
        with_grad,
        m.state_layout()
            .iter()
            .filter(|e| e.kind == plsc_models::TensorKind::Param)
            .count()
    );
}
