//! MobileFaceNet as arcface_torch builds it (`backbones/mobilefacenet.py`, `mbf`).
//!
//! `layers.0`: ConvBlock 3x3/2 to 64*scale; `layers.1`: a grouped ConvBlock (one block) or a
//! Residual of DepthWise blocks; then DepthWise (stride 2) / Residual pairs at 64*scale,
//! 128*scale and 128*scale channels with hidden widths 128, 256 and 512; `conv_sep`: ConvBlock
//! 1x1 to 512; `features` (GDC): depthwise 7x7 LinearBlock -> flatten -> Linear (no bias) ->
//! BatchNorm1d (trainable scale). A ConvBlock is conv -> BN -> PReLU, a LinearBlock conv -> BN.
//! Convolution and Linear weights start from PyTorch's `kaiming_normal_(mode='fan_out',
//! nonlinearity='relu')`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::Conv2d;
use burn::nn::{Linear, PRelu};
use burn::tensor::{Tensor, backend::Backend};

use crate::error::{ModelError, Result};
use crate::iresnet::final_spatial;
use crate::layers::{conv, kaiming_fan_out_std, linear, prelu_layer};
use crate::norm::BatchNorm;
use crate::ops::prelu;
use crate::state::{StateReader, StateWriter, TorchState, join};

/// Architecture of a MobileFaceNet.
#[derive(Config, Debug, PartialEq)]
pub struct MobileFaceNetConfig {
    /// DepthWise blocks in the four residual stages (`(1, 4, 6, 2)` for `mbf`).
    #[config(default = "[1, 4, 6, 2]")]
    pub blocks: [usize; 4],
    /// Channel multiplier (2 for `mbf`, 4 for `mbf_large`).
    #[config(default = 2)]
    pub scale: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_channels: usize,
    /// Input height and width; after four stride-2 steps the map must be 7x7 (the GDC kernel).
    #[config(default = 112)]
    pub input_size: usize,
    /// Embedding size.
    #[config(default = 512)]
    pub embedding_size: usize,
}

impl MobileFaceNetConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<()> {
        if self.in_channels == 0 || self.embedding_size == 0 || self.scale == 0 {
            return Err(ModelError::InvalidConfig(
                "MobileFaceNet in_channels, embedding_size and scale must be positive".into(),
            ));
        }
        if final_spatial(self.input_size) != 7 {
            return Err(ModelError::InvalidConfig(format!(
                "MobileFaceNet's 7x7 GDC needs a 7x7 final map (input 97 to 112 pixels), got input_size {}",
                self.input_size
            )));
        }
        Ok(())
    }

    /// Builds the network on `device` (check [`Self::validate`] first).
    pub fn init<B: Backend>(&self, device: &B::Device) -> MobileFaceNet<B> {
        let c64 = 64 * self.scale;
        let c128 = 128 * self.scale;
        let stage1 = if self.blocks[0] == 1 {
            MbfStage::Conv(ConvBlock::new([c64, c64], 3, 1, 1, 64, device))
        } else {
            MbfStage::Residual(Residual::new(c64, self.blocks[0], 128, device))
        };
        MobileFaceNet {
            stem: ConvBlock::new([self.in_channels, c64], 3, 2, 1, 1, device),
            stage1,
            dw1: DepthWise::new(c64, c64, false, 2, 128, device),
            res1: Residual::new(c64, self.blocks[1], 128, device),
            dw2: DepthWise::new(c64, c128, false, 2, 256, device),
            res2: Residual::new(c128, self.blocks[2], 256, device),
            dw3: DepthWise::new(c128, c128, false, 2, 512, device),
            res3: Residual::new(c128, self.blocks[3], 256, device),
            conv_sep: ConvBlock::new([c128, 512], 1, 1, 0, 1, device),
            gdc: LinearBlock::new([512, 512], 7, 1, 0, 512, device),
            linear: linear(
                512,
                self.embedding_size,
                false,
                Some(kaiming_fan_out_std(self.embedding_size, 1)),
                device,
            ),
            bn: BatchNorm::new(self.embedding_size, false, device),
        }
    }
}

fn mbf_conv<B: Backend>(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    device: &B::Device,
) -> Conv2d<B> {
    let std = kaiming_fan_out_std(channels[1], kernel * kernel);
    conv(channels, kernel, stride, padding, groups, std, device)
}

/// conv -> BN -> PReLU (`layers.0/1/2`).
#[derive(Module, Debug)]
pub struct ConvBlock<B: Backend> {
    /// Bias-free convolution.
    pub conv: Conv2d<B>,
    /// BatchNorm.
    pub bn: BatchNorm<B>,
    /// PReLU.
    pub prelu: PRelu<B>,
}

impl<B: Backend> ConvBlock<B> {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            conv: mbf_conv(channels, kernel, stride, padding, groups, device),
            bn: BatchNorm::new(channels[1], false, device),
            prelu: prelu_layer(channels[1], device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        prelu(
            self.bn.forward(self.conv.forward(x)),
            self.prelu.alpha.val(),
        )
    }

    fn fresh_replica(&self) -> Self {
        Self {
            conv: self.conv.clone(),
            bn: self.bn.fresh_replica(),
            prelu: self.prelu.clone(),
        }
    }
}

impl<B: Backend> TorchState<B> for ConvBlock<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.conv.save_state(&join(prefix, "layers.0"), w);
        self.bn.save_state(&join(prefix, "layers.1"), w);
        self.prelu.save_state(&join(prefix, "layers.2"), w);
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            conv: self.conv.load_state(&join(prefix, "layers.0"), r)?,
            bn: self.bn.load_state(&join(prefix, "layers.1"), r)?,
            prelu: self.prelu.load_state(&join(prefix, "layers.2"), r)?,
        })
    }
}

/// conv -> BN, no activation (`layers.0/1`).
#[derive(Module, Debug)]
pub struct LinearBlock<B: Backend> {
    /// Bias-free convolution.
    pub conv: Conv2d<B>,
    /// BatchNorm.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> LinearBlock<B> {
    fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            conv: mbf_conv(channels, kernel, stride, padding, groups, device),
            bn: BatchNorm::new(channels[1], false, device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.bn.forward(self.conv.forward(x))
    }

    fn fresh_replica(&self) -> Self {
        Self {
            conv: self.conv.clone(),
            bn: self.bn.fresh_replica(),
        }
    }
}

impl<B: Backend> TorchState<B> for LinearBlock<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.conv.save_state(&join(prefix, "layers.0"), w);
        self.bn.save_state(&join(prefix, "layers.1"), w);
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            conv: self.conv.load_state(&join(prefix, "layers.0"), r)?,
            bn: self.bn.load_state(&join(prefix, "layers.1"), r)?,
        })
    }
}

/// Inverted bottleneck: 1x1 expand -> depthwise 3x3 (stride) -> 1x1 project, optional
/// residual sum.
#[derive(Module, Debug)]
pub struct DepthWise<B: Backend> {
    /// Adds the input to the output.
    pub residual: bool,
    /// 1x1 ConvBlock to the hidden width (`layers.0`).
    pub expand: ConvBlock<B>,
    /// Depthwise 3x3 ConvBlock (`layers.1`).
    pub depthwise: ConvBlock<B>,
    /// 1x1 LinearBlock to the output width (`layers.2`).
    pub project: LinearBlock<B>,
}

impl<B: Backend> DepthWise<B> {
    fn new(
        in_c: usize,
        out_c: usize,
        residual: bool,
        stride: usize,
        hidden: usize,
        device: &B::Device,
    ) -> Self {
        Self {
            residual,
            expand: ConvBlock::new([in_c, hidden], 1, 1, 0, 1, device),
            depthwise: ConvBlock::new([hidden, hidden], 3, stride, 1, hidden, device),
            project: LinearBlock::new([hidden, out_c], 1, 1, 0, 1, device),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let y = self.expand.forward(x.clone());
        let y = self.depthwise.forward(y);
        let y = self.project.forward(y);
        if self.residual { x + y } else { y }
    }

    fn fresh_replica(&self) -> Self {
        Self {
            residual: self.residual,
            expand: self.expand.fresh_replica(),
            depthwise: self.depthwise.fresh_replica(),
            project: self.project.fresh_replica(),
        }
    }
}

impl<B: Backend> TorchState<B> for DepthWise<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.expand.save_state(&join(prefix, "layers.0"), w);
        self.depthwise.save_state(&join(prefix, "layers.1"), w);
        self.project.save_state(&join(prefix, "layers.2"), w);
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            residual: self.residual,
            expand: self.expand.load_state(&join(prefix, "layers.0"), r)?,
            depthwise: self.depthwise.load_state(&join(prefix, "layers.1"), r)?,
            project: self.project.load_state(&join(prefix, "layers.2"), r)?,
        })
    }
}

/// A run of residual DepthWise blocks at constant width (`layers.{i}`).
#[derive(Module, Debug)]
pub struct Residual<B: Backend> {
    /// The blocks.
    pub blocks: Vec<DepthWise<B>>,
}

impl<B: Backend> Residual<B> {
    fn new(c: usize, n: usize, hidden: usize, device: &B::Device) -> Self {
        Self {
            blocks: (0..n)
                .map(|_| DepthWise::new(c, c, true, 1, hidden, device))
                .collect(),
        }
    }

    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        self.blocks.iter().fold(x, |x, b| b.forward(x))
    }

    fn fresh_replica(&self) -> Self {
        Self {
            blocks: self.blocks.iter().map(DepthWise::fresh_replica).collect(),
        }
    }
}

impl<B: Backend> TorchState<B> for Residual<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.blocks.save_state(&join(prefix, "layers"), w);
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            blocks: self.blocks.load_state(&join(prefix, "layers"), r)?,
        })
    }
}

/// The second entry of `layers`: a grouped ConvBlock when `blocks[0] == 1`, else a Residual.
// Built once per model; the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum MbfStage<B: Backend> {
    /// One grouped 3x3 ConvBlock.
    Conv(ConvBlock<B>),
    /// Residual DepthWise blocks.
    Residual(Residual<B>),
}

impl<B: Backend> MbfStage<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        match self {
            Self::Conv(c) => c.forward(x),
            Self::Residual(r) => r.forward(x),
        }
    }

    fn fresh_replica(&self) -> Self {
        match self {
            Self::Conv(c) => Self::Conv(c.fresh_replica()),
            Self::Residual(r) => Self::Residual(r.fresh_replica()),
        }
    }
}

impl<B: Backend> TorchState<B> for MbfStage<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        match self {
            Self::Conv(c) => c.save_state(prefix, w),
            Self::Residual(r) => r.save_state(prefix, w),
        }
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(match self {
            Self::Conv(c) => Self::Conv(c.load_state(prefix, r)?),
            Self::Residual(res) => Self::Residual(res.load_state(prefix, r)?),
        })
    }
}

/// arcface_torch's `MobileFaceNet`.
#[derive(Module, Debug)]
pub struct MobileFaceNet<B: Backend> {
    /// `layers.0`: 3x3 stride-2 ConvBlock.
    pub stem: ConvBlock<B>,
    /// `layers.1`.
    pub stage1: MbfStage<B>,
    /// `layers.2`: DepthWise, stride 2.
    pub dw1: DepthWise<B>,
    /// `layers.3`.
    pub res1: Residual<B>,
    /// `layers.4`: DepthWise, stride 2.
    pub dw2: DepthWise<B>,
    /// `layers.5`.
    pub res2: Residual<B>,
    /// `layers.6`: DepthWise, stride 2.
    pub dw3: DepthWise<B>,
    /// `layers.7`.
    pub res3: Residual<B>,
    /// `conv_sep`: 1x1 ConvBlock to 512 channels.
    pub conv_sep: ConvBlock<B>,
    /// `features.layers.0`: depthwise 7x7 LinearBlock.
    pub gdc: LinearBlock<B>,
    /// `features.layers.2`: Linear 512 -> embedding, no bias.
    pub linear: Linear<B>,
    /// `features.layers.3`: BatchNorm1d.
    pub bn: BatchNorm<B>,
}

impl<B: Backend> MobileFaceNet<B> {
    /// `[N, C, S, S]` images -> `[N, embedding]`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 2> {
        let x = self.stem.forward(x);
        let x = self.stage1.forward(x);
        let x = self.dw1.forward(x);
        let x = self.res1.forward(x);
        let x = self.dw2.forward(x);
        let x = self.res2.forward(x);
        let x = self.dw3.forward(x);
        let x = self.res3.forward(x);
        let x = self.conv_sep.forward(x);
        let x = self.gdc.forward(x);
        let x: Tensor<B, 2> = x.flatten(1, 3);
        self.bn.forward(self.linear.forward(x))
    }

    /// A copy that shares no running statistics with `self` or its clones.
    pub fn fresh_replica(&self) -> Self {
        Self {
            stem: self.stem.fresh_replica(),
            stage1: self.stage1.fresh_replica(),
            dw1: self.dw1.fresh_replica(),
            res1: self.res1.fresh_replica(),
            dw2: self.dw2.fresh_replica(),
            res2: self.res2.fresh_replica(),
            dw3: self.dw3.fresh_replica(),
            res3: self.res3.fresh_replica(),
            conv_sep: self.conv_sep.fresh_replica(),
            gdc: self.gdc.fresh_replica(),
            linear: self.linear.clone(),
            bn: self.bn.fresh_replica(),
        }
    }
}

impl<B: Backend> TorchState<B> for MobileFaceNet<B> {
    fn save_state(&self, prefix: &str, w: &mut StateWriter) {
        self.stem.save_state(&join(prefix, "layers.0"), w);
        self.stage1.save_state(&join(prefix, "layers.1"), w);
        self.dw1.save_state(&join(prefix, "layers.2"), w);
        self.res1.save_state(&join(prefix, "layers.3"), w);
        self.dw2.save_state(&join(prefix, "layers.4"), w);
        self.res2.save_state(&join(prefix, "layers.5"), w);
        self.dw3.save_state(&join(prefix, "layers.6"), w);
        self.res3.save_state(&join(prefix, "layers.7"), w);
        self.conv_sep.save_state(&join(prefix, "conv_sep"), w);
        self.gdc.save_state(&join(prefix, "features.layers.0"), w);
        self.linear
            .save_state(&join(prefix, "features.layers.2"), w);
        self.bn.save_state(&join(prefix, "features.layers.3"), w);
    }

    fn load_state(self, prefix: &str, r: &mut StateReader<'_>) -> Result<Self> {
        Ok(Self {
            stem: self.stem.load_state(&join(prefix, "layers.0"), r)?,
            stage1: self.stage1.load_state(&join(prefix, "layers.1"), r)?,
            dw1: self.dw1.load_state(&join(prefix, "layers.2"), r)?,
            res1: self.res1.load_state(&join(prefix, "layers.3"), r)?,
            dw2: self.dw2.load_state(&join(prefix, "layers.4"), r)?,
            res2: self.res2.load_state(&join(prefix, "layers.5"), r)?,
            dw3: self.dw3.load_state(&join(prefix, "layers.6"), r)?,
            res3: self.res3.load_state(&join(prefix, "layers.7"), r)?,
            conv_sep: self.conv_sep.load_state(&join(prefix, "conv_sep"), r)?,
            gdc: self.gdc.load_state(&join(prefix, "features.layers.0"), r)?,
            linear: self
                .linear
                .load_state(&join(prefix, "features.layers.2"), r)?,
            bn: self.bn.load_state(&join(prefix, "features.layers.3"), r)?,
        })
    }
}
