#!/usr/bin/env bash
# Installs what building darwin-cri needs on a fresh Debian machine, as root: protoc (the CRI
# types are generated at build time). With --tests, also what the tests need: a static busybox
# (the test image), Prometheus with promtool (the metrics endpoint's checks), and
# docker-registry, skopeo and htpasswd (the registry pull tests), and kubectl (the streaming
# interop test; Debian's kubernetes-client when no kubectl is installed), bindfs, shellcheck
# and setpriv (the macOS layer, deploy and doctor tests), ruby (the Homebrew formula's check). With --bench, what
# bench/compare.sh needs (containerd, runc, the CNI plugins, the registry, skopeo, busybox).
#
# Rust: when no cargo is on PATH, or one older than the workspace's rust-version, Debian's
# rustc-web, cargo-web, rustfmt-web and rust-web-clippy (Rust 1.96, into /usr/bin) are installed.
# (A rustup toolchain earlier on PATH than /usr/bin still wins: update it with rustup instead.)
# With --tests, also rust-web-src: scripts/check-macos.sh builds the standard library for the
# Apple targets from it.
set -euo pipefail
need=()
want=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' "$(dirname "$0")/../Cargo.toml")
have=$(cargo --version 2>/dev/null | awk '{ print $2 }' || true)
if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$want" "$have" | sort -V | head -n 1)" != "$want" ]; then
  echo "setup: cargo ${have:-missing}, the workspace needs $want: installing Debian's Rust" >&2
  need+=(rustc-web cargo-web rustfmt-web rust-web-clippy)
fi
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
if [ "${1:-}" = "--bench" ]; then
  # bench/compare.sh: containerd with runc and the CNI plugins, the registry and skopeo for the
  # images, busybox for them, and a font for the chart.
  command -v containerd >/dev/null 2>&1 || need+=(containerd)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
  [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
  command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
  [ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
fi
if [ "${1:-}" = "--tests" ]; then
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
  command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
  # The pull tests: a real registry, skopeo to push fixtures, htpasswd for basic auth.
  [ -x /usr/bin/docker-registry ] || need+=(docker-registry)
  command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
  command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
  # image base reads Mach-O load commands: its tests build fixtures with clang and ld64.lld.
  command -v clang >/dev/null 2>&1 || need+=(clang)
  command -v ld64.lld >/dev/null 2>&1 || command -v ld64.lld-14 >/dev/null 2>&1 || need+=(lld)
  # Images darwin-cri makes and pushes are pulled and run by containerd too (ctr, runc).
  command -v containerd >/dev/null 2>&1 || need+=(containerd)
  command -v runc >/dev/null 2>&1 || need+=(runc)
  command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
  # The macOS layer's tests: volumes through bindfs (FUSE), as on macOS; deploy/install.sh is
  # checked with shellcheck; doctor runs as an unprivileged user through setpriv.
  command -v bindfs >/dev/null 2>&1 || need+=(bindfs)
  command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
  command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
  # scripts/test-kubelet.sh checks the darwin kubelet is a Mach-O binary.
  command -v file >/dev/null 2>&1 || need+=(file)
  # The Homebrew formula is loaded by Ruby (tests/tests/deploy.rs).
  command -v ruby >/dev/null 2>&1 || need+=(ruby)
  # scripts/check-macos.sh: Debian's Rust 1.96 and the standard library's source.
  [ -x /usr/bin/cargo ] || need+=(cargo-web)
  [ -x /usr/bin/rustc ] || need+=(rustc-web)
  [ -d /usr/lib/rustlib/src/rust/library ] || need+=(rust-web-src)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need[*]}: run as root, or install them with apt-get" >&2
    exit 1
  fi
  # Packages with services (prometheus, docker-registry, containerd) must not start them here:
  # the tests and the benchmark start their own.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  apt-get update -qq
  mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
