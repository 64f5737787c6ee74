//! The per-channel fast paths against burn's plain broadcasting and PyTorch's PReLU.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Distribution, Tensor, TensorData};
use plsc_models::ops::{per_channel, prelu};

type B = Flex;
type AB = Autodiff<Flex>;

#[test]
fn per_channel_equals_broadcasting() {
    let dev = Default::default();
    let x = Tensor::<B, 4>::random([3, 5, 4, 6], Distribution::Normal(0.0, 1.0), &dev);
    let s = Tensor::<B, 1>::random([5], Distribution::Normal(0.0, 1.0), &dev);
    let b = Tensor::<B, 1>::random([5], Distribution::Normal(0.0, 1.0), &dev);
    let want = x.clone() * s.clone().reshape([1, 5, 1, 1]) + b.clone().reshape([1, 5, 1, 1]);
    let got = per_channel(x.clone(), Some(s), Some(b));
    assert_eq!(got.into_data(), want.into_data());
    let x2 = Tensor::<B, 2>::random([7, 5], Distribution::Normal(0.0, 1.0), &dev);
    let s2 = Tensor::<B, 1>::random([5], Distribution::Normal(0.0, 1.0), &dev);
    let want = x2.clone() * s2.clone().reshape([1, 5]);
    assert_eq!(
        per_channel(x2, Some(s2), None).into_data(),
        want.into_data()
    );
}

#[test]
fn prelu_values_and_gradients_follow_pytorch() {
    let dev = Default::default();
    // [N=1, C=2, 1, 3]; channel 0 slope 0.25, channel 1 slope -0.5; includes exact zeros.
    let xs = [2.0f32, -4.0, 0.0, -1.0, 0.0, 3.0];
    let x =
        Tensor::<AB, 4>::from_data(TensorData::new(xs.to_vec(), [1, 2, 1, 3]), &dev).require_grad();
    let alpha =
        Tensor::<AB, 1>::from_data(TensorData::new(vec![0.25f32, -0.5], [2]), &dev).require_grad();
    let y = prelu(x.clone(), alpha.clone());
    assert_eq!(
        y.clone().into_data().to_vec::<f32>().unwrap(),
        vec![2.0, -1.0, 0.0, 0.5, 0.0, 3.0]
    );
    let w = Tensor::<AB, 4>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [1, 2, 1, 3]),
        &dev,
    );
    let grads = (y * w).sum().backward();
    // dy/dx = 1 where x > 0, alpha elsewhere (PyTorch: alpha at exactly 0).
    let gx = x.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    assert_eq!(gx, vec![1.0, 0.5, 0.75, -2.0, -2.5, 6.0]);
    // dL/dalpha[c] = sum over x <= 0 of x * w.
    let ga = alpha
        .grad(&grads)
        .unwrap()
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(ga, vec![-8.0, -4.0]);
}
