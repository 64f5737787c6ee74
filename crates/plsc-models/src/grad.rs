//! Backward from the embedding with a gradient handed in from outside (the head).
//!
//! The head computes dL/dx for the embedding x outside burn's graph; the backbone's
//! gradients follow from the surrogate `(x * g.detach()).sum().backward()`: the sum's backward
//! seeds ones, the product's backward multiplies them by `g`, so the graph receives `g`
//! exactly (1.0 * g is exact in floating point) and everything below is the true chain rule.

use burn::module::AutodiffModule;
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, backend::AutodiffBackend};

use crate::error::{ModelError, Result};

/// Runs backward from `embedding` seeded with `grad` (= dL/d`embedding`, same shape) and
/// returns the raw gradients of the whole graph (parameters and any input that requires
/// gradients).
pub fn backward_with_grad<B: AutodiffBackend>(
    embedding: Tensor<B, 2>,
    grad: Tensor<B::InnerBackend, 2>,
) -> Result<B::Gradients> {
    if embedding.dims() != grad.dims() {
        return Err(ModelError::BadInput {
            tensor: "embedding gradient".into(),
            found: grad.dims().to_vec(),
            expected: format!("the embedding's shape {:?}", embedding.dims()),
        });
    }
    let seed = Tensor::<B, 2>::from_inner(grad).detach();
    Ok((embedding * seed).sum().backward())
}

/// [`backward_with_grad`], then the gradients of `module`'s parameters, keyed by parameter id
/// (what burn's optimisers take). Frozen parameters and buffers have none.
pub fn backbone_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    embedding: Tensor<B, 2>,
    grad: Tensor<B::InnerBackend, 2>,
) -> Result<GradientsParams> {
    let grads = backward_with_grad(embedding, grad)?;
    let params = GradientsParams::from_grads(grads, module);
    if params.is_empty() {
        return Err(ModelError::NoGradients(
            "the embedding does not depend on any parameter of the module".into(),
        ));
    }
    Ok(params)
}
