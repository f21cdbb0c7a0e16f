#!/usr/bin/env bash
# Type-checks darwin-cri for macOS (Apple silicon and Intel) on a Linux machine: every crate of
# the workspace, tests and benches included, with the `kube` feature. Fails on any
# error or warning. Nothing is linked: a check needs no Apple SDK.
#
# How, with Debian packages only: rustc-web and cargo-web (Rust 1.96) and rust-web-src (the
# standard library's source, in /usr/lib/rustlib/src). RUSTC_BOOTSTRAP=1 lets that stable
# toolchain take -Zbuild-std, which builds the standard library from source for the Apple
# target. C code that build scripts compile for the target goes through a stand-in compiler
# (scripts/macos-check/cc). The check has its own target directory (target/macos-check), so a
# second run is incremental and the Linux build's artefacts are untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ ! -x /usr/bin/cargo ] || [ ! -d /usr/lib/rustlib/src/rust/library ] \
  || ! /usr/bin/rustc --version 2>/dev/null | grep -q '^rustc 1\.\(9[0-9]\|[1-9][0-9][0-9]\)'; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-macos: needs Debian's rustc-web, cargo-web and rust-web-src: run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rustc-web cargo-web rust-web-src
fi

export RUSTC_BOOTSTRAP=1
export RUSTC=/usr/bin/rustc
export CARGO_TARGET_DIR="$root/target/macos-check"
# Warnings of the workspace's own crates fail the check; dependencies' lints are capped by cargo.
export RUSTFLAGS="-D warnings"
unset RUSTC_WRAPPER CARGO_BUILD_RUSTC_WRAPPER
for t in aarch64_apple_darwin x86_64_apple_darwin; do
  export "CC_$t=$root/scripts/macos-check/cc"
  export "CXX_$t=$root/scripts/macos-check/cc"
  export "AR_$t=ar"
done

start=$(date +%s)
status=0
# Both targets with the node reporter (the kube feature), which compiles every line that differs by
# OS. The few cfg(not(feature = "kube")) lines are not OS-specific: the Linux clippy without the
# feature (scripts/test.sh) checks them, so a third check for macOS without it (4 minutes, as the
# dependencies' features differ) would find nothing more.
for target in aarch64-apple-darwin x86_64-apple-darwin; do
  echo "check-macos: $target --features cri-server/kube"
  if ! /usr/bin/cargo check --locked --quiet -Zbuild-std=std,panic_abort --target "$target" \
    --workspace --all-targets --features cri-server/kube; then
    status=1
  fi
done
echo "check-macos: $(( $(date +%s) - start )) s, $([ $status = 0 ] && echo clean || echo FAILED)"
exit $status
