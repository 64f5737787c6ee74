#!/usr/bin/env bash
# Proves that the GPU build compiles on a machine without CUDA (burn 0.21's CUDA backend loads
# the driver and NVRTC at run time): the command line with training (`train --device cuda`,
# one GPU or NCCL across processes), benchmarks (`bench train|head --device/--backend cuda`)
# and serving (`serve --device cuda`) on burn-cuda, and plsc-comm's NCCL backend.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo check -p xtask --features cuda,nccl
# The NCCL backend of plsc-comm with its tests (cudarc, the version burn-cuda links; NCCL
# loaded at run time).
cargo check -p plsc-comm --features nccl --tests
