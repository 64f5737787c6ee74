#!/usr/bin/env bash
# One build serves `cargo test --workspace` and `cargo xtask ...` (README, "needs no second
# build"). Run after `cargo test --workspace` (CI's test step). Fails loudly when:
#  1. a package resolves other features for xtask alone (`cargo build -p xtask`, what the
#     `cargo xtask` alias builds: normal dependencies only) than for the workspace's test build
#     (with the dev-dependencies); everything above such a package is then built twice;
#  2. `cargo build -p xtask` compiles any package but xtask itself after the test build.
# The fix for 1 is a feature pin in xtask/Cargo.toml (see the comment at bitflags/fastrand in
# the root Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "check-one-build: FAILED: $*" >&2
    exit 1
}

resolve() {
    # One line per package: `name vX.Y.Z [features]`.
    cargo tree "$@" --prefix none --format '{p} [{f}]' | sed 's/ (\*)$//' | sort -u
}

# 1. Feature sets: every package of xtask's own build must resolve as in the workspace's.
alone=$(resolve -p xtask -e no-dev)
whole=$(resolve --workspace)
differ=$(comm -23 <(echo "$alone") <(echo "$whole"))
if [[ -n "$differ" ]]; then
    echo "packages whose features differ between \`cargo build -p xtask\` (left) and" >&2
    echo "\`cargo test --workspace\` (right):" >&2
    while read -r line; do
        name_ver=${line% \[*}
        echo "  $line   vs   $(grep -F "$name_ver [" <<<"$whole" || echo '(absent)')" >&2
    done <<<"$differ"
    fail "pin the right-hand features in xtask/Cargo.toml (see the root Cargo.toml's comment)"
fi
echo "check-one-build: xtask alone and the workspace's tests resolve the same features"

# 2. The build itself: nothing but xtask may compile now.
compiled=$(cargo build --package xtask --message-format=json 2>/dev/null |
    grep '"reason":"compiler-artifact"' | grep '"fresh":false' |
    grep -o '"package_id":"[^"]*"' | sed 's/"package_id":"//; s/"$//' || true)
others=$(grep -v '/xtask#' <<<"$compiled" | grep -v '^$' || true)
if [[ -n "$others" ]]; then
    echo "\`cargo build --package xtask\` compiled after the test build:" >&2
    sed 's/^/  /' <<<"$others" >&2
    fail "the command line needs a second build of $(wc -l <<<"$others") package(s)"
fi
echo "check-one-build: cargo build --package xtask compiled $(grep -c . <<<"$compiled" || true) package(s) (only xtask may)"
