//! Every registered model: finite embeddings of the right shape on zero and random batches;
//! eval mode is deterministic; training mode uses batch statistics.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use plsc_models::{Backbone, BackboneConfig, MODEL_NAMES, ModelError};

type B = Flex;

fn all_finite(t: Tensor<B, 2>) -> bool {
    t.into_data()
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .all(|v| v.is_finite())
}

fn all_finite_ad(t: Tensor<Autodiff<B>, 2>) -> bool {
    all_finite(t.inner())
}

/// Eval mode (running statistics) on `Flex`, training mode (batch statistics) on
/// `Autodiff<Flex>`. `eval_random_finite`: whether a random batch must stay finite in eval
/// mode at initialisation (see below).
fn check(name: &str, config: BackboneConfig, batch: usize, eval_random_finite: bool) {
    let dev = Default::default();
    let m: Backbone<B> = config.init(&dev).unwrap();
    let shape = [
        batch,
        config.in_channels,
        config.input_size,
        config.input_size,
    ];
    let zeros = Tensor::<B, 4>::zeros(shape, &dev);
    let random = Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
    for (what, x) in [("zeros", zeros.clone()), ("random", random.clone())] {
        let y = m.try_forward(x).unwrap();
        assert_eq!(y.dims(), [batch, config.embedding_size], "{name} {what}");
        if what == "zeros" || eval_random_finite {
            assert!(all_finite(y), "{name} {what}: non-finite embedding");
        }
    }
    // Eval mode is deterministic.
    let a = m.forward(random.clone()).into_data();
    let b = m.forward(random.clone()).into_data();
    assert_eq!(a, b, "{name}: eval forward not deterministic");

    // Training mode, the same weights.
    let t: Backbone<Autodiff<B>> = config.init(&dev).unwrap();
    for (what, x) in [("zeros", zeros), ("random", random)] {
        let y = t.forward(Tensor::from_inner(x));
        assert_eq!(
            y.dims(),
            [batch, config.embedding_size],
            "{name} train {what}"
        );
        assert!(
            all_finite_ad(y),
            "{name} train {what}: non-finite embedding"
        );
    }
}

#[test]
fn every_registered_model_gives_finite_embeddings() {
    for name in MODEL_NAMES {
        let batch = match *name {
            "iresnet50" | "iresnet100" => 1,
            _ => 2,
        };
        // arcface_torch draws every conv from N(0, 0.1^2) (gain ~6.8 per 512-channel conv3x3)
        // and relies on batch statistics; with the initial running statistics (mean 0, var 1)
        // the 98 convolutions of IResNet-100 overflow f32 in eval mode (the same arithmetic as PyTorch's).
        // Trained or loaded weights do not; training mode is checked for every model.
        let eval_random_finite = *name != "iresnet100";
        check(
            name,
            BackboneConfig::new((*name).into()),
            batch,
            eval_random_finite,
        );
    }
}

#[test]
fn tiny_takes_small_grey_and_colour_inputs() {
    for (channels, size) in [(1, 28), (3, 28), (1, 32), (3, 64), (1, 112)] {
        let config = BackboneConfig::new("iresnet_tiny".into())
            .with_in_channels(channels)
            .with_input_size(size)
            .with_embedding_size(64);
        check("iresnet_tiny", config, 3, true);
    }
}

#[test]
fn wrong_input_shape_is_a_named_error() {
    let m: Backbone<B> = BackboneConfig::new("iresnet_tiny".into())
        .with_input_size(32)
        .init(&Default::default())
        .unwrap();
    let x = Tensor::<B, 4>::zeros([2, 3, 28, 28], &Default::default());
    let err = m.try_forward(x).unwrap_err();
    match err {
        ModelError::BadInput { tensor, found, .. } => {
            assert_eq!(tensor, "images");
            assert_eq!(found, vec![2, 3, 28, 28]);
        }
        other => panic!("expected BadInput, got {other}"),
    }
}

#[test]
fn training_mode_normalises_with_batch_statistics() {
    // Under autodiff the embedding BatchNorm1d normalises each feature over the batch with
    // weight 1 and bias 0 at initialisation: per-feature mean 0 and (biased) variance ~1.
    let dev = Default::default();
    let m: Backbone<Autodiff<B>> = BackboneConfig::new("iresnet_tiny".into())
        .with_input_size(32)
        .with_embedding_size(16)
        .init(&dev)
        .unwrap();
    let x = Tensor::random([8, 3, 32, 32], Distribution::Normal(0.0, 1.0), &dev);
    let y = m.forward(x.clone());
    let mean = y.clone().mean_dim(0).into_data().to_vec::<f32>().unwrap();
    let var = (y.clone() - y.clone().mean_dim(0))
        .square()
        .mean_dim(0)
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    for (m, v) in mean.iter().zip(&var) {
        assert!(m.abs() < 1e-4, "mean {m}");
        assert!((v - 1.0).abs() < 1e-3, "var {v}");
    }
    // The same model in eval mode uses running statistics: a different result.
    let eval = m.valid().forward(x.inner()).into_data();
    assert_ne!(eval, y.inner().into_data());
}
