//! Where a run computes: the device setting (`cpu`, `cuda`, `cuda:N`) and where the head's
//! shard lives (host rows with the CPU kernel, or tensors on the device).

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// The compute device of a run ([`crate::Entry::device`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU (burn-flex): rank threads in one process, or one process per rank.
    Cpu,
    /// An NVIDIA GPU (burn-cuda): one process per GPU. `None`: the launcher's `LOCAL_RANK`
    /// (GPU 0 without a launcher).
    Cuda(Option<usize>),
}

impl std::str::FromStr for Device {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let bad = |detail: String| TrainError::Config {
            name: "device",
            detail,
        };
        let device = match t.as_str() {
            "cpu" => Self::Cpu,
            "cuda" | "gpu" => Self::Cuda(None),
            other => match other
                .strip_prefix("cuda:")
                .or_else(|| other.strip_prefix("gpu:"))
            {
                Some(n) => Self::Cuda(Some(n.parse().map_err(|_| {
                    bad(format!(
                        "`{s}`: the GPU index after `cuda:` must be a number, e.g. cuda:0"
                    ))
                })?)),
                None => {
                    return Err(bad(format!(
                        "unknown device `{s}`: expected cpu, cuda or cuda:N"
                    )));
                }
            },
        };
        if matches!(device, Self::Cuda(_)) && !cfg!(feature = "cuda") {
            return Err(TrainError::DeviceUnavailable {
                device: s.to_string(),
                detail: "this build has no CUDA backend: run the command line built with it, \
                         `cargo run -p xtask --features cuda,nccl -- train --device cuda` \
                         (burn-cuda loads CUDA at run time; no toolkit is needed to build), or \
                         depend on plsc-train with its `cuda` feature"
                    .to_string(),
            });
        }
        Ok(device)
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(None) => f.write_str("cuda"),
            Self::Cuda(Some(n)) => write!(f, "cuda:{n}"),
        }
    }
}

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
    fn parses_devices_and_resolves_placements() {
        assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
        assert!("tpu".parse::<Device>().is_err());
        assert!("cuda:x".parse::<Device>().is_err());
        let cuda = "cuda:1".parse::<Device>();
        if cfg!(feature = "cuda") {
            assert_eq!(cuda.unwrap(), Device::Cuda(Some(1)));
        } else {
            // Without the feature: the named error that says how to build with it.
            let e = cuda.unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
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
