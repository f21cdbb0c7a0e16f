#!/usr/bin/env bash
# shellcheck disable=SC2317 # the cleanup functions run from the EXIT trap
# Runs the CRI validation suite, critest (sigs.k8s.io/cri-tools, v1.36.0), against darwin-cri's
# Linux twin, as root. Every image critest pulls (gcr.io/k8s-staging-cri-tools/...,
# registry.k8s.io/e2e-test-images/..., registry.k8s.io/pause, k8s.gcr.io/pause) is built here from
# the host's static busybox with `darwin-cri image build`, pushed to Debian's docker-registry on a
# free loopback port, and reached through darwin-cri's mirrors for those registries, so the
# references critest checks (repo tags, image status by name) are the upstream ones.
#
#   scripts/critest.sh                      # the whole suite
#   scripts/critest.sh -ginkgo.focus=Image  # arguments go to critest
#
# critest is built once from the Go module proxy into target/go/bin (Go caches under target/go).
# The server runs on its own socket, root and state dir in a temporary directory; at the end the
# server and the registry are stopped, any process and mount left below that directory is killed
# or undone, and the directory is removed. critest's log, its JUnit report (junit.xml) and the
# server's log stay in target/critest/.
#
# Skipped: "public image with digest" needs the upstream image's own manifest bytes (the spec
# names a fixed sha256), which no image built here can have. CRITEST_SKIP adds a regexp of specs
# to skip. DARWIN_CRI_NO_BUILD=1 uses target/debug/darwin-cri as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

version=v1.36.0
export GOMODCACHE="$repo/target/go/mod" GOCACHE="$repo/target/go/build"
export GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0
critest="$repo/target/go/bin/critest-$version"
out="$repo/target/critest"
# Builds wait for each other (and for any other build on this machine) and run at low priority.
build() { nice -n 19 flock /tmp/darwin-cri-build.lock "$@"; }

for tool in docker-registry busybox cc jq curl; do
  command -v "$tool" >/dev/null || {
    echo "critest.sh: $tool is missing (scripts/setup.sh --tests installs it)" >&2
    exit 1
  }
done

# critest is a Ginkgo test binary: upstream's Makefile builds it with `go test -c ./cmd/critest`.
# The module is built where `go mod download` put it, with its own go.mod and go.sum.
if [ ! -x "$critest" ]; then
  src=$(cd / && go mod download -json "sigs.k8s.io/cri-tools@$version" | jq -r .Dir)
  mkdir -p "$(dirname "$critest")"
  (cd "$src" && build go test -c -trimpath -o "$critest.tmp" \
    -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${version#v}" ./cmd/critest)
  mv "$critest.tmp" "$critest"
fi

if [ "${DARWIN_CRI_NO_BUILD:-}" != 1 ]; then
  build cargo build --locked --bin darwin-cri --bin darwin-cri-monitor
fi
work=$(mktemp -d /tmp/darwin-cri-critest.XXXXXX)
registry_pid=
server_pid=

# Pids of live processes whose root directory or command line points below $work (as the
# tests' harness finds them, tests/src/host.rs).
processes_under() {
  local p root
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    root=$(readlink "$p/root" 2>/dev/null) || continue
    if [[ $root == "$work"* ]] || tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF "$work"; then
      echo "${p#/proc/}"
    fi
  done
}

mounts_under() {
  awk -v d="$work" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
    awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2-
}

stop() {
  local pid=$1 _
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# Containers share the host's UTS namespace: critest's privileged and SYS_ADMIN specs run
# `hostname ANewHostName` in one, which renames this machine. Put back what was there.
host_name=$(hostname)
cleanup() {
  local status=$? pids m
  trap - EXIT INT TERM
  if [ "$(hostname)" != "$host_name" ]; then
    echo "critest.sh: a container renamed the host to $(hostname); restoring $host_name" >&2
    hostname "$host_name"
  fi
  stop "$server_pid"
  stop "$registry_pid"
  [ -f "$work/server.log" ] && cp "$work/server.log" "$out/server.log"
  # Whatever the suite left: container processes and monitors, then mounts (deepest first).
  pids=$(processes_under)
  if [ -n "$pids" ]; then
    echo "critest.sh: killing processes left below $work: $(tr '\n' ' ' <<<"$pids")" >&2
    # shellcheck disable=SC2086 # one pid a word
    kill -KILL $pids 2>/dev/null || true
    sleep 0.5
  fi
  for m in $(mounts_under); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The binaries this run uses, linked (or copied) into $work: a cargo build during the run must not
# swap the monitor under the server (it starts darwin-cri-monitor from its own directory).
mkdir -p "$work/bin"
for bin in darwin-cri darwin-cri-monitor; do
  ln -f "$repo/target/debug/$bin" "$work/bin/$bin" 2>/dev/null ||
    cp "$repo/target/debug/$bin" "$work/bin/$bin"
done
dcri="$work/bin/darwin-cri"

free_port() {
  local p
  for p in $(shuf -i 20000-40000 -n 50); do
    if [ -z "$(ss -Hltn "sport = :$p")" ]; then
      echo "$p"
      return
    fi
  done
  echo "critest.sh: no free port" >&2
  return 1
}

wait_for() { # what, command...
  local what=$1 _
  shift
  for _ in $(seq 200); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "critest.sh: $what did not come up" >&2
  return 1
}

# --- The registry -----------------------------------------------------------------------------
port=$(free_port)
reg="127.0.0.1:$port"
cat >"$work/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry
  delete:
    enabled: true
http:
  addr: $reg
EOF
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 </dev/null &
registry_pid=$!
wait_for "docker-registry on $reg" curl -sf "http://$reg/v2/"

# --- The images, built in a store of their own and pushed -------------------------------------
builder=(--config "$work/builder.toml" --root "$work/builder/root" --state-dir "$work/builder/run"
  --socket "$work/builder/run/cri.sock")
# The nonewprivs image keeps its setuid bit (image.keep_setuid) here and in the server.
keep_setuid='["registry.k8s.io/e2e-test-images/nonewprivs", "'"$reg"'/e2e-test-images/nonewprivs"]'
cat >"$work/builder.toml" <<EOF
[image]
keep_setuid = $keep_setuid
[image.registries."$reg"]
insecure = true
EOF
ctx="$work/context"
# Upstream's busybox has pgrep, ipcs and ipcrm, Debian's busybox-static not: the host's own, with
# what they load, come from `image base` (a merged-/usr layout: /bin is a link to usr/bin).
"$dcri" "${builder[@]}" image base "$reg/host-tools:1" --program pgrep --program ipcs \
  --program ipcrm >>"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/usr/sbin" "$ctx/rootfs/etc" "$ctx/rootfs/tmp" \
  "$ctx/rootfs/root" "$ctx/rootfs/usr/share/nginx/html"
cp "$(command -v busybox)" "$ctx/rootfs/usr/bin/busybox"
# Applets are hard links, as in upstream's image: masking /bin/ls must not mask the shell.
for applet in $("$ctx/rootfs/usr/bin/busybox" --list-full); do
  applet=usr/${applet#usr/}
  [ -e "$ctx/rootfs/$applet" ] || ln "$ctx/rootfs/usr/bin/busybox" "$ctx/rootfs/$applet"
done
chmod 1777 "$ctx/rootfs/tmp"
# The users and groups of upstream's busybox (www-data is uid 33) plus those of
# images/image-predefined-group (default-user 1000 in group-defined-in-image 50000).
cat >"$ctx/rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh
nobody:x:65534:65534:nobody:/home:/bin/false
EOF
cat >"$ctx/rootfs/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
www-data:x:33:
users:x:100:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
EOF
echo '<html><body>Welcome to nginx!</body></html>' >"$ctx/rootfs/usr/share/nginx/html/index.html"
# Named entries, not ".": `image build` refuses an archive holding a "./" entry.
(cd "$ctx/rootfs" && tar --numeric-owner --owner=0 --group=0 -cf "$ctx/rootfs.tar" -- *)

# image NAME... : builds $ctx/Containerfile (written by the caller) under every NAME and pushes
# each name to the registry.
image() {
  local n names=()
  for n in "$@"; do names+=(-t "$reg/$n"); done
  "$dcri" "${builder[@]}" image build "${names[@]}" "$ctx" >>"$work/build.log" 2>&1 ||
    { cat "$work/build.log" >&2; return 1; }
  for n in "$@"; do
    # DEST given: without it push names the image's first tag, whichever name SOURCE is.
    "$dcri" "${builder[@]}" image push "$reg/$n" "$reg/$n" >>"$work/build.log" 2>&1 ||
      { cat "$work/build.log" >&2; return 1; }
  done
}
base="$reg/e2e-test-images/busybox:1.29-2"
containerfile() { printf '%s\n' "$@" >"$ctx/Containerfile"; }

echo "critest.sh: building the test images into $reg" >&2
containerfile "FROM $reg/host-tools:1" 'ADD rootfs.tar /' 'USER root' 'WORKDIR /' \
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root' 'CMD ["sh"]'
image e2e-test-images/busybox:1.29-2
containerfile "FROM $base" 'CMD ["sleep", "2147483647"]'
image pause:3.9
# The web servers: busybox httpd on nginx's port 80, and on 12003 for the host-network image.
containerfile "FROM $base" 'EXPOSE 80' \
  'CMD ["httpd", "-f", "-v", "-p", "80", "-h", "/usr/share/nginx/html"]'
image e2e-test-images/nginx:1.14-2
# e2e-test-images/httpd: the multi-container specs look for "httpd" in its log.
containerfile "FROM $base" 'EXPOSE 80' \
  'CMD ["sh", "-c", "echo httpd: serving on port 80 >&2; exec httpd -f -v -p 80 -h /usr/share/nginx/html"]'
image e2e-test-images/httpd:2.4.39-4
# e2e-test-images/nonewprivs: a setuid-root program printing its effective uid, as upstream's nnp.
mkdir -p "$ctx/nnp"
printf '%s\n' '#include <stdio.h>' '#include <unistd.h>' \
  'int main(void) { printf("Effective uid: %d\n", geteuid()); return 0; }' >"$ctx/nnp/nnp.c"
cc -static -Os -o "$ctx/nnp/nnp" "$ctx/nnp/nnp.c"
chmod 4755 "$ctx/nnp/nnp"
(cd "$ctx/nnp" && tar --numeric-owner --owner=0 --group=0 -cf ../nnp.tar nnp)
containerfile "FROM $base" 'ADD nnp.tar /usr/local/bin/' 'ENTRYPOINT ["/usr/local/bin/nnp"]'
image e2e-test-images/nonewprivs:1.3
containerfile "FROM $base" 'EXPOSE 12003' \
  'CMD ["httpd", "-f", "-v", "-p", "12003", "-h", "/usr/share/nginx/html"]'
image "k8s-staging-cri-tools/hostnet-nginx-$(go env GOARCH)"
# images/image-user with upstream's USER arguments, images/image-predefined-group.
for spec in test-image-user-uid=1002 test-image-user-username=www-data \
  test-image-user-uid-group=1003:1004 test-image-user-username-group=www-data:1004 \
  test-image-predefined-group=1000; do
  containerfile "FROM $base" "USER ${spec#*=}"
  image "k8s-staging-cri-tools/${spec%%=*}"
done
# images/image-test: busybox plus one empty file named by the build argument TEST.
for spec in test-image-1:latest=test-image-1 test-image-2:latest=test-image-2 \
  test-image-3:latest=test-image-3 test-image-latest:latest=test-image-latest \
  test-image-tag:test=test test-image-tag:all=all; do
  : >"$ctx/${spec#*=}"
  containerfile "FROM $base" "ADD ${spec#*=} /${spec#*=}"
  image "k8s-staging-cri-tools/${spec%%=*}"
done
: >"$ctx/same-image"
containerfile "FROM $base" 'ADD same-image /same-image'
image k8s-staging-cri-tools/test-image-tags:1 k8s-staging-cri-tools/test-image-tags:2 \
  k8s-staging-cri-tools/test-image-tags:3

# --- The server -------------------------------------------------------------------------------
# Its own socket, root and state dir; root allowed (critest's busybox runs as root); the
# registries critest names mirrored by the local one.
sock="$work/run/cri.sock"
{
  echo "socket = \"$sock\""
  echo "root = \"$work/root\""
  echo "state_dir = \"$work/run\""
  echo "[runtime]"
  echo "allow_root = true"
  echo "[image]"
  echo "keep_setuid = $keep_setuid"
  for r in gcr.io registry.k8s.io k8s.gcr.io; do
    echo "[image.registries.\"$r\"]"
    echo "mirrors = [\"http://$reg\"]"
  done
} >"$work/server.toml"
mkdir -p "$out"
rm -f "$out"/*
"$dcri" --config "$work/server.toml" --socket "$sock" --root "$work/root" --state-dir "$work/run" \
  serve >"$work/server.log" 2>&1 </dev/null &
server_pid=$!
wait_for "darwin-cri on $sock" test -S "$sock"

# --- critest ----------------------------------------------------------------------------------
skip='public image with digest should be pulled and removed'
[ -n "${CRITEST_SKIP:-}" ] && skip="$skip|$CRITEST_SKIP"
echo "critest.sh: critest $version against $sock (log: $out/critest.log)" >&2
start=$(date +%s)
set +e
# TMPDIR: the host paths critest makes (log dirs, volumes, the propagation specs' mounts) are
# under $work, so that the cleanup finds whatever a failed spec leaves.
mkdir -p "$work/tmp"
(cd "$work" && TMPDIR="$work/tmp" "$critest" -runtime-endpoint "unix://$sock" -image-endpoint "unix://$sock" \
  -ginkgo.junit-report "$out/junit.xml" -ginkgo.no-color -ginkgo.skip "$skip" "$@") 2>&1 | tee "$out/critest.log"
status=${PIPESTATUS[0]}
set -e
echo "critest.sh: critest exited with $status after $(($(date +%s) - start)) s" >&2

# One line per failed spec: its name and the first line of its failure message.
if [ -f "$out/junit.xml" ]; then
  python3 - "$out/junit.xml" <<'EOF' || true
import sys, xml.etree.ElementTree as ET
cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
counts = {"passed": 0, "failed": 0, "skipped": 0}
failed = []
for c in cases:
    name, status = c.get("name", ""), c.get("status", "")
    if not name.startswith("[It]") and status == "passed":
        continue  # [BeforeSuite] and the like, counted only when they fail
    if status in ("failed", "panicked", "interrupted", "timedout", "aborted"):
        counts["failed"] += 1
        f = c.find("failure")
        if f is None:
            f = c.find("error")
        msg = ((f.get("message") or f.text or "") if f is not None else status).strip().splitlines()
        failed.append((name, msg[0] if msg else status))
    elif status == "skipped":
        counts["skipped"] += 1
    else:
        counts["passed"] += 1
print("critest: %(passed)d passed, %(failed)d failed, %(skipped)d skipped" % counts)
for name, msg in failed:
    print("FAIL %s: %s" % (name, msg[:300]))
EOF
fi
exit "$status"
