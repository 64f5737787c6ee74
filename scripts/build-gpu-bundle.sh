#!/usr/bin/env bash
# Builds, on a machine without CUDA, everything scripts/gpu-check.sh runs on a GPU machine
# without Rust, into one folder (default target/gpu-bundle) that a later session carries:
#
#   xtask.gz                `cargo build -p xtask --features cuda,nccl` (train/serve --device
#                           cuda, bench train --device cuda, bench head --backend cuda)
#   plsc-comm-lib-tests.gz  plsc-comm's unit tests with feature `nccl`
#   plsc-comm-nccl-tests.gz crates/plsc-comm/tests/nccl.rs (the collective suite at world 1)
#   gpu-check.sh            the script that runs them (from the repository root, which holds the
#                           shipped data, the PyTorch peer and the CPU reference curve)
#   MANIFEST.txt            commit, date, sizes, sha256
#
# The binaries are stripped (debug info and symbols: panic messages stay, backtraces lose their
# function names) and gzip-compressed (gpu-check.sh unpacks them) so the folder stays well
# under 64 MiB, the carry limit (60 MB stripped only, about 16 MB compressed, in Nov 2026).
# Uses the dev profile (the dependencies are optimised there) and cargo's target dir
# (CARGO_TARGET_DIR is honoured).
#
#   scripts/build-gpu-bundle.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/gpu-bundle}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

MSGS=$(mktemp)
trap 'rm -f "$MSGS"' EXIT
echo "== building plsc-comm tests (feature nccl)"
cargo test -p plsc-comm --features nccl --lib --test nccl --no-run \
    --message-format=json-render-diagnostics >"$MSGS"

# The executable of a target from cargo's JSON messages: kind (bin|lib|test), name, test (1|0).
exe_of() {
    python3 -c '
import json, sys
path, kind, name, test = sys.argv[1:5]
for line in open(path):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    t = m.get("target", {})
    if (m.get("reason") == "compiler-artifact" and m.get("executable")
            and bool(m.get("profile", {}).get("test")) == (test == "1")
            and kind in t.get("kind", []) and t.get("name") == name):
        print(m["executable"])
' "$MSGS" "$1" "$2" "$3" | tail -1
}
LIB_EXE=$(exe_of lib plsc_comm 1)
NCCL_EXE=$(exe_of test nccl 1)

# target/debug/xtask is a link that every xtask build in this target dir replaces (other
# builds run at the same time here): take the hash-named file it links to, which is this
# feature set's own, and make sure it is the CUDA build (only that one carries the JSON text
# of `bench head --backend cuda`).
XTASK_EXE=
for attempt in 1 2 3; do
    echo "== building xtask (features cuda, nccl), attempt $attempt"
    cargo build -p xtask --features cuda,nccl --message-format=json-render-diagnostics >>"$MSGS"
    linked=$(exe_of bin xtask 0)
    own=$(find "$(dirname "$linked")/deps" -maxdepth 1 -name 'xtask-*' -samefile "$linked" | head -1)
    if [[ -n "$own" ]] && grep -q 'burn_head_step (one chunk)' "$own"; then
        XTASK_EXE=$own
        break
    fi
done
if [[ -z "$XTASK_EXE" || -z "$LIB_EXE" || -z "$NCCL_EXE" ]]; then
    echo "executables not found (xtask: '$XTASK_EXE', unit tests: '$LIB_EXE', nccl tests: '$NCCL_EXE')" >&2
    exit 1
fi

copy() { # src dst: strip debug info and symbols, compress to dst.gz (temp name, rename)
    cp "$1" "$2.tmp"
    strip --strip-all "$2.tmp" 2>/dev/null || objcopy --strip-all "$2.tmp" 2>/dev/null || true
    gzip -9 -c "$2.tmp" >"$2.gz.tmp"
    rm -f "$2.tmp" "$2"
    mv "$2.gz.tmp" "$2.gz"
}
copy "$XTASK_EXE" "$OUT/xtask"
copy "$LIB_EXE" "$OUT/plsc-comm-lib-tests"
copy "$NCCL_EXE" "$OUT/plsc-comm-nccl-tests"
cp scripts/gpu-check.sh "$OUT/gpu-check.sh.tmp"
chmod +x "$OUT/gpu-check.sh.tmp"
mv "$OUT/gpu-check.sh.tmp" "$OUT/gpu-check.sh"

{
    commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
    dirty=$(git diff --name-only HEAD -- crates xtask scripts Cargo.toml 2>/dev/null | tr '\n' ' ')
    [[ -n "$dirty" ]] && dirty=" (+ uncommitted changes in: $dirty)"
    echo "commit: $commit$dirty"
    echo "built: $(date -u +%Y-%m-%dT%H:%MZ) on $(uname -m), $(rustc --version)"
    echo "cudarc: $(grep -A1 'name = "cudarc"' Cargo.lock | sed -n 's/version = //p' | tr -d '"')"
    for f in xtask.gz plsc-comm-lib-tests.gz plsc-comm-nccl-tests.gz gpu-check.sh; do
        printf '%s  %s bytes  %s\n' "$f" "$(stat -c %s "$OUT/$f")" "$(sha256sum "$OUT/$f" | cut -d' ' -f1)"
    done
} >"$OUT/MANIFEST.txt.tmp"
mv "$OUT/MANIFEST.txt.tmp" "$OUT/MANIFEST.txt"
cat "$OUT/MANIFEST.txt"

TOTAL=$(du -sb "$OUT" | cut -f1)
echo "== $OUT: $TOTAL bytes"
if ((TOTAL > 64 * 1024 * 1024)); then
    echo "the bundle is over 64 MiB: it will not travel with a device call" >&2
    exit 1
fi
echo "on the GPU machine: $OUT/gpu-check.sh (or, carried as target/gpu-bundle: target/gpu-bundle/gpu-check.sh)"
