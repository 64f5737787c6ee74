//! Per-channel PReLU as one operation on the CPU training backend (`Autodiff<Flex>`).
//!
//! [`crate::ops::prelu`] composes a comparison, a per-channel product (reshapes and a repeat)
//! and a masked select; its backward was most of its cost (`bench backbone --profile`). Here:
//! forward `y = x > 0 ? x : alpha[c] * x`; backward `dx = x > 0 ? dy : alpha[c] * dy` and
//! `dalpha[c] = sum of x * dy over the entries with x <= 0` (PyTorch's gradient), each one pass.
//! `dalpha` sums in f64 per channel in a fixed order: the same bits on any thread count.
//! [`prelu`] takes this path only when the backend is exactly `Autodiff<Flex>` and the data f32.

use std::any::Any;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};
use rayon::prelude::*;

type CpuAutodiff = Autodiff<Flex>;

/// Moves `t` into a `U` when `T` and `U` are the same type.
fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// PReLU of `x` `[N, C, ...]` with one slope per channel as one autodiff operation, when `B` is
/// `Autodiff<Flex>` and `x` is f32; `None` otherwise (the caller composes burn's operations).
pub fn prelu<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    alpha: &Tensor<B, 1>,
) -> Option<Tensor<B, D>> {
    if x.dtype() != DType::F32 || D < 2 {
        return None;
    }
    let x = cast::<Tensor<B, D>, Tensor<CpuAutodiff, D>>(x.clone()).ok()?;
    let alpha = cast::<Tensor<B, 1>, Tensor<CpuAutodiff, 1>>(alpha.clone()).ok()?;
    cast(prelu_flex(x, alpha)).ok()
}

#[derive(Clone, Debug)]
struct State {
    x: Arc<Vec<f32>>,
    alpha: Arc<Vec<f32>>,
    dims: Vec<usize>,
}

#[derive(Debug)]
struct PreluOp;

impl Backward<Flex, 2> for PreluOp {
    type State = State;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_alpha] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let st = ops.state;
        let dy = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(grad));
        let device = dy.device();
        let dy = dy.into_data().into_vec::<f32>().expect("f32 gradient");
        let (n, c) = (st.dims[0], st.dims[1]);
        let rest: usize = st.dims[2..].iter().product();
        if let Some(node) = node_x {
            let mut dx = vec![0.0f32; dy.len()];
            dx.par_chunks_mut(rest)
                .zip(dy.par_chunks(rest))
                .zip(st.x.par_chunks(rest))
                .enumerate()
                .for_each(|(row, ((dx, dy), x))| {
                    let a = st.alpha[row % c];
                    for ((o, d), v) in dx.iter_mut().zip(dy).zip(x) {
                        *o = if *v > 0.0 { *d } else { a * d };
                    }
                });
            let dx = Flex::float_from_data(TensorData::new(dx, st.dims.clone()), &device);
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_alpha {
            let da: Vec<f32> = (0..c)
                .into_par_iter()
                .map(|ch| {
                    let mut s = 0.0f64;
                    for i in 0..n {
                        let at = (i * c + ch) * rest;
                        for (v, d) in st.x[at..at + rest].iter().zip(&dy[at..at + rest]) {
                            if *v <= 0.0 {
                                s += *v as f64 * *d as f64;
                            }
                        }
                    }
                    s as f32
                })
                .collect();
            let da = Flex::float_from_data(TensorData::new(da, [c]), &device);
            grads.register::<Flex>(node.id, da);
        }
    }
}

fn prelu_flex<const D: usize>(
    x: Tensor<CpuAutodiff, D>,
    alpha: Tensor<CpuAutodiff, 1>,
) -> Tensor<CpuAutodiff, D> {
    let dims = x.dims();
    let device = x.device();
    let c = dims[1];
    let rest: usize = dims[2..].iter().product();
    let x = x.into_primitive().tensor();
    let alpha = alpha.into_primitive().tensor();
    let xv = Tensor::<Flex, D>::from_primitive(TensorPrimitive::Float(x.primitive.clone()))
        .into_data()
        .into_vec::<f32>()
        .expect("f32 (checked)");
    let av = Tensor::<Flex, 1>::from_primitive(TensorPrimitive::Float(alpha.primitive.clone()))
        .into_data()
        .into_vec::<f32>()
        .expect("f32 slopes");
    let mut y = vec![0.0f32; xv.len()];
    y.par_chunks_mut(rest)
        .zip(xv.par_chunks(rest))
        .enumerate()
        .for_each(|(row, (y, x))| {
            let a = av[row % c];
            for (o, v) in y.iter_mut().zip(x) {
                *o = if *v > 0.0 { *v } else { a * v };
            }
        });
    let y = Flex::float_from_data(TensorData::new(y, dims.to_vec()), &device);
    let out = match PreluOp
        .prepare::<NoCheckpointing>([x.node.clone(), alpha.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                x: Arc::new(xv),
                alpha: Arc::new(av),
                dims: dims.to_vec(),
            },
            y,
        ),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}
