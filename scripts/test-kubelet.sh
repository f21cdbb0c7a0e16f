#!/usr/bin/env bash
# Checks and builds this project's kubelet (kubelet/, docs/kubelet.md): gofmt, go vet of its own
# packages for darwin and Linux and of the upstream packages it lays files over (with the
# overlay, for darwin and the twin), its Go unit tests, then the darwin/arm64 kubelet and the
# darwin-flavoured Linux kubelet the end-to-end tests run. scripts/test.sh runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export GOMODCACHE=${GOMODCACHE:-$root/target/go/mod}
export GOCACHE=${GOCACHE:-$root/target/go/build}
# The flags scripts/build-kubelet.sh builds with: vet then compiles each dependency once for both
# (cgo off, -trimpath and the compiler's flags are part of a compiled package's cache key).
export GOFLAGS="-modcacherw -trimpath -gcflags=all=-dwarf=false"
export CGO_ENABLED=0
export GOTOOLCHAIN=local
# darwin's compiled packages have a build cache of their own: no Linux build reads them, so
# scripts/test.sh can free their space when the disk is short without costing a later stage.
darwin_cache=${GOCACHE_DARWIN:-$root/target/go/build-darwin}

unformatted=$(gofmt -l kubelet)
if [ -n "$unformatted" ]; then
  echo "test-kubelet: gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
# vet of this project's own packages; not of cmd/kubelet, whose vet would analyse all of upstream's
# kubelet for facts (about 17 minutes on 2 cores, twice): the builds below type-check it.
own=(./pkg/... ./internal/... ./cmd/overlay)
(
  cd kubelet
  go vet "${own[@]}"
  GOCACHE=$darwin_cache GOOS=darwin GOARCH=arm64 go vet "${own[@]}"
  go test "${own[@]}"
)
# The kubelets: darwin/arm64 (cross-compiled, CGO_ENABLED=0) and the twin.
GOCACHE=$darwin_cache scripts/build-kubelet.sh darwin/arm64
scripts/build-kubelet.sh linux/amd64
out=target/kubelet/v1.37.2
file "$out/darwin-arm64/kubelet" | grep -q 'Mach-O 64-bit.*arm64' \
  || { echo "test-kubelet: $out/darwin-arm64/kubelet is not an arm64 Mach-O binary" >&2; exit 1; }
version=$("$out/linux-amd64/kubelet" --version)
case "$version" in
  "Kubernetes v1.37.2+darwin-cri."*) echo "test-kubelet: $version" ;;
  *) echo "test-kubelet: unexpected version: $version" >&2; exit 1 ;;
esac
# go vet of upstream's packages that hold this project's files, as they are built. cadvisor, cm and
# kuberuntime pull in most of the kubelet, whose facts cost more than 7 minutes cold: they are vetted
# with KUBELET_VET_ALL=1 (run it after changing their overlay files); the builds type-check them.
tree=$root/target/kubelet-tree/v1.37.2
pkgs=(k8s.io/kubernetes/pkg/volume/util/hostutil k8s.io/kubernetes/pkg/volume/util/subpath
  k8s.io/mount-utils)
if [ "${KUBELET_VET_ALL:-0}" = 1 ]; then
  pkgs+=(k8s.io/kubernetes/pkg/kubelet/cadvisor k8s.io/kubernetes/pkg/kubelet/cm
    k8s.io/kubernetes/pkg/kubelet/kuberuntime)
fi
# For Linux, the packages whose upstream Linux tests call what the overlay takes out of the twin's
# build are left to the build above (their files are the darwin build's, vetted here).
twin_pkgs=(k8s.io/kubernetes/pkg/volume/util/hostutil k8s.io/kubernetes/pkg/volume/util/subpath
  k8s.io/mount-utils)
(
  cd kubelet
  GOCACHE=$darwin_cache GOOS=darwin go vet -modfile="$tree/go.mod" -overlay="$tree/overlay.json" -tags darwincri "${pkgs[@]}"
  GOOS=linux go vet -modfile="$tree/go.mod" -overlay="$tree/overlay.json" -tags darwincri "${twin_pkgs[@]}"
)
echo "test-kubelet: ok"
