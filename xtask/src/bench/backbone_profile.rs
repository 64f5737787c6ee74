//! `bench backbone --profile`: where an IResNet's training step spends its time, per operation
//! kind, on `Autodiff<Flex>` (the convolutions as the network runs them:
//! `plsc_models::flex_conv::conv2d`).
//!
//! burn-flex runs each operation when it is called (eager), so each layer of the network can be
//! timed alone: its input (the output of the layers before it, on this batch) enters as a fresh
//! tracked tensor, the layer runs forward, and the backward starts from a random gradient of its
//! output (`(y * g).sum().backward()`). The cost of that seeding (a product, a sum and their
//! backward on a tensor of the output's shape) is measured with an identity layer and taken off.
//! Medians of `iters` runs after a warm-up, summed per kind (convolution by kernel and stride,
//! BatchNorm, PReLU, residual add, linear...). The whole network's forward + backward in the same
//! run is reported beside the sum: the difference is what the per-layer split cannot attribute
//! (graph bookkeeping across layers, gradient accumulation of shared inputs).

use super::stats::median;
use burn::backend::{Autodiff, Flex};
use burn::module::AutodiffModule;
use burn::tensor::{Distribution, Tensor};
use plsc_models::flex_conv::conv2d;
use plsc_models::iresnet::IResNet;
use plsc_models::ops::prelu;
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

type A = Autodiff<Flex>;

/// One operation kind's share of the step.
#[derive(Serialize)]
pub struct KindCost {
    pub kind: String,
    pub calls: usize,
    pub forward_seconds: f64,
    pub forward_backward_seconds: f64,
    /// Share of the sum of all kinds' forward + backward.
    pub share: f64,
}

/// The profile of one model.
#[derive(Serialize)]
pub struct Profile {
    pub batch: usize,
    pub input: [usize; 3],
    pub kinds: Vec<KindCost>,
    pub sum_forward_seconds: f64,
    pub sum_forward_backward_seconds: f64,
    /// The whole network's forward + backward (median, same run).
    pub whole_forward_backward_seconds: f64,
    pub note: &'static str,
}

struct Timer {
    iters: usize,
    device: <Flex as burn::tensor::backend::BackendTypes>::Device,
    /// kind -> (calls, forward seconds, forward+backward seconds)
    kinds: BTreeMap<String, (usize, f64, f64)>,
    /// Seeding cost by output element count.
    seed_cost: BTreeMap<usize, (f64, f64)>,
}

impl Timer {
    /// Times `f` forward and forward + backward on input `x`; returns its output (untracked).
    fn op<const DI: usize, const DO: usize>(
        &mut self,
        kind: &str,
        x: &Tensor<Flex, DI>,
        f: impl Fn(Tensor<A, DI>) -> Tensor<A, DO>,
    ) -> Tensor<Flex, DO> {
        let (fwd, fb, out) = self.measure(x, &f);
        let (sf, sfb) = self.seed_cost(&out);
        let e = self.kinds.entry(kind.to_string()).or_default();
        e.0 += 1;
        e.1 += (fwd - sf).max(0.0);
        e.2 += (fb - sfb).max(0.0);
        out
    }

    fn measure<const DI: usize, const DO: usize>(
        &self,
        x: &Tensor<Flex, DI>,
        f: &impl Fn(Tensor<A, DI>) -> Tensor<A, DO>,
    ) -> (f64, f64, Tensor<Flex, DO>) {
        let (mut fwd, mut fb) = (Vec::new(), Vec::new());
        let mut out = None;
        let mut grad = None;
        for it in 0..=self.iters {
            let xa = Tensor::<A, DI>::from_inner(x.clone()).require_grad();
            let t = Instant::now();
            let y = f(xa);
            let tf = t.elapsed().as_secs_f64();
            let g = grad
                .get_or_insert_with(|| {
                    Tensor::<Flex, DO>::random(
                        y.dims(),
                        Distribution::Normal(0.0, 1.0),
                        &self.device,
                    )
                })
                .clone();
            let xa = Tensor::<A, DI>::from_inner(x.clone()).require_grad();
            let t = Instant::now();
            let y = f(xa);
            let _grads = (y.clone() * Tensor::from_inner(g)).sum().backward();
            let tfb = t.elapsed().as_secs_f64();
            if it > 0 {
                fwd.push(tf);
                fb.push(tfb);
            }
            out = Some(y.inner());
        }
        (median(&fwd), median(&fb), out.expect("at least one run"))
    }

    /// The identity layer's cost on an output like `y` (the seeding of the backward).
    fn seed_cost<const D: usize>(&mut self, y: &Tensor<Flex, D>) -> (f64, f64) {
        let n = y.shape().num_elements();
        if let Some(c) = self.seed_cost.get(&n) {
            return *c;
        }
        let (f, fb, _) = self.measure(y, &|x: Tensor<A, D>| x);
        self.seed_cost.insert(n, (f, fb));
        (f, fb)
    }
}

/// Profiles `net` on a batch of `batch` random images `[channels, side, side]`.
pub fn profile(
    net: &IResNet<A>,
    batch: usize,
    channels: usize,
    side: usize,
    iters: usize,
) -> Profile {
    let device = Default::default();
    let mut t = Timer {
        iters,
        device,
        kinds: BTreeMap::new(),
        seed_cost: BTreeMap::new(),
    };
    let x0 = Tensor::<Flex, 4>::random(
        [batch, channels, side, side],
        Distribution::Normal(0.0, 1.0),
        &device,
    );
    let conv_kind = |c: &burn::nn::conv::Conv2d<A>| {
        let [k, _] = c.kernel_size;
        format!("conv{k}x{k} stride {}", c.stride[0])
    };
    let mut x = t.op(&conv_kind(&net.conv1), &x0, |x| conv2d(&net.conv1, x));
    x = t.op("batchnorm2d", &x, |x| net.bn1.forward(x));
    x = t.op("prelu", &x, |x| prelu(x, net.prelu.alpha.val()));
    for block in net
        .layer1
        .iter()
        .chain(&net.layer2)
        .chain(&net.layer3)
        .chain(&net.layer4)
    {
        let input = x.clone();
        let mut y = t.op("batchnorm2d", &input, |x| block.bn1.forward(x));
        y = t.op(&conv_kind(&block.conv1), &y, |x| conv2d(&block.conv1, x));
        y = t.op("batchnorm2d", &y, |x| block.bn2.forward(x));
        y = t.op("prelu", &y, |x| prelu(x, block.prelu.alpha.val()));
        y = t.op(&conv_kind(&block.conv2), &y, |x| conv2d(&block.conv2, x));
        y = t.op("batchnorm2d", &y, |x| block.bn3.forward(x));
        let identity = match &block.downsample {
            Some(d) => {
                let s = t.op(&conv_kind(&d.conv), &input, |x| conv2d(&d.conv, x));
                t.op("batchnorm2d", &s, |x| d.bn.forward(x))
            }
            None => input,
        };
        let other = Tensor::<A, 4>::from_inner(identity).require_grad();
        x = t.op("residual add", &y, |x| x + other.clone());
    }
    x = t.op("batchnorm2d", &x, |x| net.bn2.forward(x));
    let flat = t.op("flatten", &x, |x| x.flatten::<2>(1, 3));
    let e = t.op("linear", &flat, |x| net.fc.forward(x));
    t.op("batchnorm1d", &e, |x| net.features.forward(x));

    // The whole network in the same run.
    let g = Tensor::<Flex, 2>::random(e.dims(), Distribution::Normal(0.0, 1.0), &device);
    let whole: Vec<f64> = (0..=iters)
        .map(|_| {
            let xa = Tensor::<A, 4>::from_inner(x0.clone());
            let start = Instant::now();
            let y = net.forward(xa);
            let _grads = (y * Tensor::from_inner(g.clone())).sum().backward();
            start.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    let _ = net.valid();

    let sum_fb: f64 = t.kinds.values().map(|v| v.2).sum();
    let mut kinds: Vec<KindCost> = t
        .kinds
        .into_iter()
        .map(|(kind, (calls, f, fb))| KindCost {
            kind,
            calls,
            forward_seconds: f,
            forward_backward_seconds: fb,
            share: fb / sum_fb,
        })
        .collect();
    kinds.sort_by(|a, b| {
        b.forward_backward_seconds
            .total_cmp(&a.forward_backward_seconds)
    });
    Profile {
        batch,
        input: [channels, side, side],
        sum_forward_seconds: kinds.iter().map(|k| k.forward_seconds).sum(),
        sum_forward_backward_seconds: sum_fb,
        kinds,
        whole_forward_backward_seconds: median(&whole),
        note: "per layer, alone, on its real input; seeding cost (identity layer) taken off; medians summed per kind",
    }
}
