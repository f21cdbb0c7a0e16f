#!/usr/bin/env bash
# Runs every test of darwin-cri on a fresh Debian machine, as root (the tests chroot, bind-mount
# and run real containers): installs the build and test dependencies, builds the binary the
# end-to-end tests start, then runs the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --bin darwin-cri
cargo test --locked --workspace
