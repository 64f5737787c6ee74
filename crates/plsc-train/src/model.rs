//! What the loop needs from a backbone: [`TrainModel`], implemented for plsc-models'
//! [`Backbone`] (and by tests for small models without batch statistics).

use std::path::Path;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use plsc_models::{Backbone, ModelError, NamedTensor};

/// A trainable embedding network on autodiff backend `B`.
pub trait TrainModel<B: AutodiffBackend>: AutodiffModule<B> + Send + Sized + 'static {
    /// Training-mode forward: images `[N, C, S, S]` -> embeddings `[N, D]`.
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 2>;

    /// [`Self::embed`] with the products in `cast`'s precision (mixed precision on the device;
    /// [`plsc_models::amp`]). Models without half-precision layers run [`Self::embed`].
    fn embed_cast(&self, images: Tensor<B, 4>, cast: plsc_models::amp::Autocast) -> Tensor<B, 2> {
        let _ = cast;
        self.embed(images)
    }

    /// Evaluation-mode forward of the inner (non-autodiff) module.
    fn embed_valid(
        inner: &Self::InnerModule,
        images: Tensor<B::InnerBackend, 4>,
    ) -> Tensor<B::InnerBackend, 2>;

    /// An independent copy for another rank thread: same values, nothing mutable shared.
    fn replica(&self) -> Self;

    /// Writes the weights (and running statistics) to `path`.
    fn save(&self, path: &Path) -> Result<(), ModelError>;

    /// Parameters and buffers as named tensors for a checkpoint (arcface_torch names for the
    /// registered backbones).
    fn state_tensors(&self) -> Vec<NamedTensor>;

    /// The model with every tensor replaced by the one of the same name in `tensors` (as
    /// [`Self::state_tensors`] lays them out); `label` names the source in errors. A missing,
    /// extra or misshapen tensor is an error.
    fn load_state_tensors(self, tensors: &[NamedTensor], label: &str) -> Result<Self, ModelError>;

    /// The running statistics (BatchNorm means and variances), flattened in a fixed order; empty
    /// for a model without batch statistics.
    fn running_stats(&self) -> Vec<f32> {
        Vec::new()
    }

    /// The model with its running statistics replaced by `values` (as [`Self::running_stats`]
    /// lays them out).
    fn with_running_stats(self, values: &[f32]) -> Result<Self, ModelError> {
        let _ = values;
        Ok(self)
    }
}

impl<B: AutodiffBackend> TrainModel<B> for Backbone<B> {
    fn embed(&self, images: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward(images)
    }

    fn embed_cast(&self, images: Tensor<B, 4>, cast: plsc_models::amp::Autocast) -> Tensor<B, 2> {
        self.forward_cast(images, cast)
    }

    fn embed_valid(
        inner: &Backbone<B::InnerBackend>,
        images: Tensor<B::InnerBackend, 4>,
    ) -> Tensor<B::InnerBackend, 2> {
        inner.forward(images)
    }

    fn replica(&self) -> Self {
        self.fresh_replica()
    }

    fn running_stats(&self) -> Vec<f32> {
        self.buffer_tensors()
            .into_iter()
            .flat_map(|t| t.values)
            .collect()
    }

    fn with_running_stats(self, values: &[f32]) -> Result<Self, ModelError> {
        let mut buffers = self.buffer_tensors();
        let mut at = 0;
        for b in &mut buffers {
            let n = b.values.len();
            b.values.copy_from_slice(&values[at..at + n]);
            at += n;
        }
        self.load_buffers(&buffers, "running statistics from rank 0")
    }

    fn save(&self, path: &Path) -> Result<(), ModelError> {
        self.save_safetensors(path)
    }

    fn load_state_tensors(self, tensors: &[NamedTensor], label: &str) -> Result<Self, ModelError> {
        self.load_tensors(tensors, label)
    }

    fn state_tensors(&self) -> Vec<NamedTensor> {
        Backbone::state_tensors(self)
    }
}
