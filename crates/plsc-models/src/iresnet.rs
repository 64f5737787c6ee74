//! IResNet as arcface_torch builds it (`backbones/iresnet.py`), plus narrow variants.
//!
//! Stem: conv3x3 (stride 1) -> BN -> PReLU. Four stages, each starting with a stride-2 block;
//! a block is BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the identity or a
//! conv1x1 (stride) + BN shortcut, with no activation after the sum. Head: BN2d -> flatten ->
//! dropout -> Linear -> BatchNorm1d whose scale is fixed at 1. Convolutions are bias-free and
//! drawn from N(0, 0.1^2), BatchNorms start at weight 1 / bias 0, the Linear uses PyTorch's
//! default initialisation.

use crate::amp::{self, Autocast};
use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Dropout, DropoutConfig, Linear, PRelu};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::{ModelError, Result};
use crate::layers::{conv, linear, prelu_layer};
use crate::norm::BatchNorm;
use crate::ops::prelu;
use crate::state::{StateReader, StateWriter, TorchState, join};

/// Architecture of an IResNet.
#[derive(Config, Debug, PartialEq)]
pub struct IResNetConfig {
    /// Blocks per stage (`[3, 4, 14, 3]` for IResNet-50).
    pub layers: [usize; 4],
    /// Output channels of the four stages.
    #[config(default = "[64, 128, 256, 512]")]
    pub widths: [usize; 4],
    /// Channels of the stem convolution.
    #[config(default = 64)]
    pub stem_width: usize,
    /// Input channels (3 for RGB, 1 for grey).
    #[config(default = 3)]
    pub in_channels: usize,
    /// Input height and width in pixels.
    #[config(default = 112)]
    pub input_size: usize,
    /// Embedding size (arcface_torch `num_features`).
    #[config(default = 512)]
    pub embedding_size: usize,
    /// Dropout before the Linear layer (training only).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Standard deviation of the convolution weights at initialisation.
    #[config(default = 0.1)]
    pub conv_init_std: f64,
}

/// Side of the feature map after the four stride-2 stages (each conv3x3/pad 1/stride 2 maps
/// `s` to `ceil(s / 2)`).
pub fn final_spatial(input_size: usize) -> usize {
    (0..4).fold(input_size, |s, _| s.div_ceil(2))
}

impl IResNetConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ModelError::InvalidConfig(m));
        if self.in_channels == 0 || self.embedding_size == 0 || self.stem_width == 0 {
            return bad("in_channels, embedding_size and stem_width must be positive".into());
        }
        if self.widths.contains(&0) || self.layers.contains(&0) {
            return bad(format!(
                "IResNet needs at least one block and one channel per stage, got layers {:?} widths {:?}",
                self.layers, self.widths
            ));
        }
        if self.input_size < 16 {
            return bad(format!(
                "IResNet input_size must be at least 16 pixels, got {}",
                self.input_size
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        Ok(())
    }

    /// Inputs of the Linear layer: last width x final spatial side squared.
    pub fn fc_inputs(&self) -> usize {
        let s = final_spatial(self.input_size);
        self.widths[3] * s * s
    }

    /// Builds the network on `device` (check [`Self::validate`] first).
    pub fn init<B: Backend>(&self, device: &B::Device) -> IResNet<B> {
        let std = self.conv_init_std;
        let mut inplanes = self.stem_width;
        let mut stages: Vec<Vec<IBasicBlock<B>>> = Vec::with_capacity(4);
        for (&blocks, &planes) in self.layers.iter().zip(&self.widths) {
            let mut stage = Vec::with_capacity(blocks);
            for b in 0..blocks {
                let stride = if b == 0 { 2 } else { 1 };
                stage.push(IBasicBlock::new(inplanes, planes, stride, std, device));
                inplanes = planes;
            }
            stages.push(stage);
        }
        let mut stages = stages.into_iter();
        let mut next = || stages.next().expect("four stages");
        IResNet {
            conv1: conv([self.in_channels, self.stem_width], 3, 1, 1, 1, std, device),
            bn1: BatchNorm::new(self.stem_width, false, device),
            prelu: prelu_layer(self.stem_width, device),
            layer1: next(),
            layer2: next(),
            layer3: next(),
            layer4: next(),
            bn2: BatchNorm::new(self.widths[3], false, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: linear(self.fc_inputs(), self.embedding_size, true, None, device),
            features: BatchNorm::new(self.embedding_size, true, device),
        }
    }
}

/// The conv1x1 + BN shortcut of a block that changes shape (PyTorch `downsample.0/1`).
#[derive(Module, Debug)]
pub struct Downsample<B: Backend> {
    /// conv1x1 with the block's stride (`downsample.0`).
    pub conv: Conv2d<B>,
    /// BatchNorm (`downsample.1`).
    pub bn: BatchNorm<B>,
}

/// arcface_torch's `IBasicBlock`.
#[derive(Module, Debug)]
pub struct IBasicBlock<B: Backend> {
    /// BN on the input.
    pub bn1: BatchNorm<B>,
    /// conv3x3, stride 1.
    pub conv1: Conv2d<B>,
    /// BN.
    pub bn2: BatchNorm<B>,
    /// PReLU.
    pub prelu: PRelu<B>,
    /// conv3x3 with the block's stride.
    pub conv2: Conv2d<B>,
    /// BN.
    pub bn3: BatchNorm<B>,
    /// Shortcut when the shape changes.
    pub downsample: Option<Downsample<B>>,
}

impl<B: Backend> IBasicBlock<B> {
    fn new(inplanes: usize, planes: usize, stride: usize, std: f64, device: &B::Device) -> Self {
        let downsample = (stride != 1 || inplanes != planes).then(|| Downsample {
            conv: conv([inplanes, planes], 1, stride, 0, 1, std, device),
            bn: BatchNorm::new(planes, false, device),
        });
        Self {
            bn1: BatchNorm::new(inplanes, false, device),
            conv1: conv([inplanes, planes], 3, 1, 1, 1, std, device),
            bn2: BatchNorm::new(planes, false, device),
            prelu: prelu_layer(planes, device),
            conv2: conv([planes, planes], 3, stride, 1, 1, std, device),
            bn3: BatchNorm::new(planes, false, device),
            downsample,
        }
    }

    /// `[N, C_in, H, W]` -> `[N, C_out, H/stride, W/stride]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.forward_cast(x, Autocast::Off)
    }

    /// [`Self::forward`] with the convolutions in `cast`'s precision ([`crate::amp`]).
    pub fn forward_cast(&self, x: Tensor<B, 4>, cast: Autocast) -> Tensor<B, 4> {
        let out = self.bn1.forward(x.clone());
        let out = amp::conv2d(&self.conv1, out, cast);
        let out = self.bn2.forward(out);
        let out = prelu(out, self.prelu.alpha.val());
        let out = amp::conv2d(&self.conv2, out, cast);
        let out = self.bn3.forward(out);
        let identity = match &self.downsample {
            Some(d) => d.bn.forward(amp::conv2d(&d.conv, x, cast)),
            None => x,
        };
        out + identity
    }

    fn fresh_replica(&self) -> Self {
        Self {
            bn1: self.bn1.fresh_replica(),
            conv1: self.conv1.clone(),
            bn2: self.bn2.fresh_replica(),
            prelu: self.prelu.clone(),
            conv2: self.conv2.clone(),
            bn3: self.bn3.fresh_replica(),
            downsample: self.downsample.as_ref().map(|d| Downsample {
                conv: d.conv.clone(),
                bn: d.bn.fresh_replica(),
            }),
        }
    }
}

impl<B: Backend> TorchState<B> for IBasicBlock<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.bn1.save_state(&join(prefix, "bn1"), w);
        self.conv1.save_state(&join(prefix, "conv1"), w);
        self.bn2.save_state(&join(prefix, "bn2"), w);
        self.prelu.save_state(&join(prefix, "prelu"), w);
        self.conv2.save_state(&join(prefix, "conv2"), w);
        self.bn3.save_state(&join(prefix, "bn3"), w);
        if let Some(d) = &self.downsample {
            d.conv.save_state(&join(prefix, "downsample.0"), w);
            d.bn.save_state(&join(prefix, "downsample.1"), w);
        }
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            bn1: self.bn1.load_state(&join(prefix, "bn1"), r)?,
            conv1: self.conv1.load_state(&join(prefix, "conv1"), r)?,
            bn2: self.bn2.load_state(&join(prefix, "bn2"), r)?,
            prelu: self.prelu.load_state(&join(prefix, "prelu"), r)?,
            conv2: self.conv2.load_state(&join(prefix, "conv2"), r)?,
            bn3: self.bn3.load_state(&join(prefix, "bn3"), r)?,
            downsample: match self.downsample {
                Some(d) => Some(Downsample {
                    conv: d.conv.load_state(&join(prefix, "downsample.0"), r)?,
                    bn: d.bn.load_state(&join(prefix, "downsample.1"), r)?,
                }),
                None => None,
            },
        })
    }
}

/// arcface_torch's `IResNet`; field names are its `state_dict` prefixes.
#[derive(Module, Debug)]
pub struct IResNet<B: Backend> {
    /// Stem conv3x3, stride 1.
    pub conv1: Conv2d<B>,
    /// Stem BN.
    pub bn1: BatchNorm<B>,
    /// Stem PReLU.
    pub prelu: PRelu<B>,
    /// Stage 1 (stride 2).
    pub layer1: Vec<IBasicBlock<B>>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<IBasicBlock<B>>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<IBasicBlock<B>>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<IBasicBlock<B>>,
    /// BN on the last feature map.
    pub bn2: BatchNorm<B>,
    /// Dropout before `fc` (training only).
    pub dropout: Dropout,
    /// Linear from the flattened feature map to the embedding.
    pub fc: Linear<B>,
    /// BatchNorm1d on the embedding, scale fixed at 1.
    pub features: BatchNorm<B>,
}

impl<B: Backend> IResNet<B> {
    /// `[N, C, S, S]` images -> `[N, embedding]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        self.forward_cast(x, Autocast::Off)
    }

    /// [`Self::forward`] with the convolutions and the linear layer in `cast`'s precision
    /// ([`crate::amp`]: products in half precision, everything else in f32).
    pub fn forward_cast(&self, x: Tensor<B, 4>, cast: Autocast) -> Tensor<B, 2> {
        let x = amp::conv2d(&self.conv1, x, cast);
        let x = self.bn1.forward(x);
        let mut x = prelu(x, self.prelu.alpha.val());
        for block in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = block.forward_cast(x, cast);
        }
        let x = self.bn2.forward(x);
        let x: Tensor<B, 2> = x.flatten(1, 3);
        let x = self.dropout.forward(x);
        let x = amp::linear(&self.fc, x, cast);
        self.features.forward(x)
    }

    /// A copy that shares no running statistics with `self` or its clones.
    pub fn fresh_replica(&self) -> Self {
        let stage = |s: &Vec<IBasicBlock<B>>| s.iter().map(IBasicBlock::fresh_replica).collect();
        Self {
            conv1: self.conv1.clone(),
            bn1: self.bn1.fresh_replica(),
            prelu: self.prelu.clone(),
            layer1: stage(&self.layer1),
            layer2: stage(&self.layer2),
            layer3: stage(&self.layer3),
            layer4: stage(&self.layer4),
            bn2: self.bn2.fresh_replica(),
            dropout: self.dropout.clone(),
            fc: self.fc.clone(),
            features: self.features.fresh_replica(),
        }
    }
}

impl<B: Backend> TorchState<B> for IResNet<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.conv1.save_state(&join(prefix, "conv1"), w);
        self.bn1.save_state(&join(prefix, "bn1"), w);
        self.prelu.save_state(&join(prefix, "prelu"), w);
        self.layer1.save_state(&join(prefix, "layer1"), w);
        self.layer2.save_state(&join(prefix, "layer2"), w);
        self.layer3.save_state(&join(prefix, "layer3"), w);
        self.layer4.save_state(&join(prefix, "layer4"), w);
        self.bn2.save_state(&join(prefix, "bn2"), w);
        self.fc.save_state(&join(prefix, "fc"), w);
        self.features.save_state(&join(prefix, "features"), w);
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            conv1: self.conv1.load_state(&join(prefix, "conv1"), r)?,
            bn1: self.bn1.load_state(&join(prefix, "bn1"), r)?,
            prelu: self.prelu.load_state(&join(prefix, "prelu"), r)?,
            layer1: self.layer1.load_state(&join(prefix, "layer1"), r)?,
            layer2: self.layer2.load_state(&join(prefix, "layer2"), r)?,
            layer3: self.layer3.load_state(&join(prefix, "layer3"), r)?,
            layer4: self.layer4.load_state(&join(prefix, "layer4"), r)?,
            bn2: self.bn2.load_state(&join(prefix, "bn2"), r)?,
            dropout: self.dropout,
            fc: self.fc.load_state(&join(prefix, "fc"), r)?,
            features: self.features.load_state(&join(prefix, "features"), r)?,
        })
    }
}
