#!/usr/bin/env bash
# Proves that the GPU build (burn-cuda through our `cuda` features) compiles on a machine
# without CUDA: burn 0.21's CUDA backend loads the driver and NVRTC at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo check -p xtask --features cuda
# The NCCL backend of plsc-comm (cudarc, the version burn-cuda links; NCCL loaded at run time).
cargo check -p plsc-comm --features nccl
