#!/usr/bin/env bash
# Builds darwin-cri (release) and serves CRI on /var/run/darwin-cri/darwin-cri.sock with the
# embedded default configuration. Extra arguments go to `darwin-cri`, e.g. --root /tmp/dc.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --locked --release --bin darwin-cri --bin darwin-cri-monitor
exec target/release/darwin-cri "$@" serve
