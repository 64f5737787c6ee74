//! The backbones' convolutions on the CPU training backend (`Autodiff<Flex>`), with a faster
//! weight gradient.
//!
//! burn 0.21 computes a convolution's weight gradient, on every backend, as another convolution
//! over dims-swapped tensors: the batch becomes the channels and the output gradient the kernel
//! (`burn_backend::ops::modules::conv::conv2d_weight_grad_no_groups`). On burn-flex that turns
//! into one tiny product per input channel with an im2col as large as the whole batch, and it
//! took more time than the forward and the input gradient together (`cargo xtask bench
//! backbone --profile`, docs/benchmarks.md). Here the weight gradient is the textbook product
//! instead:
//!
//! `dW[co, (ci, kh, kw)] = sum over (n, oh, ow) of dY[n, co, oh, ow] * X[n, ci, oh*s + kh - p,
//! ow*s + kw - p]`,
//!
//! one `gemm` call (the crate the head and burn-flex use) per fixed-size chunk of images over an
//! im2col of that chunk, the chunks on rayon's threads and their partial sums added in chunk
//! order. The chunking depends on the shapes only, never on the thread count, so the gradient
//! is bit-identical for any number of threads, in rank threads or in processes.
//!
//! The forward and the input gradient stay burn-flex's own (`conv2d`, `conv2d_x_backward`). It
//! is registered as its own autodiff operation on `Autodiff<Flex>` only: [`conv2d`] takes this
//! path when the backend is exactly `Autodiff<Flex>` (a type check at run time, no new trait
//! bound on the backbones), the convolution has no bias, one group, dilation 1 and f32 data;
//! every other backend (burn-cuda included) and every other case calls burn's `Conv2d::forward`.

use std::any::Any;

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Autodiff, Flex};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::ops::{ConvOptions, FloatTensor, ModuleOps};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive, backend::Backend};
use rayon::prelude::*;

/// The CPU training backend this module speeds up.
pub type CpuAutodiff = Autodiff<Flex>;

/// Largest im2col chunk, in f32 elements (4 MiB): small enough to stay in cache-sized pieces,
/// large enough that each product has a long inner dimension.
const CHUNK_ELEMENTS: usize = 1 << 20;

/// `conv.forward(x)`, with the weight gradient of [`weight_grad`] when the backend is
/// `Autodiff<Flex>` and the convolution is plain (no bias, one group, dilation 1, explicit
/// symmetric padding, f32); burn's own operation otherwise.
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>) -> Tensor<B, 4> {
    let Some(options) = plain_options(conv) else {
        return conv.forward(x);
    };
    if x.dtype() != DType::F32 {
        return conv.forward(x);
    }
    let x = match cast::<Tensor<B, 4>, Tensor<CpuAutodiff, 4>>(x) {
        Ok(x) => x,
        Err(x) => return conv.forward(x),
    };
    let weight = cast::<Tensor<B, 4>, Tensor<CpuAutodiff, 4>>(conv.weight.val())
        .unwrap_or_else(|_| unreachable!("the weight is on the input's backend"));
    let y = conv2d_flex(x, weight, options);
    cast::<Tensor<CpuAutodiff, 4>, Tensor<B, 4>>(y)
        .unwrap_or_else(|_| unreachable!("B is Autodiff<Flex> here"))
}

/// Whether [`conv2d`] takes this module's path for `conv` on backend `B` (f32 input).
pub fn takes_fast_path<B: Backend>(conv: &Conv2d<B>) -> bool {
    plain_options(conv).is_some()
        && std::any::TypeId::of::<B>() == std::any::TypeId::of::<CpuAutodiff>()
}

/// The convolution's options when it is one this module handles.
fn plain_options<B: Backend>(conv: &Conv2d<B>) -> Option<ConvOptions<2>> {
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(top, left, bottom, right) => (top, left, bottom, right),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        PaddingConfig2d::Same => return None,
    };
    let plain = conv.bias.is_none()
        && conv.groups == 1
        && conv.dilation == [1, 1]
        && top == bottom
        && left == right;
    plain.then(|| ConvOptions::new(conv.stride, [top, left], [1, 1], 1))
}

/// Moves `t` into a `U` when `T` and `U` are the same type.
fn cast<T: 'static, U: 'static>(t: T) -> Result<U, T> {
    let mut slot = Some(t);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("not taken")),
    }
}

/// The autodiff operation: burn-flex's forward, its input gradient, [`weight_grad`].
fn conv2d_flex(
    x: Tensor<CpuAutodiff, 4>,
    weight: Tensor<CpuAutodiff, 4>,
    options: ConvOptions<2>,
) -> Tensor<CpuAutodiff, 4> {
    let x = x.into_primitive().tensor();
    let weight = weight.into_primitive().tensor();
    let out = match ConvNoBias
        .prepare::<NoCheckpointing>([x.node.clone(), weight.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let weight_state = prep.checkpoint(&weight);
            prep.finish(
                (x_state, weight_state, options.clone()),
                Flex::conv2d(x.primitive, weight.primitive, None, options),
            )
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(Flex::conv2d(x.primitive, weight.primitive, None, options))
        }
    };
    Tensor::from_primitive(TensorPrimitive::Float(out))
}

#[derive(Debug)]
struct ConvNoBias;

impl Backward<Flex, 2> for ConvNoBias {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x_state, weight_state, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(x_state);
        let weight = checkpointer.retrieve_node_output::<FloatTensor<Flex>>(weight_state);
        if let Some(node) = node_x {
            let dx =
                Flex::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<Flex>(node.id, dx);
        }
        if let Some(node) = node_weight {
            let dims = |t: &FloatTensor<Flex>| -> [usize; 4] { t.layout().shape().dims::<4>() };
            let w_dims = dims(&weight);
            let geometry = Geometry::new(dims(&x), w_dims, dims(&grad), &options);
            let device = Tensor::<Flex, 4>::from_primitive(TensorPrimitive::Float(weight)).device();
            let (x, dy) = (contiguous(&x), contiguous(&grad));
            let dw = weight_grad(&geometry, f32_slice(&x), f32_slice(&dy));
            let dw = Tensor::<Flex, 4>::from_data(TensorData::new(dw, w_dims), &device);
            grads.register::<Flex>(node.id, dw.into_primitive().tensor());
        }
    }
}

/// `t` with its elements in row-major order from the start of its buffer (the same buffer,
/// no copy, when it already is).
pub(crate) fn contiguous(t: &FloatTensor<Flex>) -> FloatTensor<Flex> {
    t.to_contiguous()
}

/// The f32 elements of a contiguous tensor from [`contiguous`], borrowed.
pub(crate) fn f32_slice(t: &FloatTensor<Flex>) -> &[f32] {
    t.as_slice::<f32>()
        .expect("an f32 tensor made contiguous (checked by the callers)")
}

/// The shapes of one convolution (NCHW input, OIHW weight, square stride and padding per axis).
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    /// Images.
    pub n: usize,
    /// Input channels, height, width.
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels, kernel height and width.
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    /// Output height and width.
    pub oh: usize,
    pub ow: usize,
    /// Stride and padding (height, width).
    pub stride: [usize; 2],
    pub padding: [usize; 2],
}

impl Geometry {
    /// From the input, weight and output-gradient dims and the options.
    pub fn new(x: [usize; 4], w: [usize; 4], dy: [usize; 4], options: &ConvOptions<2>) -> Self {
        Self {
            n: x[0],
            c_in: x[1],
            h: x[2],
            w: x[3],
            c_out: w[0],
            kh: w[2],
            kw: w[3],
            oh: dy[2],
            ow: dy[3],
            stride: options.stride,
            padding: options.padding,
        }
    }

    /// The output columns `lo..hi` whose input column `ox * stride + kx - padding` lies inside
    /// the image (the others read padding, zero).
    fn valid_columns(&self, kx: usize) -> (usize, usize) {
        let (s, p) = (self.stride[1], self.padding[1]);
        let lo = p.saturating_sub(kx).div_ceil(s).min(self.ow);
        // Largest ox with ox * s + kx - p <= w - 1.
        let hi = if self.w + p > kx {
            ((self.w - 1 + p - kx) / s + 1).min(self.ow)
        } else {
            0
        };
        (lo, hi.max(lo))
    }

    /// Images per chunk: the im2col of a chunk holds at most [`CHUNK_ELEMENTS`] values (at
    /// least one image). Shapes only: the same for every thread count.
    fn images_per_chunk(&self) -> usize {
        let per_image = self.c_in * self.kh * self.kw * self.oh * self.ow;
        (CHUNK_ELEMENTS / per_image.max(1)).clamp(1, self.n.max(1))
    }
}

/// The weight gradient `[c_out, c_in, kh, kw]` (row-major) of a convolution with geometry `g`,
/// from its input `x` `[n, c_in, h, w]` and output gradient `dy` `[n, c_out, oh, ow]`.
pub fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    assert_eq!(x.len(), g.n * g.c_in * g.h * g.w, "input size");
    assert_eq!(
        dy.len(),
        g.n * g.c_out * g.oh * g.ow,
        "output gradient size"
    );
    let rows = g.c_in * g.kh * g.kw;
    let per_chunk = g.images_per_chunk();
    let chunks: Vec<(usize, usize)> = (0..g.n)
        .step_by(per_chunk)
        .map(|start| (start, (start + per_chunk).min(g.n)))
        .collect();
    let partials: Vec<Vec<f32>> = chunks
        .par_iter()
        .map(|&(start, end)| chunk_weight_grad(g, x, dy, start, end))
        .collect();
    let mut dw = vec![0.0f32; g.c_out * rows];
    for part in &partials {
        for (d, p) in dw.iter_mut().zip(part) {
            *d += p;
        }
    }
    dw
}

/// The weight gradient over images `start..end`, with one product.
fn chunk_weight_grad(g: &Geometry, x: &[f32], dy: &[f32], start: usize, end: usize) -> Vec<f32> {
    let images = end - start;
    let plane = g.oh * g.ow;
    let depth = images * plane; // the product's inner dimension
    let rows = g.c_in * g.kh * g.kw;
    // colT[(ci, kh, kw), (n, oh, ow)]: each row contiguous along (n, oh, ow).
    let mut col = vec![0.0f32; rows * depth];
    for ci in 0..g.c_in {
        for ky in 0..g.kh {
            for kx in 0..g.kw {
                let row = (ci * g.kh + ky) * g.kw + kx;
                let dst = &mut col[row * depth..(row + 1) * depth];
                for (i, n) in (start..end).enumerate() {
                    let src = &x[(n * g.c_in + ci) * g.h * g.w..][..g.h * g.w];
                    for oy in 0..g.oh {
                        let iy = (oy * g.stride[0] + ky) as isize - g.padding[0] as isize;
                        let out = &mut dst[i * plane + oy * g.ow..][..g.ow];
                        if iy < 0 || iy >= g.h as isize {
                            continue; // stays 0
                        }
                        let line = &src[iy as usize * g.w..][..g.w];
                        let (lo, hi) = g.valid_columns(kx);
                        if hi == lo {
                            continue;
                        }
                        if g.stride[1] == 1 {
                            let first = lo + kx - g.padding[1];
                            out[lo..hi].copy_from_slice(&line[first..first + (hi - lo)]);
                        } else {
                            for (ox, o) in out.iter_mut().enumerate().take(hi).skip(lo) {
                                *o = line[ox * g.stride[1] + kx - g.padding[1]];
                            }
                        }
                    }
                }
            }
        }
    }
    // dyc[co, (n, oh, ow)].
    let mut dyc = vec![0.0f32; g.c_out * depth];
    for (i, n) in (start..end).enumerate() {
        for co in 0..g.c_out {
            let src = &dy[(n * g.c_out + co) * plane..][..plane];
            dyc[co * depth + i * plane..][..plane].copy_from_slice(src);
        }
    }
    let mut dw = vec![0.0f32; g.c_out * rows];
    // SAFETY: dst `dw` is [c_out, rows] row-major (column stride 1, row stride `rows`); lhs
    // `dyc` is [c_out, depth] row-major; rhs is `col` read as its transpose [depth, rows]
    // (element (p, j) at j * depth + p: row stride 1, column stride `depth`). Every index the
    // strides reach lies inside the three buffers, and `dw` aliases neither input.
    unsafe {
        gemm::gemm(
            g.c_out,
            rows,
            depth,
            dw.as_mut_ptr(),
            1,
            rows as isize,
            false,
            dyc.as_ptr(),
            1,
            depth as isize,
            col.as_ptr(),
            depth as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    dw
}
