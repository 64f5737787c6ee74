//! Where a run computes: the device setting (`cpu`, `cuda`, `cuda:N`) and where the head's
//! shard lives (host rows with the CPU kernel, or tensors on the device).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

pub use plsc_models::device::Device;

/// Where the head's shard and its step live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Host rows, the CPU kernel (`plsc_core::ShardedHead`); backbone gradients summed on the
    /// host.
    Host,
    /// Tensors on the backend's device (`plsc_core::DeviceHead`); backbone gradients summed on
    /// the device.
    Device,
}

/// The `head_placement` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlacementChoice {
    /// Host on the CPU, device on a GPU.
    #[default]
    Auto,
    /// Always the host (the CPU kernel).
    Host,
    /// Always the device (on the CPU: the generic tensor path on Flex).
    Device,
}

impl PlacementChoice {
    /// The placement for `device`.
    pub fn resolve(self, device: &Device) -> Placement {
        match (self, device) {
            (Self::Host, _) => Placement::Host,
            (Self::Device, _) | (Self::Auto, Device::Cuda(_)) => Placement::Device,
            (Self::Auto, Device::Cpu) => Placement::Host,
        }
    }
}

impl std::str::FromStr for PlacementChoice {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "host" => Ok(Self::Host),
            "device" => Ok(Self::Device),
            _ => Err(TrainError::Config {
                name: "head_placement",
                detail: format!("unknown placement `{s}`: expected auto, host or device"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_errors_are_named_and_placements_resolve() {
        let e = crate::Entry::new()
            .with_device("tpu")
            .validate()
            .unwrap_err();
        assert!(matches!(e, TrainError::DeviceUnavailable { .. }), "{e}");
        if !cfg!(feature = "cuda") {
            let e = crate::Entry::new()
                .with_device("cuda")
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains("--features cuda"), "{e}");
        }
        assert_eq!(PlacementChoice::Auto.resolve(&Device::Cpu), Placement::Host);
        assert_eq!(
            PlacementChoice::Auto.resolve(&Device::Cuda(None)),
            Placement::Device
        );
        assert_eq!(
            PlacementChoice::Device.resolve(&Device::Cpu),
            Placement::Device
        );
    }
}
