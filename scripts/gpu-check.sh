#!/usr/bin/env bash
# One call on a machine with one NVIDIA GPU (CUDA driver, NCCL and PyTorch e.g. from pip
# wheels; no Rust needed), from binaries built elsewhere by scripts/build-gpu-bundle.sh, run
# from the repository root (the shipped data and the peer script are read from there):
#
#   (a) the plsc-comm NCCL collective suite at world size 1;
#   (b) `xtask bench train --device cuda`: iresnet50, batch 128, 112x112 synthetic images,
#       C = 100k (r = 1) and C = 1M (r = 0.1), f32 and mixed: images/s and the peak GPU memory
#       the driver reports for the process;
#   (c) 200 steps of the shipped job on the GPU, its loss curve against the committed CPU run
#       (scripts/gpu-reference/fmnist_cpu_losses.json, tolerance stated there);
#   (d) the PyTorch peer (scripts/peers/arcface_torch_peer.py: arcface_torch's iresnet50 +
#       PartialFC_V2 with AMP) on the same GPU, same batch and classes, same two figures;
#   (e) (c) again with the head's weight and momentum stored in bf16 on the device
#       (`--head-storage bf16`, stochastically rounded updates), against the same curve.
#
# Every part has its own time limit, and its results are written to $OUT (or a temp folder)
# as soon as it finishes; the whole script stays under 6 minutes. At the end it prints the
# block that docs/benchmarks.md and docs/distributed.md record.
#
#   scripts/gpu-check.sh [--smoke] [BUNDLE_DIR]   (default bundle: this script's own folder)
#
# --smoke: at most 2 minutes, to try first: the unit tests of the NCCL backend, a tiny
# `bench train --device cuda` (iresnet_tiny) and 5 steps of the shipped job on the GPU.
# Environment: PARTS (default "a b c d e"), STEPS (bench steps, default 5).
# Exit status: non-zero when any part failed; every part still runs and reports.
set -uo pipefail

SMOKE=0
if [[ "${1:-}" == "--smoke" ]]; then SMOKE=1; shift; fi
BUNDLE=${1:-$(cd "$(dirname "$0")" && pwd)}
BUNDLE=$(cd "$BUNDLE" && pwd)
REPO=$(pwd)
STATUS=0
SUMMARY=()
note() { SUMMARY+=("$*"); echo "== $*"; }
RESULTS=${OUT:-$(mktemp -d /tmp/plsc-gpu-results.XXXXXX)}
mkdir -p "$RESULTS"
note "results: $RESULTS"

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

# --- (a) the collective suite --------------------------------------------------------------
run_tests() { # label binary limit [filter]
    local label=$1 bin=$2 limit=$3 filter=${4:-} log
    log="$RESULTS/$(echo "$label" | tr -c 'a-zA-Z0-9' '-').log"
    echo "== $label: $bin"
    PLSC_NCCL_REQUIRE_GPU=1 RUST_BACKTRACE=1 timeout "$limit" "$bin" $filter --test-threads=1 --nocapture >"$log" 2>&1
    local rc=$?
    cat "$log"
    local result
    result=$(grep -E '^test result:' "$log" | tail -1)
    note "$label: exit $rc; ${result:-no test summary}"
    grep -E 'NCCL .*suite checked' "$log" | while read -r line; do note "  $line"; done
    grep -E '^test .* FAILED$|panicked at' "$log" | head -20 | while read -r line; do note "  $line"; done
    [[ $rc -eq 0 ]] || STATUS=1
}

PY=${PY:-$(command -v python3 || true)}
PARTS=${PARTS:-a b c d e}
STEPS=${STEPS:-5}
want() { [[ " $PARTS " == *" $1 "* ]]; }

# Prints one line per bench/peer JSON file: the figures the docs record.
summarise() { # file
    [[ -n "$PY" && -f "$1" ]] || return 0
    "$PY" - "$1" <<'PYEOF' | while read -r line; do note "  $line"; done
import json, sys
r = json.load(open(sys.argv[1]))
mem = r.get("gpu_peak_memory_mib")
mem = f"{mem:.0f} MiB" if mem is not None else "n/a"
if r.get("bench") == "train":
    print(f"plsc-rs {r['model']} C={r['classes']} r={r['sample_ratio']} "
          f"{'mixed' if r['mixed_precision'] else 'f32'}: {r['global_images_per_second']:.1f} images/s, "
          f"peak GPU memory {mem} (step {r['step_seconds_median'] * 1e3:.1f} ms)")
else:
    print(f"arcface_torch {r['model']} C={r['classes']} r={r['sample_ratio']} "
          f"{'amp' if r['amp'] else 'f32'}: {r['images_per_second']:.1f} images/s, peak GPU memory {mem}")
PYEOF
}

bench() { # name limit args...
    local name=$1 limit=$2
    shift 2
    echo "== bench train --device cuda $*"
    if timeout "$limit" "$XTASK" bench train --device cuda --ranks 1 "$@" >"$RESULTS/$name.json.tmp" 2>"$RESULTS/$name.log"; then
        mv "$RESULTS/$name.json.tmp" "$RESULTS/$name.json"
        summarise "$RESULTS/$name.json"
    else
        note "bench train $*: FAILED or timed out (exit $?; log $RESULTS/$name.log)"
        tail -5 "$RESULTS/$name.log"
        STATUS=1
    fi
}

peer() { # name limit args...
    local name=$1 limit=$2
    shift 2
    if [[ -z "$PY" ]] || ! "$PY" -c 'import torch' 2>/dev/null; then
        note "peer $name: no python3 with torch here"
        STATUS=1
        return
    fi
    echo "== peer $*"
    if timeout "$limit" "$PY" "$REPO/scripts/peers/arcface_torch_peer.py" "$@" >"$RESULTS/$name.json.tmp" 2>"$RESULTS/$name.log"; then
        mv "$RESULTS/$name.json.tmp" "$RESULTS/$name.json"
        summarise "$RESULTS/$name.json"
    else
        note "peer $*: FAILED or timed out (exit $?; log $RESULTS/$name.log)"
        tail -5 "$RESULTS/$name.log"
        STATUS=1
    fi
}

# The shipped job on the GPU: `steps` steps at global batch 128 on one GPU (the CPU job runs 2
# rank threads of 64; one GPU is one rank of 128, the same global batch).
shipped_job() { # steps limit [name extra-train-args...]
    local steps=$1 limit=$2 name=${3:-shipped-job}
    shift $(($# < 3 ? $# : 3))
    local dir="$RESULTS/$name"
    mkdir -p "$dir"
    echo "== train --device cuda (the shipped job, $steps steps) $*"
    if (cd "$REPO" && timeout "$limit" "$XTASK" train --device cuda --ranks 1 --batch-size 128 \
        --steps "$steps" --with-test false --log-period 10 --no-progress \
        --model-save-dir "$dir/runs" "$@") >"$dir/train.log" 2>&1; then
        note "shipped job on the GPU, $steps steps $*: done"
        local metrics
        metrics=$(ls "$dir"/runs/*/metrics.jsonl 2>/dev/null | head -1)
        if [[ -n "$metrics" && -n "$PY" && -f "$REPO/scripts/gpu-reference/compare_losses.py" ]]; then
            "$PY" "$REPO/scripts/gpu-reference/compare_losses.py" "$metrics" \
                "$REPO/scripts/gpu-reference/fmnist_cpu_losses.json" >"$dir/compare.txt" 2>&1
            local rc=$?
            while read -r line; do note "  $line"; done <"$dir/compare.txt"
            [[ $rc -eq 0 || $steps -lt 200 ]] || STATUS=1
        fi
    else
        note "shipped job on the GPU: FAILED or timed out (exit $?; log $dir/train.log)"
        tail -15 "$dir/train.log"
        STATUS=1
    fi
}

if [[ $SMOKE == 1 ]]; then
    run_tests "plsc-comm unit tests (nccl feature)" "$TESTS_LIB" 40
    bench smoke-bench 40 --model iresnet_tiny --batch 32 --classes 1000 --steps 3
    shipped_job 5 40
else
    want a && run_tests "(a) plsc-comm NCCL tests, world size 1" "$TESTS_NCCL" 40
    if want b; then
        common=(--model iresnet50 --batch 128 --input-size 112 --channels 3 --steps "$STEPS")
        bench b-100k-f32 35 "${common[@]}" --classes 100000 --sample-ratio 1
        bench b-100k-mixed 25 "${common[@]}" --classes 100000 --sample-ratio 1 --mixed-precision
        bench b-1m-f32 30 "${common[@]}" --classes 1000000 --sample-ratio 0.1
        bench b-1m-mixed 25 "${common[@]}" --classes 1000000 --sample-ratio 0.1 --mixed-precision
    fi
    want c && shipped_job 200 65
    # (e) the same with the head's weight and momentum in bf16 on the device (issue #19).
    want e && shipped_job 200 65 e-bf16-storage --head-storage bf16
    if want d; then
        pcommon=(--model iresnet50 --batch 128 --input-size 112 --steps "$STEPS" --amp)
        peer d-100k-amp 28 "${pcommon[@]}" --classes 100000 --sample-ratio 1
        peer d-1m-amp 27 "${pcommon[@]}" --classes 1000000 --sample-ratio 0.1
    fi
fi

echo
echo "================ for docs (docs/benchmarks.md GPU; docs/distributed.md NCCL) ================"
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)"
for line in "${SUMMARY[@]}"; do echo "$line"; done
echo "overall: $([[ $STATUS -eq 0 ]] && echo PASS || echo FAIL)"
exit $STATUS
