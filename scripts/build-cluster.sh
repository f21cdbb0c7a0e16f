#!/usr/bin/env bash
# Builds target/e2e/kube-cluster: one Go binary with etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl and an upstream kubelet (e2e/cmd/kube-cluster),
# for the end-to-end tests of e2e/ (docs/e2e.md). Everything comes from the Go module proxy, at
# the Kubernetes release of e2e/go.mod; the module and build caches live under target/go.
#
# The build takes minutes on two cores, so it runs once per machine: it is skipped while the
# binary's stamp (a hash of this script, e2e/go.mod, e2e/go.sum, the command's sources and the Go version)
# is unchanged. FORCE=1 builds anyway. -trimpath, as scripts/build-kubelet.sh builds: the packages
# both link are compiled once into the shared build cache (go vet and go test of e2e/ take the
# same flags through GOFLAGS in scripts/test.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export GOMODCACHE="$root/target/go/mod" GOCACHE="$root/target/go/build"
# No DWARF in compiled packages, as scripts/build-kubelet.sh: the binary is linked with -s -w.
export GOFLAGS="-modcacherw -buildvcs=false -gcflags=all=-dwarf=false" CGO_ENABLED=0
out=target/e2e/kube-cluster
stamp=$out.stamp
release=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9.]*\).*/\1/p' e2e/go.mod | head -n 1)
[ -n "$release" ] || { echo "build-cluster: no k8s.io/kubernetes in e2e/go.mod" >&2; exit 1; }
key=$( { go version; echo "$release"; cat scripts/build-cluster.sh e2e/go.mod e2e/go.sum; find e2e/cmd -type f -name '*.go' | sort | xargs cat; } | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != 1 ] && [ -x "$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then
  echo "build-cluster: $out is up to date ($release)"
  exit 0
fi
mkdir -p target/e2e
major=${release#v}; major=${major%%.*}
minor=${release#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$release -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
echo "build-cluster: building $out ($release)" >&2
start=$(date +%s)
(cd e2e && go mod download)
(cd e2e && go build -trimpath -ldflags "$ldflags" -o "$root/$out.tmp" ./cmd/kube-cluster)
mv "$out.tmp" "$out"
echo "$key" > "$stamp"
echo "build-cluster: built $out in $(( $(date +%s) - start ))s ($(du -h "$out" | cut -f1))" >&2
