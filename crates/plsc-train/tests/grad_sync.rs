//! Data-parallel gradient sync: with 2 and 3 rank threads fed different data, every replica
//! ends with the sum of the individual gradients (in rank order, so bit for bit), identical on
//! every rank.

use burn::backend::{Autodiff, Flex};
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use plsc_comm::{CommError, Communicator, run_ranks};
use plsc_train::sync::FlatGrads;

type B = Autodiff<Flex>;

type Net<Bk> = Linear<Bk>;

/// One model for every rank: parameters read once so that clones share their values (burn
/// initialises lazily, and a clone of an unread parameter would draw its own).
fn net(device: &burn::tensor::Device<B>) -> Net<B> {
    let model = LinearConfig::new(6, 4).init::<B>(device);
    let _ = (model.weight.val(), model.bias.as_ref().map(|b| b.val()));
    model
}

/// This rank's gradients as one flat buffer: loss = sum(tanh(x W + b)^2) on rank-specific x.
fn local_grads(model: &Net<B>, rank: usize) -> FlatGrads {
    let device = Default::default();
    let x: Vec<f32> = (0..5 * 6)
        .map(|i| (((i + 7 * rank) * 13 % 17) as f32 - 8.0) * 0.21)
        .collect();
    let x = Tensor::<B, 2>::from_data(TensorData::new(x, [5, 6]), &device);
    let y = model.forward(x).tanh();
    let grads = (y.clone() * y).sum().backward();
    let mut params = GradientsParams::from_grads::<B, _>(grads, model);
    FlatGrads::collect::<B, _>(model, &mut params)
}

#[test]
fn replicas_end_with_the_bitwise_sum_on_2_and_3_ranks() {
    let device = Default::default();
    let model = net(&device);
    for n in [2, 3] {
        // Serial reference: each rank's gradient, summed in rank order.
        let mut expect = local_grads(&model, 0).values;
        for r in 1..n {
            for (e, g) in expect.iter_mut().zip(local_grads(&model, r).values) {
                *e += g;
            }
        }
        let results = run_ranks(n, |comm| {
            let replica = model.clone();
            let mut flat = local_grads(&replica, comm.rank());
            flat.all_reduce_sum(&comm).map_err(|e| CommError::Backend {
                rank: comm.rank(),
                op: "sync",
                detail: e.to_string(),
            })?;
            Ok::<_, CommError>(flat.values)
        });
        for (r, res) in results.into_iter().enumerate() {
            let got = res.unwrap();
            assert_eq!(got.len(), 6 * 4 + 4);
            let same_bits = got
                .iter()
                .zip(&expect)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same_bits, "n={n} rank {r}: {got:?} vs {expect:?}");
        }
        assert!(expect.iter().any(|v| *v != 0.0));
    }
}
