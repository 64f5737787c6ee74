#!/usr/bin/env bash
# `cargo xtask bench head` with the head's CPU products on the system OpenBLAS (plsc-core
# feature `blas`): installs Debian's libopenblas-dev when it is missing, then runs the bench
# with any arguments given (e.g. --cases 100000:1:default). xtask sets OPENBLAS_CORETYPE from
# the CPU's features, because OpenBLAS 0.3.21 does not know recent Xeons and would fall back to
# its SSE3 kernels.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -e /usr/lib/x86_64-linux-gnu/libopenblas.so ] && ! ldconfig -p | grep -q 'libopenblas\.so '; then
    echo "installing libopenblas-dev (Debian) for the blas feature" >&2
    if [ "$(id -u)" = 0 ]; then
        apt-get install -y --no-install-recommends libopenblas-dev >&2
    else
        sudo apt-get install -y --no-install-recommends libopenblas-dev >&2
    fi
fi
exec cargo run -q -p xtask --features blas -- bench head "$@"
