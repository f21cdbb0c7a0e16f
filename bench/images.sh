#!/usr/bin/env bash
# Making and moving images (image build, push, pull) beside skopeo, on a fresh Debian machine,
# as root: installs docker-registry, skopeo and busybox (services kept from starting), builds
# darwin-cri and image-bench in release mode, and runs image-bench, which starts two local
# registries and a private darwin-cri root under a temporary directory and stops what it
# started. Arguments go to image-bench (--copy-mb, --big-gib, --out).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
cargo build --release --bin darwin-cri --bin darwin-cri-monitor --bin image-bench
exec target/release/image-bench --darwin-cri target/release/darwin-cri "$@"
