#!/usr/bin/env bash
# The first run of darwin-cri on a Mac, with a report to paste into an issue:
#
#   sudo scripts/mac-smoke.sh            # builds darwin-cri and cri-smoke if they are missing
#
# It runs `darwin-cri doctor`, makes an image from this host's own files (an OCI layout of
# /bin/sh, sleep and cat and every library they load, written here), imports it, starts the
# server on a scratch root and socket, and drives it with cri-smoke: a pod, a container, ExecSync,
# its log, its stats, stop and removal. Nothing outside the scratch directory is changed; it is
# removed at the end.
#
# On Linux it runs the same steps against the Linux twin (CI runs it there, so that it cannot
# rot). On a Mac, what it does is unproven until a Mac owner runs it: the image copies /usr/lib/dyld
# and the dyld shared cache (several GB) into the layout, because the system's libraries live
# only there since macOS 11.
set -euo pipefail
cd "$(dirname "$0")/.."
os=$(uname -s)
target=${CARGO_TARGET_DIR:-target}
bin=${DARWIN_CRI:-$target/debug/darwin-cri}
smoke=${CRI_SMOKE:-$target/debug/cri-smoke}
[ -x "$bin" ] && [ -x "$(dirname "$bin")/darwin-cri-monitor" ] ||
    cargo build --locked --bin darwin-cri --bin darwin-cri-monitor
[ -x "$smoke" ] || cargo build --locked -p darwin-cri-tests --bin cri-smoke
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
smoke=$(cd "$(dirname "$smoke")" && pwd)/$(basename "$smoke")

# Short: the socket path must stay under 104 bytes on macOS.
work=$(mktemp -d /tmp/dcsmoke.XXXXXX)
server=
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
root=$work/root
sock=$work/cri.sock
flags=(--root "$root" --state-dir "$work/run" --socket "$sock")

echo "== host"
uname -a
if [ "$os" = Darwin ]; then
  sw_vers || true
  csrutil status 2>/dev/null || true
fi
"$bin" --version

echo "== doctor"
doctor=0
"$bin" "${flags[@]}" doctor || doctor=$?
echo "doctor exit status: $doctor"

echo "== image from this host's files"
rootfs=$work/rootfs
mkdir -p "$rootfs"
copy() { # copy PATH into the root at the same place, following links to the file itself
  local path=$1
  mkdir -p "$rootfs$(dirname "$path")"
  cp -pL "$path" "$rootfs$path"
}
programs=(/bin/sh /bin/sleep /bin/cat)
if [ "$os" = Darwin ]; then
  arch=$(uname -m); [ "$arch" = x86_64 ] && arch=amd64
  osname=darwin
  osversion=$(sw_vers -productVersion)
  for p in "${programs[@]}"; do
    copy "$p"
    # Libraries outside the shared cache are on disk; the rest come with the cache below.
    otool -L "$p" | awk 'NR > 1 { print $1 }' | while read -r lib; do
      if [ -f "$lib" ]; then copy "$lib"; fi
    done
  done
  copy /usr/lib/dyld
  for cache in /System/Volumes/Preboot/Cryptexes/OS/System/Library/dyld /System/Library/dyld; do
    if [ -d "$cache" ]; then
      mkdir -p "$rootfs$cache"
      cp -pR "$cache/." "$rootfs$cache/"
    fi
  done
  copy /System/Library/CoreServices/SystemVersion.plist
else
  case $(uname -m) in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; *) arch=$(uname -m) ;; esac
  osname=linux
  osversion=
  for p in "${programs[@]}"; do
    copy "$p"
    # ldd prints each library as "name => /path (addr)" and the interpreter as "/path (addr)".
    ldd "$p" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }' | while read -r lib; do
      copy "$lib"
    done
  done
fi
mkdir -p "$rootfs/tmp" "$rootfs/etc"
chmod 1777 "$rootfs/tmp"
# The image's USER is a build user: darwin-cri refuses root unless the operator allows it.
printf 'root:x:0:0:root:/var/root:/bin/sh\nbuild:x:501:20:build:/Users/build:/bin/sh\n' \
  > "$rootfs/etc/passwd"
printf 'wheel:x:0:root\nstaff:x:20:build\n' > "$rootfs/etc/group"

sha() { if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi; }
size() { wc -c < "$1" | tr -d ' '; }
layout=$work/layout
mkdir -p "$layout/blobs/sha256"
tar -C "$rootfs" --numeric-owner -cf "$work/layer.tar" .
layer=$(sha "$work/layer.tar")
mv "$work/layer.tar" "$layout/blobs/sha256/$layer"
cat > "$work/config.json" <<JSON
{"architecture":"$arch","os":"$osname","os.version":"$osversion",
 "config":{"User":"build","Env":["PATH=/usr/bin:/bin"],"Cmd":["/bin/sh"]},
 "rootfs":{"type":"layers","diff_ids":["sha256:$layer"]}}
JSON
config=$(sha "$work/config.json")
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config","size":$(size "$work/config.json")},
 "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:$layer","size":$(size "$layout/blobs/sha256/$layer")}]}
JSON
manifest=$(sha "$work/manifest.json")
mv "$work/config.json" "$layout/blobs/sha256/$config"
mv "$work/manifest.json" "$layout/blobs/sha256/$manifest"
cat > "$layout/index.json" <<JSON
{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json",
 "digest":"sha256:$manifest","size":$(size "$layout/blobs/sha256/$manifest"),
 "platform":{"architecture":"$arch","os":"$osname"}}]}
JSON
printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
echo "layer: $(du -sh "$rootfs" | cut -f1) unpacked, $(find "$rootfs" -type f | wc -l | tr -d ' ') files, $osname/$arch ${osversion}"
"$bin" "${flags[@]}" image import "$layout" --name localhost/smoke:1

echo "== server"
"$bin" "${flags[@]}" serve > "$work/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "the server did not start:"; cat "$work/server.log"; exit 1; }

echo "== CRI"
status=0
"$smoke" --socket "$sock" --image localhost/smoke:1 --logs "$work/logs" || status=$?
if [ $status -ne 0 ]; then
  echo "== server log"
  tail -n 40 "$work/server.log"
fi
echo "== verdict: $([ $status -eq 0 ] && echo 'every CRI step passed' || echo 'FAILED') (doctor: $doctor)"
exit $status
