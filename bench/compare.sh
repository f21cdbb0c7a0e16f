#!/usr/bin/env bash
# darwin-cri beside containerd, on a fresh Debian machine, as root: installs containerd, runc,
# the CNI plugins, docker-registry, skopeo and busybox (services kept from starting), builds
# darwin-cri and cri-bench in release mode, and runs cri-bench. cri-bench starts a local
# registry with the test images, a private containerd and a private darwin-cri (each with its
# own root, state and socket under a temporary directory), alternates every benchmark between
# them, writes bench/results/ (results.md, results.json, pod-start.svg) and stops everything it
# started. Arguments go to cri-bench (--iterations, --pull-mb, --pull-runs, --xcode-files,
# --xcode-mb, --only, --out). The whole run takes about 20 minutes on 2 cores and needs about
# 30 GB of free disk for the Xcode-sized image (200,000 files, 4 GB) in both runtimes' stores.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
cargo build --release --bin darwin-cri --bin darwin-cri-monitor --bin cri-bench
exec target/release/cri-bench --darwin-cri target/release/darwin-cri "$@"
