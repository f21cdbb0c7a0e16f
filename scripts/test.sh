#!/usr/bin/env bash
# Runs every test of darwin-cri on a fresh Debian machine, as root (the tests chroot, bind-mount
# and run real containers): installs the build and test dependencies, builds the binary the
# end-to-end tests start, then runs the whole workspace's tests and sums up their results.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --tests
# With the node reporter (the kube feature), so that its tests run too.
cargo build --locked --bin darwin-cri --features cri-server/kube
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --workspace --features cri-server/kube 2>&1 | tee "$log"
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' "$log"
