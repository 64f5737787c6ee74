//! Mixed precision at layer boundaries (`plsc_models::amp`) on `Flex`: an IResNet's embeddings
//! and its weight gradients with the products in f16 follow the f32 ones within half
//! precision's rounding, and they are not the f32 ones (the casts happen); bf16 likewise.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor};
use plsc_models::amp::Autocast;
use plsc_models::{Backbone, BackboneConfig, Network};

type B = Autodiff<Flex>;

fn values<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// `|a - b| / |b|` over whole vectors.
fn rel(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den).sqrt()
}

/// Embeddings and the first convolution's weight gradient of `loss = sum(emb * r)`.
fn run(
    m: &Backbone<B>,
    x: &Tensor<B, 4>,
    r: &Tensor<B, 2>,
    cast: Autocast,
) -> (Vec<f32>, Vec<f32>) {
    let emb = m.forward_cast(x.clone(), cast);
    let grads = (emb.clone() * r.clone()).sum().backward();
    let Network::IResNet(net) = &m.net else {
        panic!("an IResNet")
    };
    let g = net.conv1.weight.grad(&grads).unwrap();
    (values(emb.inner()), values(g))
}

#[test]
fn half_precision_products_follow_f32() {
    let dev = Default::default();
    let config = BackboneConfig::new("iresnet_tiny".into())
        .with_embedding_size(32)
        .with_in_channels(1)
        .with_input_size(28);
    let m: Backbone<B> = config.init_seeded(3, &dev).unwrap();
    assert!(m.supports_autocast());
    let x = Tensor::<B, 4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &dev);
    let r = Tensor::<B, 2>::random([4, 32], Distribution::Normal(0.0, 1.0), &dev);
    let (e32, g32) = run(&m, &x, &r, Autocast::Off);
    // Bounds: f16 keeps 11 significant bits (unit roundoff 4.9e-4), bf16 8 (3.9e-3); the
    // embeddings pass 10 rounded products, the first layer's gradient sums 4 x 28 x 28 rounded
    // terms per weight (on Flex its f16 kernels round the partial sums too), hence ~40x the
    // unit roundoff for the gradient.
    for (cast, tol_e, tol_g) in [(Autocast::F16, 1e-2, 5e-2), (Autocast::Bf16, 5e-2, 2e-1)] {
        let (e, g) = run(&m, &x, &r, cast);
        let (de, dg) = (rel(&e, &e32), rel(&g, &g32));
        eprintln!("{cast:?}: embeddings {de:e}, gradient {dg:e}");
        assert!(
            de < tol_e && dg < tol_g,
            "{cast:?}: embeddings {de:e}, gradient {dg:e}"
        );
        assert!(de > 0.0, "{cast:?}: no product ran in half precision");
    }
}
