//! The compute device a backbone runs on: `cpu` (burn-flex) or `cuda` / `cuda:N` (burn-cuda,
//! feature `cuda`). One parser for training and serving.

use crate::error::{ModelError, Result};

/// A compute device: where training runs (`plsc-train`'s `device` setting) and where the server
/// runs its backbone (`xtask serve --device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU (burn-flex): rank threads in one process, or one process per rank.
    Cpu,
    /// An NVIDIA GPU (burn-cuda): one process per GPU. `None`: the launcher's `LOCAL_RANK`
    /// (GPU 0 without a launcher).
    Cuda(Option<usize>),
}

impl std::str::FromStr for Device {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let bad = |detail: String| ModelError::Device {
            device: s.to_string(),
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
            return Err(ModelError::Device {
                device: s.to_string(),
                detail: "this build has no CUDA backend: run the command line built with it, \
                         e.g. `cargo run -p xtask --features cuda,nccl -- train --device cuda` \
                         (burn-cuda loads CUDA at run time; no toolkit is needed to build), or \
                         depend on the crates with their `cuda` feature"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
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
    }
}

/// Starts CUDA on GPU `index` and runs one tiny kernel, turning burn-cuda's panics (no driver,
/// no such GPU, no NVRTC) into [`ModelError::Device`] before a command creates anything.
#[cfg(feature = "cuda")]
pub fn check_cuda(index: usize) -> Result<()> {
    use burn::backend::Cuda;
    use burn::tensor::Tensor;
    let probe = std::panic::catch_unwind(|| {
        let device = burn::backend::cuda::CudaDevice::new(index);
        let t = Tensor::<Cuda, 1>::ones([2], &device) + 1.0;
        t.into_data().convert::<f32>().into_vec::<f32>().ok()
    });
    match probe {
        Ok(Some(v)) if v == [2.0, 2.0] => Ok(()),
        Ok(_) => Err(ModelError::Device {
            device: format!("cuda:{index}"),
            detail: "a test kernel gave a wrong result".into(),
        }),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "burn-cuda panicked".into());
            Err(ModelError::Device {
                device: format!("cuda:{index}"),
                detail: format!(
                    "CUDA did not start ({msg}): check that the NVIDIA driver (libcuda.so.1) \
                     and NVRTC (libnvrtc.so) are on the library path and that GPU {index} exists \
                     (nvidia-smi); scripts/gpu-check.sh shows how it finds them"
                ),
            })
        }
    }
}
