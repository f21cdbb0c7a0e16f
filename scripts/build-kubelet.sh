#!/usr/bin/env bash
# Builds this project's kubelet: upstream kubelet from the k8s.io/kubernetes Go module (staging
# modules pinned to the same release), with this project's darwin files laid over it at build
# time (kubelet/overlay, through `go build -overlay`). Nothing of upstream's source is committed:
# the module comes from the Go module proxy into target/go, and a hard-linked copy of it under
# target/kubelet-tree is what the overlay map points at (go build refuses overlays of files in
# the module cache; hard links cost no space and the copy is never written to).
#
#   scripts/build-kubelet.sh                      darwin/arm64 and darwin/amd64
#   scripts/build-kubelet.sh linux/amd64          the darwin-flavoured Linux kubelet (the twin)
#   KUBE_VERSION=v1.36.3 scripts/build-kubelet.sh another maintained minor (kubelet/minors/)
#
# Out: target/kubelet/<version>/<os>-<arch>/kubelet and target/kubelet/<version>/SHA256SUMS.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
default_version=v1.37.2
version=${KUBE_VERSION:-$default_version}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(darwin/arm64 darwin/amd64)

export GOMODCACHE=${GOMODCACHE:-$root/target/go/mod}
export GOCACHE=${GOCACHE:-$root/target/go/build}
# No DWARF in compiled packages: the kubelet is linked with -s -w (as upstream's release builds are),
# which drops it anyway, and without it the build cache of a kubelet build is a third smaller.
export GOFLAGS="-modcacherw -gcflags=all=-dwarf=false"
export GOTOOLCHAIN=local
export CGO_ENABLED=0

cd kubelet
if [ "$version" = "$default_version" ]; then
  modfile=$PWD/go.mod
else
  modfile=$PWD/minors/$version/go.mod
  [ -f "$modfile" ] || { echo "build-kubelet: no kubelet/minors/$version/go.mod" >&2; exit 1; }
fi
minor=${version%.*}

tree=$root/target/kubelet-tree/$version
mkdir -p "$tree"
go mod download -modfile="$modfile" k8s.io/kubernetes k8s.io/mount-utils
for m in kubernetes mount-utils; do
  src=$(go list -modfile="$modfile" -m -f '{{.Dir}}' "k8s.io/$m")
  if [ ! -f "$tree/$m/.complete" ] || [ "$(cat "$tree/$m/.complete")" != "$src" ]; then
    rm -rf "${tree:?}/$m"
    # Hard links where cp has -l (GNU); a copy elsewhere (macOS's cp).
    cp -al "$src" "$tree/$m" 2>/dev/null || { rm -rf "${tree:?}/$m"; cp -R "$src" "$tree/$m"; }
    echo "$src" >"$tree/$m/.complete"
  fi
done
# The build's go.mod: ours, with the two modules the overlay touches taken from the tree.
cp "$modfile" "$tree/go.mod"
cp "${modfile%.mod}.sum" "$tree/go.sum"
go mod edit -modfile="$tree/go.mod" -dropreplace=k8s.io/mount-utils \
  -replace=k8s.io/mount-utils="$tree/mount-utils" -replace=k8s.io/kubernetes="$tree/kubernetes"

specs=(-spec overlay/common.spec)
adds=(-add overlay/_add)
[ -f "overlay/$minor.spec" ] && specs+=(-spec "overlay/$minor.spec")
[ -d "overlay/_add-$minor" ] && adds+=(-add "overlay/_add-$minor")
go run ./cmd/overlay "${specs[@]}" "${adds[@]}" -root kubernetes="$tree/kubernetes" \
  -root mount-utils="$tree/mount-utils" -out "$tree/changed" -json "$tree/overlay.json"

# The version: upstream's release, then this project's build (semver build metadata).
commit=$(git -C "$root" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
dirty=clean
[ -z "$(git -C "$root" status --porcelain -- kubelet scripts/build-kubelet.sh 2>/dev/null)" ] || dirty=dirty
epoch=$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)
build_date=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$epoch" +%Y-%m-%dT%H:%M:%SZ)
major=${version#v}; major=${major%%.*}
minor_n=${version#v*.}; minor_n=${minor_n%%.*}
v=k8s.io/component-base/version
ldflags="-s -w -buildid= -X $v.gitVersion=$version+darwin-cri.$commit -X $v.gitCommit=$commit"
ldflags+=" -X $v.gitTreeState=$dirty -X $v.buildDate=$build_date -X $v.gitMajor=$major -X $v.gitMinor=$minor_n"

out=$root/target/kubelet/$version
for t in "${targets[@]}"; do
  os=${t%/*}; arch=${t#*/}
  mkdir -p "$out/$os-$arch"
  start=$(date +%s)
  GOOS=$os GOARCH=$arch go build -modfile="$tree/go.mod" -overlay="$tree/overlay.json" \
    -tags darwincri -trimpath -ldflags "$ldflags" -o "$out/$os-$arch/kubelet" ./cmd/kubelet
  echo "build-kubelet: $version $os/$arch in $(( $(date +%s) - start )) s: $(du -h "$out/$os-$arch/kubelet" | cut -f1)"
done
sha=(sha256sum)
command -v sha256sum >/dev/null 2>&1 || sha=(shasum -a 256)
(cd "$out" && find . -name kubelet -type f | sort | xargs "${sha[@]}" >SHA256SUMS)
cat "$out/SHA256SUMS"
