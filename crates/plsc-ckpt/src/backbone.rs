//! A saved backbone as a model: the registry backbone a [`ModelSpec`] names, built on any burn
//! backend with its named tensors loaded, and its input preprocessing as plsc-data's
//! [`ImageSpec`]. One loader for every reader of an export: the server (plsc-serve),
//! `xtask eval --model`, ONNX export.

use std::path::Path;

use burn::tensor::backend::Backend;
use plsc_data::decode::ImageSpec;
use plsc_models::{Backbone, BackboneConfig, NamedTensor};

use crate::error::{CkptError, Result};
use crate::export::{ExportedModel, load_exported};
use crate::manifest::{BACKBONE_FILE, ModelSpec};

/// The backbone `spec` describes (architecture, embedding size, input size and channels), built
/// on `device` with `tensors` loaded: names and shapes are checked, a missing or extra tensor is
/// an error naming it; momentum tensors are skipped. `label` names their file in errors.
pub fn backbone_from<B: Backend>(
    spec: &ModelSpec,
    tensors: &[NamedTensor],
    label: &str,
    device: &B::Device,
) -> Result<Backbone<B>> {
    let config = BackboneConfig::new(spec.architecture.clone())
        .with_embedding_size(spec.embedding_size)
        .with_in_channels(spec.in_channels)
        .with_input_size(spec.input_size);
    let model: Backbone<B> = config.init(device)?;
    Ok(model.load_tensors(tensors, label)?)
}

/// Loads the exported model in `dir` (`model.json` + `backbone.safetensors`, size and sha256
/// verified by [`load_exported`]) and builds its backbone on `device` in evaluation form (no
/// autodiff on a plain backend: BatchNorm uses its running statistics). Returns the backbone and
/// the export (its [`ModelSpec`] gives the input preprocessing; its tensors can build the same
/// backbone on another device with [`backbone_from`]).
pub fn load_exported_backbone<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(Backbone<B>, ExportedModel)> {
    let exported = load_exported(dir)?;
    let label = dir.join(BACKBONE_FILE).display().to_string();
    let backbone = backbone_from(&exported.spec, &exported.tensors, &label, device)?;
    Ok((backbone, exported))
}

impl ModelSpec {
    /// The input preprocessing of this model as plsc-data's decoder takes it: size, channels,
    /// normalisation and resize policy. `mean` and `std` hold one value per channel or one for
    /// all (`model.json` writes one per channel). Fails for channels other than 1 or 3 and for
    /// a mean or std list of another length.
    pub fn image_spec(&self) -> Result<ImageSpec> {
        let bad = |detail: String| CkptError::Invalid {
            what: "model input",
            detail,
        };
        let channels = self.in_channels;
        if channels != 1 && channels != 3 {
            return Err(bad(format!("in_channels must be 1 or 3, not {channels}")));
        }
        let side = u32::try_from(self.input_size)
            .map_err(|_| bad(format!("input_size {} is too large", self.input_size)))?;
        let per_channel = |v: &[f32], what: &str| -> Result<[f32; 3]> {
            match v.len() {
                1 => Ok([v[0]; 3]),
                n if n == channels || n == 3 => Ok([v[0], v[1.min(n - 1)], v[2.min(n - 1)]]),
                n => Err(bad(format!(
                    "{what} has {n} values for {channels} channels (1 or {channels} expected)"
                ))),
            }
        };
        Ok(ImageSpec {
            height: side,
            width: side,
            channels,
            mean: per_channel(&self.mean, "mean")?,
            std: per_channel(&self.std, "std")?,
            resize: self.resize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plsc_data::Resize;

    #[test]
    fn image_spec_takes_one_or_per_channel_values_and_the_resize_policy() {
        let mut spec = ModelSpec::face("iresnet_tiny", 8);
        spec.mean = vec![1.0, 2.0, 3.0];
        spec.std = vec![4.0];
        spec.input_size = 28;
        spec.resize = Resize::Pad;
        let image = spec.image_spec().unwrap();
        assert_eq!((image.height, image.width, image.channels), (28, 28, 3));
        assert_eq!(image.mean, [1.0, 2.0, 3.0]);
        assert_eq!(image.std, [4.0; 3]);
        assert_eq!(image.resize, Resize::Pad);

        spec.mean = vec![1.0, 2.0];
        let err = spec.image_spec().unwrap_err().to_string();
        assert!(err.contains("mean has 2 values for 3 channels"), "{err}");
        spec.mean = vec![1.0];
        spec.in_channels = 4;
        let err = spec.image_spec().unwrap_err().to_string();
        assert!(err.contains("in_channels must be 1 or 3, not 4"), "{err}");
    }
}
