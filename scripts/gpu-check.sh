#!/usr/bin/env bash
# One call on a machine with one NVIDIA GPU (CUDA driver, NCCL e.g. from PyTorch's wheels; no
# Rust needed): runs the plsc-comm NCCL collective suite at world size 1 and the head benchmark
# on the GPU, from binaries built elsewhere by scripts/build-gpu-bundle.sh, and prints the
# block that docs/distributed.md (NCCL) and docs/benchmarks.md record.
#
#   scripts/gpu-check.sh [BUNDLE_DIR]    (default: this script's own folder, i.e. run it from
#                                          inside the bundle: gpu-bundle/gpu-check.sh)
#
# Environment: BENCH_CASES (default "100000:1:default,1000000:1:default,1000000:0.1:default"),
# BENCH_ITERS (default 5), SKIP_BENCH=1 to run the collectives only; the bench's JSON is also
# written to $OUT/bench-head-cuda.json when OUT names a folder (the device runner's).
# Exit status: non-zero when any step failed; every step still runs and reports.
set -uo pipefail

BUNDLE=${1:-$(cd "$(dirname "$0")" && pwd)}
BUNDLE=$(cd "$BUNDLE" && pwd)
STATUS=0
SUMMARY=()
note() { SUMMARY+=("$*"); echo "== $*"; }

# The binaries travel gzip-compressed (plain ones are taken as they are).
BIN=$(mktemp -d /tmp/plsc-gpu-bin.XXXXXX)
LINKDIR=$(mktemp -d /tmp/plsc-gpu-libs.XXXXXX)
trap 'rm -rf "$BIN" "$LINKDIR"' EXIT
for b in xtask plsc-comm-lib-tests plsc-comm-nccl-tests; do
    if [[ -f "$BUNDLE/$b.gz" ]]; then
        gzip -dc "$BUNDLE/$b.gz" >"$BIN/$b" && chmod +x "$BIN/$b"
    elif [[ -x "$BUNDLE/$b" ]]; then
        ln -s "$BUNDLE/$b" "$BIN/$b"
    else
        echo "missing $BUNDLE/$b(.gz): build the bundle with scripts/build-gpu-bundle.sh" >&2
        exit 2
    fi
done
TESTS_LIB="$BIN/plsc-comm-lib-tests"
TESTS_NCCL="$BIN/plsc-comm-nccl-tests"
XTASK="$BIN/xtask"
[[ -f "$BUNDLE/MANIFEST.txt" ]] && { echo "== bundle:"; cat "$BUNDLE/MANIFEST.txt"; }

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/   /'
GPU=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
note "GPU: ${GPU:-unknown (nvidia-smi failed)}"

# --- libraries ---------------------------------------------------------------------------
# Folders that may hold NCCL / NVRTC / CUDA headers: the system's, the CUDA toolkit's, and
# those of PyTorch's pip wheels (nvidia-nccl-cu12, nvidia-cuda-nvrtc-cu12, ...).
PY=$(command -v python3 || command -v python || true)
CANDIDATE_DIRS=()
if [[ -n "$PY" ]]; then
    while IFS= read -r d; do [[ -n "$d" ]] && CANDIDATE_DIRS+=("$d"); done < <("$PY" - <<'EOF' 2>/dev/null
import glob, os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()])
try:
    import torch
    roots.add(os.path.dirname(os.path.dirname(torch.__file__)))
    print(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
for r in roots:
    for d in glob.glob(os.path.join(r, "nvidia", "*", "lib")):
        print(d)
EOF
)
fi
CANDIDATE_DIRS+=(/usr/lib/x86_64-linux-gnu /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib64 /opt/conda/lib)
[[ -n "${CONDA_PREFIX:-}" ]] && CANDIDATE_DIRS+=("$CONDA_PREFIX/lib")

find_lib() { # name pattern -> first match
    local pat=$1 d f
    for d in "${CANDIDATE_DIRS[@]}"; do
        for f in "$d"/$pat; do [[ -e "$f" ]] && { echo "$f"; return 0; }; done
    done
    ldconfig -p 2>/dev/null | awk -v p="$pat" '$1 ~ p {print $NF; exit}'
}

# cudarc looks for libnccl.so (and .so.<CUDA major>, .so.12, ...) but never libnccl.so.2, the
# name NCCL installs: link libnccl.so to it.
NCCL_SO=$(find_lib 'libnccl.so.2*')
if [[ -n "$NCCL_SO" ]]; then
    ln -sf "$NCCL_SO" "$LINKDIR/libnccl.so"
    note "NCCL: $NCCL_SO (linked as $LINKDIR/libnccl.so)"
else
    note "NCCL: libnccl.so.2 NOT FOUND (searched ${CANDIDATE_DIRS[*]} and ldconfig)"
    STATUS=1
fi
LIBPATH="$LINKDIR"
# NVRTC (burn-cuda compiles its kernels at run time) and the CUDA runtime's folder.
for pat in 'libnvrtc.so*' 'libcudart.so*'; do
    f=$(find_lib "$pat")
    if [[ -n "$f" ]]; then
        LIBPATH="$LIBPATH:$(dirname "$f")"
        note "found $pat: $f"
    else
        note "$pat not found"
    fi
done
# cudarc also tries the plain name libnvrtc.so first; give it a link if only .so.N exists.
NVRTC_SO=$(find_lib 'libnvrtc.so.*')
[[ -n "$NVRTC_SO" && ! -e "$(dirname "$NVRTC_SO")/libnvrtc.so" ]] && ln -sf "$NVRTC_SO" "$LINKDIR/libnvrtc.so"
export LD_LIBRARY_PATH="$LIBPATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "== LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# burn-cuda (cubecl-cuda) passes the CUDA headers to NVRTC: it needs CUDA_PATH or
# /usr/local/cuda, /opt/cuda, /usr/bin/nvcc. Fall back to a pip wheel's include folder.
if [[ -z "${CUDA_PATH:-}" && ! -d /usr/local/cuda && ! -d /opt/cuda && ! -x /usr/bin/nvcc ]]; then
    for d in "${CANDIDATE_DIRS[@]}"; do
        inc="$(dirname "$d")/include"
        if [[ -f "$inc/cuda_fp16.h" ]]; then export CUDA_PATH; CUDA_PATH=$(dirname "$d"); break; fi
    done
    note "CUDA headers: CUDA_PATH=${CUDA_PATH:-NOT FOUND (burn-cuda kernels will fail to compile)}"
else
    note "CUDA headers: ${CUDA_PATH:-/usr/local/cuda or /opt/cuda or /usr}"
fi

# --- the collective suite ----------------------------------------------------------------
run_tests() { # label binary
    local label=$1 bin=$2 log
    log=$(mktemp /tmp/plsc-gpu-test.XXXXXX)
    echo "== $label: $bin"
    PLSC_NCCL_REQUIRE_GPU=1 RUST_BACKTRACE=1 timeout 300 "$bin" --test-threads=1 --nocapture 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    local result
    result=$(grep -E '^test result:' "$log" | tail -1)
    note "$label: exit $rc; ${result:-no test summary}"
    grep -E 'NCCL .*suite checked' "$log" | while read -r line; do note "  $line"; done
    grep -E '^test .* FAILED$|panicked at' "$log" | head -20 | while read -r line; do note "  $line"; done
    rm -f "$log"
    [[ $rc -eq 0 ]] || STATUS=1
}
run_tests "plsc-comm unit tests (nccl feature)" "$TESTS_LIB"
run_tests "plsc-comm NCCL tests, world size 1" "$TESTS_NCCL"

# --- the head benchmark on the GPU -------------------------------------------------------
if [[ "${SKIP_BENCH:-0}" != 1 ]]; then
    CASES=${BENCH_CASES:-100000:1:default,1000000:1:default,1000000:0.1:default}
    ITERS=${BENCH_ITERS:-5}
    BENCH_JSON="${OUT:-$BIN}/bench-head-cuda.json"
    echo "== bench head --backend cuda --cases $CASES --iters $ITERS"
    if timeout 400 "$XTASK" bench head --backend cuda --cases "$CASES" --iters "$ITERS" >"$BENCH_JSON.tmp"; then
        mv "$BENCH_JSON.tmp" "$BENCH_JSON"
        cat "$BENCH_JSON"
        note "bench head --backend cuda: $BENCH_JSON"
        if [[ -n "$PY" ]]; then
            "$PY" - "$BENCH_JSON" <<'EOF' | while read -r line; do note "  $line"; done
import json, sys
r = json.load(open(sys.argv[1]))
for c in r.get("cases", []):
    print(f"classes {c['classes']} ratio {c['sample_ratio']}: step median "
          f"{c['step_seconds_median'] * 1e3:.2f} ms, {c['achieved_gflops']:.0f} GFLOP/s, "
          f"loss {c['loss_first']:.4f} -> {c['loss_last']:.4f}")
EOF
        fi
    else
        note "bench head --backend cuda: FAILED (exit $?)"
        STATUS=1
        rm -f "$BENCH_JSON.tmp"
    fi
fi

echo
echo "================ for docs (docs/distributed.md, NCCL; docs/benchmarks.md) ================"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
for line in "${SUMMARY[@]}"; do echo "$line"; done
echo "overall: $([[ $STATUS -eq 0 ]] && echo PASS || echo FAIL)"
exit $STATUS
