//! BatchNorm against PyTorch's formulas, computed by hand.

use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Tensor, TensorData};
use plsc_models::norm::BatchNorm;

type B = Flex;
type AB = Autodiff<Flex>;

#[test]
fn running_statistics_follow_pytorch() {
    let dev = Default::default();
    // 2 channels, batch 2, 1x2 spatial: 4 values per channel.
    let x = [1.0f32, 2.0, 10.0, 30.0, 3.0, 6.0, 20.0, 40.0];
    let bn = BatchNorm::<AB>::new(2, false, &dev);
    let input = Tensor::<AB, 4>::from_data(TensorData::new(x.to_vec(), [2, 2, 1, 2]), &dev);
    let y = bn.forward(input).into_data().to_vec::<f32>().unwrap();

    let ch = |c: usize| -> Vec<f64> {
        (0..2)
            .flat_map(|n| (0..2).map(move |w| x[n * 4 + c * 2 + w] as f64))
            .collect()
    };
    for c in 0..2 {
        let v = ch(c);
        let mean = v.iter().sum::<f64>() / 4.0;
        let biased = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / 4.0;
        let unbiased = biased * 4.0 / 3.0;
        // Output: normalised with the biased variance and eps 1e-5.
        for n in 0..2 {
            for w in 0..2 {
                let got = y[n * 4 + c * 2 + w] as f64;
                let want = (x[n * 4 + c * 2 + w] as f64 - mean) / (biased + 1e-5).sqrt();
                assert!((got - want).abs() < 1e-5, "y {got} vs {want}");
            }
        }
        // Running: momentum 0.1 towards the batch mean and the unbiased variance.
        let rm = bn.running_mean().into_data().to_vec::<f32>().unwrap()[c] as f64;
        let rv = bn.running_var().into_data().to_vec::<f32>().unwrap()[c] as f64;
        assert!((rm - 0.1 * mean).abs() < 1e-5, "running_mean {rm}");
        assert!(
            (rv - (0.9 + 0.1 * unbiased)).abs() < 1e-4,
            "running_var {rv}"
        );
    }

    // Eval mode: (x - running_mean) / sqrt(running_var + eps) * weight + bias.
    let eval: BatchNorm<B> = bn.valid();
    let rm = eval.running_mean().into_data().to_vec::<f32>().unwrap();
    let rv = eval.running_var().into_data().to_vec::<f32>().unwrap();
    let input = Tensor::<B, 4>::from_data(TensorData::new(x.to_vec(), [2, 2, 1, 2]), &dev);
    let y = eval.forward(input).into_data().to_vec::<f32>().unwrap();
    for (i, got) in y.iter().enumerate() {
        let c = (i / 2) % 2;
        let want = (x[i] - rm[c]) / (rv[c] + 1e-5).sqrt();
        assert!((got - want).abs() < 1e-5);
    }
}

#[test]
fn fixed_scale_gets_no_gradient() {
    let dev = Default::default();
    let bn = BatchNorm::<AB>::new(3, true, &dev);
    let x = Tensor::<AB, 2>::from_data(
        TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0, 0.0, -1.0], [2, 3]),
        &dev,
    );
    let w = Tensor::<AB, 2>::from_data(
        TensorData::new(vec![0.5f32, -1.0, 2.0, 1.5, 0.25, -0.75], [2, 3]),
        &dev,
    );
    let grads = (bn.forward(x) * w).sum().backward();
    assert!(
        bn.weight.grad(&grads).is_none(),
        "frozen scale got a gradient"
    );
    let gb = bn.bias.grad(&grads).expect("bias is trainable");
    // d/dbias sum(y * w) = column sums of w.
    assert_eq!(
        gb.into_data().to_vec::<f32>().unwrap(),
        vec![2.0, -0.75, 1.25]
    );
}
