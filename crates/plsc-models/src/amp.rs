//! Mixed precision for the backbone on burn 0.21, which has no autocast: PyTorch's autocast
//! rule for the products, applied at layer boundaries. A convolution or linear layer casts its
//! input and its f32 master weights to half precision ([`Autocast::F16`] or
//! [`Autocast::Bf16`]), runs the product there (the backend accumulates in f32: tensor cores on
//! GPUs) and casts the result back to f32; BatchNorm, PReLU, the residual sums and the loss stay
//! in f32. The weights themselves stay f32 (the optimiser updates f32 masters), and burn's
//! autodiff carries the gradients back through the casts. The trainer scales the loss (dynamic
//! loss scaling) so that half-precision gradients do not underflow.

use burn::nn::Linear;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::backend::Backend;
use burn::tensor::ops::PaddedConvOptions;
use burn::tensor::{DType, Tensor};

/// The precision of the backbone's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Autocast {
    /// Everything in f32.
    #[default]
    Off,
    /// Products in IEEE half precision (PyTorch's `torch.autocast(dtype=float16)`).
    F16,
    /// Products in bfloat16.
    Bf16,
}

impl Autocast {
    fn dtype(self) -> Option<DType> {
        match self {
            Self::Off => None,
            Self::F16 => Some(DType::F16),
            Self::Bf16 => Some(DType::BF16),
        }
    }
}

/// `conv.forward(x)`, with the product in `cast`'s precision (see the module doc).
pub fn conv2d<B: Backend>(conv: &Conv2d<B>, x: Tensor<B, 4>, cast: Autocast) -> Tensor<B, 4> {
    let Some(half) = cast.dtype() else {
        return crate::flex_conv::conv2d(conv, x);
    };
    let (top, left, bottom, right) = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => (t, l, b, r),
        PaddingConfig2d::Valid => (0, 0, 0, 0),
        // The backbones' convolutions pad explicitly; `Same` (not used) stays in f32.
        PaddingConfig2d::Same => return conv.forward(x),
    };
    let options = PaddedConvOptions::asymmetric(
        conv.stride,
        [top, left],
        [bottom, right],
        conv.dilation,
        conv.groups,
    );
    burn::tensor::module::conv2d(
        x.cast(half),
        conv.weight.val().cast(half),
        conv.bias.as_ref().map(|b| b.val().cast(half)),
        options,
    )
    .cast(DType::F32)
}

/// `linear.forward(x)` for `[N, in]` inputs, with the product in `cast`'s precision.
pub fn linear<B: Backend>(linear: &Linear<B>, x: Tensor<B, 2>, cast: Autocast) -> Tensor<B, 2> {
    let Some(half) = cast.dtype() else {
        return linear.forward(x);
    };
    let y = x
        .cast(half)
        .matmul(linear.weight.val().cast(half))
        .cast(DType::F32);
    match &linear.bias {
        Some(b) => y + b.val().unsqueeze(),
        None => y,
    }
}
