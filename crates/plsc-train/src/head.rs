//! A rank's head shard where the placement keeps it: the CPU kernel on host rows
//! ([`ShardedHead`], the CPU's default) or burn tensors on the backend's device ([`DeviceHead`],
//! GPUs; on `Flex` the same generic code, which the tests compare with the kernel). One step,
//! one deferred update for mixed precision, one checkpoint form.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use plsc_comm::tensor::TensorComm;
use plsc_core::{
    Accuracy, DeviceHead, DeviceUpdate, HeadConfig, HeadError, HeadGradient, RowStore, ShardedHead,
    WeightUpdate,
};

use crate::device::Placement;

/// One rank's head shard (see the [module doc](self)).
pub enum RankHead<B: Backend> {
    /// The CPU kernel on host rows.
    Host(Box<HostHead>),
    /// Tensors on the device.
    Device(DeviceHead<B>),
}

/// The host placement's head and its mixed-precision gradient buffers.
pub struct HostHead {
    head: ShardedHead<f32>,
    /// The weight (and bias) gradient of the last step's sampled rows, in sampled order
    /// (mixed precision): `[C_s, D]`, never the shard's size.
    grad: Vec<f32>,
    grad_bias: Option<Vec<f32>>,
}

/// A weight gradient waiting for the step's finiteness verdict (mixed precision).
pub enum PendingGradient<B: Backend> {
    /// In the host head's own buffers.
    Host,
    /// On the device.
    Device(HeadGradient<B>),
}

/// One step's result, with the feature gradient on the device.
pub struct RankHeadOutput<B: Backend> {
    /// Mean loss over the global batch.
    pub loss: f64,
    /// `dL/dx` of this rank's rows `[b, D]`.
    pub grad_features: Tensor<B, 2>,
    /// Top-1 / top-5 (with `calc_acc`).
    pub accuracy: Option<Accuracy>,
    /// Whether this rank's head gradient is finite (always true without mixed precision).
    pub head_finite: bool,
    /// The update still to apply (mixed precision), once the step is known to be finite.
    pub pending: Option<PendingGradient<B>>,
}

/// The head rows of a shard on the host, borrowed or copied from the device (for saving).
pub struct HostRows<'a> {
    shard: plsc_core::ClassShard,
    weight: std::borrow::Cow<'a, RowStore<f32>>,
    momentum: std::borrow::Cow<'a, RowStore<f32>>,
    bias: Option<std::borrow::Cow<'a, [f32]>>,
    bias_momentum: Option<std::borrow::Cow<'a, [f32]>>,
}

impl HostRows<'_> {
    /// The rows as the checkpoint writer takes them.
    pub fn as_ref(&self) -> plsc_ckpt::HeadShardRef<'_> {
        plsc_ckpt::HeadShardRef {
            shard: self.shard,
            weight: &self.weight,
            momentum: &self.momentum,
            bias: self.bias.as_deref(),
            bias_momentum: self.bias_momentum.as_deref(),
        }
    }
}

impl<B: Backend> RankHead<B> {
    /// Rank `rank`'s shard, initialised from `(seed, class)` only, where `placement` says.
    pub fn new(
        placement: Placement,
        config: HeadConfig,
        rank: usize,
        world_size: usize,
        device: &B::Device,
    ) -> Result<Self, HeadError> {
        Ok(match placement {
            Placement::Host => Self::Host(Box::new(HostHead {
                head: ShardedHead::new(config, rank, world_size)?,
                grad: Vec::new(),
                grad_bias: None,
            })),
            Placement::Device => Self::Device(DeviceHead::new(config, rank, world_size, device)?),
        })
    }

    /// The head's settings.
    pub fn config(&self) -> &HeadConfig {
        match self {
            Self::Host(h) => h.head.config(),
            Self::Device(h) => h.config(),
        }
    }

    /// One step on this rank's embeddings `features` `[b, D]` (detached, on the device): SGD at
    /// `lr` inside the step, or with `defer` (mixed precision) a gradient to apply later.
    pub fn step<C: TensorComm<B> + ?Sized>(
        &mut self,
        comm: &C,
        features: Tensor<B, 2>,
        labels: &[i64],
        step: u64,
        lr: f64,
        defer: bool,
    ) -> Result<RankHeadOutput<B>, HeadError> {
        match self {
            Self::Host(h) => {
                let HostHead {
                    head,
                    grad,
                    grad_bias,
                } = h.as_mut();
                let device = features.device();
                let [b, d] = features.dims();
                let host: Vec<f32> = features
                    .into_data()
                    .convert::<f32>()
                    .into_vec()
                    .unwrap_or_default();
                let update = if defer {
                    if head.bias().is_some() {
                        grad_bias.get_or_insert_with(Vec::new);
                    }
                    WeightUpdate::SampledGradient {
                        weight: grad,
                        bias: grad_bias.as_mut(),
                    }
                } else {
                    WeightUpdate::Sgd { lr }
                };
                let o = head.step(comm.communicator(), &host, labels, step, update)?;
                let head_finite = !defer
                    || (grad.iter().all(|v| v.is_finite())
                        && grad_bias
                            .as_ref()
                            .is_none_or(|g| g.iter().all(|v| v.is_finite())));
                Ok(RankHeadOutput {
                    loss: o.loss,
                    grad_features: Tensor::from_data(
                        TensorData::new(o.grad_features, [b, d]),
                        &device,
                    ),
                    accuracy: o.accuracy,
                    head_finite,
                    pending: defer.then_some(PendingGradient::Host),
                })
            }
            Self::Device(h) => {
                let update = if defer {
                    DeviceUpdate::Gradient
                } else {
                    DeviceUpdate::Sgd { lr }
                };
                let o = h.step(comm, features, labels, step, update)?;
                let head_finite = o.gradient.as_ref().is_none_or(HeadGradient::is_finite);
                Ok(RankHeadOutput {
                    loss: o.loss,
                    grad_features: o.grad_features,
                    accuracy: o.accuracy,
                    head_finite,
                    pending: o.gradient.map(PendingGradient::Device),
                })
            }
        }
    }

    /// Applies a deferred gradient at `lr` (the mixed-precision step was finite).
    pub fn apply_gradient(
        &mut self,
        pending: PendingGradient<B>,
        lr: f64,
    ) -> Result<(), HeadError> {
        match (self, pending) {
            (Self::Host(h), PendingGradient::Host) => {
                h.head
                    .apply_sampled_gradient(&h.grad, h.grad_bias.as_deref(), lr)
            }
            (Self::Device(h), PendingGradient::Device(g)) => h.apply_gradient(&g, lr),
            _ => Err(HeadError::Config {
                name: "apply_gradient",
                detail: "a gradient of the other placement (host vs device) was given".into(),
            }),
        }
    }

    /// Loads this rank's rows of `ckpt` (and with `with_momentum` their momentum).
    pub fn load(
        &mut self,
        ckpt: &plsc_ckpt::Checkpoint,
        with_momentum: bool,
    ) -> Result<(), Box<plsc_ckpt::CkptError>> {
        match self {
            Self::Host(h) => Ok(ckpt.load_into_head(&mut h.head, with_momentum)?),
            Self::Device(h) => {
                ckpt.check_head_config(h.config())?;
                let s = h.shard();
                let rows = ckpt.load_head_range(s.rank, s.start, s.len)?;
                h.set_weight(rows.weight, rows.bias)
                    .map_err(plsc_ckpt::CkptError::from)?;
                if with_momentum {
                    h.set_velocity(rows.momentum, rows.bias_momentum)
                        .map_err(plsc_ckpt::CkptError::from)?;
                }
                Ok(())
            }
        }
    }

    /// The shard's rows on the host, for a checkpoint (device rows are copied).
    pub fn rows(&self) -> HostRows<'_> {
        use std::borrow::Cow;
        match self {
            Self::Host(h) => HostRows {
                shard: h.head.shard(),
                weight: Cow::Borrowed(h.head.weight()),
                momentum: Cow::Borrowed(h.head.velocity()),
                bias: h.head.bias().map(Cow::Borrowed),
                bias_momentum: h.head.bias_velocity().map(Cow::Borrowed),
            },
            Self::Device(h) => HostRows {
                shard: h.shard(),
                weight: Cow::Owned(h.weight_host()),
                momentum: Cow::Owned(h.velocity_host()),
                bias: h.bias_host().map(Cow::Owned),
                bias_momentum: h.bias_velocity_host().map(Cow::Owned),
            },
        }
    }

    /// The stored weight and momentum rows on the host, the head given up for them (host rows
    /// are moved, not copied; device rows are copied down).
    pub fn into_host_rows(self) -> (RowStore<f32>, RowStore<f32>) {
        match self {
            Self::Host(h) => h.head.into_rows(),
            Self::Device(h) => (h.weight_host(), h.velocity_host()),
        }
    }
}
