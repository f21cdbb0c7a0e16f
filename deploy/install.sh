#!/usr/bin/env bash
# Install or remove darwin-cri, and this project's kubelet beside it, as launchd daemons on macOS.
#
#   sudo deploy/install.sh [install] [options]
#   sudo deploy/install.sh install --join-server https://HOST:6443 --join-token ID.SECRET --join-ca ca.crt
#   sudo deploy/install.sh uninstall [--purge] [options]
#
# Run with --help for the options. Every change is printed as "+ command ...", and --dry-run
# prints them without making any (it works on any OS, as any user). Running install again is
# safe: it replaces the binaries, the plists and the newsyslog entry, never an existing config,
# and restarts the daemons.
set -euo pipefail

readonly LABEL="io.darwin-cri"
readonly KUBELET_LABEL="io.darwin-cri.kubelet"
# The kubelet scripts/build-kubelet.sh builds by default.
readonly KUBE_VERSION="v1.37.2"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR

usage() {
    cat <<'EOF'
Usage: install.sh [install|uninstall] [options]

Commands:
  install              (default) install the binary, config, launchd plist and newsyslog
                       entry, then (re)start the daemon and run `darwin-cri doctor`; and the
                       kubelet: its binary, /var/lib/kubelet/config.yaml and its launchd plist,
                       started once it has credentials (a kubeconfig, or --join-*)
  uninstall            stop the daemons; remove the binaries, plists and newsyslog entry;
                       keep the configs, /var/lib/darwin-cri and /var/lib/kubelet unless --purge

Options:
  --dry-run            print every action as "+ command ...", change nothing
  --prefix DIR         prepend DIR to every installed path (packaging, tests); implies
                       --no-launchctl and needs no root
  --binary PATH        the darwin-cri binary to install (default: ./target/release/darwin-cri,
                       then the repository's target/release/darwin-cri, then darwin-cri on PATH);
                       darwin-cri-monitor, the per-container monitor, is taken from beside it
  --no-launchctl       do not touch launchd and do not run doctor (implied when not on macOS)
  --kubelet-config PATH
                       passed to `darwin-cri doctor --kubelet-config PATH` (default, when the
                       kubelet is installed: /var/lib/kubelet/config.yaml)
  --kubelet PATH       this project's kubelet binary to install as /usr/local/bin/kubelet
                       (default: target/kubelet/KUBE_VERSION/darwin-ARCH/kubelet of ./ or of the
                       repository, built by scripts/build-kubelet.sh; none there: no kubelet)
  --no-kubelet         leave the kubelet alone (install and uninstall darwin-cri only)
  --node-name NAME     the node's name (kubelet --hostname-override; default: the Mac's
                       LocalHostName, in lower case)
  --node-ip IP         kubelet --node-ip (default: kubelet's choice, the default route's address)
  --join-server URL    with --join-token and --join-ca: join a cluster by TLS bootstrapping;
  --join-token TOKEN   writes /etc/kubernetes/bootstrap-kubelet.conf (mode 0600: the API server
  --join-ca PATH       URL, the CA and the bootstrap token ID.SECRET) and the CA as
                       /etc/kubernetes/pki/ca.crt (kubelet's clientCAFile); kubelet then asks
                       for its client certificate and writes /etc/kubernetes/kubelet.conf
  --purge              with uninstall: also remove the config, /var/lib/darwin-cri (images,
                       pods, state) and /var/log/darwin-cri; and /var/lib/kubelet and the
                       kubeconfigs and CA in /etc/kubernetes (the node must join again)
  -h, --help           this text

KUBE_VERSION is v1.37.2; ARCH is arm64 or amd64, this machine's.
EOF
}

die() {
    printf 'install.sh: %s\n' "$*" >&2
    exit 1
}

note() {
    printf '%s\n' "$*"
}

# run CMD ARGS...: print the command, quoted so it can be pasted, and run it unless --dry-run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [[ "$DRY_RUN" == 0 ]]; then
        "$@"
    fi
}

# ---- arguments ----------------------------------------------------------------------------------

# set_option NAME VALUE: an option that takes a value.
set_option() {
    case "$1" in
        --prefix) PREFIX="$2" ;;
        --binary) BINARY="$2" ;;
        --kubelet-config) KUBELET_CONFIG="$2" ;;
        --kubelet) KUBELET="$2" ;;
        --node-name) NODE_NAME="$2" ;;
        --node-ip) NODE_IP="$2" ;;
        --join-server) JOIN_SERVER="$2" ;;
        --join-token) JOIN_TOKEN="$2" ;;
        --join-ca) JOIN_CA="$2" ;;
    esac
}

COMMAND=""
DRY_RUN=0
PREFIX=""
BINARY=""
NO_LAUNCHCTL=0
KUBELET_CONFIG=""
PURGE=0
KUBELET=""
NO_KUBELET=0
NODE_NAME=""
NODE_IP=""
JOIN_SERVER=""
JOIN_TOKEN=""
JOIN_CA=""

while (($# > 0)); do
    case "$1" in
        install | uninstall)
            [[ -z "$COMMAND" ]] || die "one command only (got '$COMMAND' and '$1')"
            COMMAND="$1"
            ;;
        --dry-run) DRY_RUN=1 ;;
        --no-launchctl) NO_LAUNCHCTL=1 ;;
        --purge) PURGE=1 ;;
        --no-kubelet) NO_KUBELET=1 ;;
        --prefix | --binary | --kubelet-config | --kubelet | --node-name | --node-ip | \
            --join-server | --join-token | --join-ca)
            (($# >= 2)) || die "$1 needs a value"
            [[ -n "$2" ]] || die "$1 needs a non-empty value"
            set_option "$1" "$2"
            shift
            ;;
        --prefix=* | --binary=* | --kubelet-config=* | --kubelet=* | --node-name=* | --node-ip=* | \
            --join-server=* | --join-token=* | --join-ca=*)
            value="${1#*=}"
            [[ -n "$value" ]] || die "${1%%=*} needs a non-empty value"
            set_option "${1%%=*}" "$value"
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            usage >&2
            die "unknown argument: $1"
            ;;
    esac
    shift
done
COMMAND="${COMMAND:-install}"

if [[ "$PURGE" == 1 && "$COMMAND" != uninstall ]]; then
    die "--purge only goes with uninstall"
fi
if [[ -n "$KUBELET_CONFIG" && "$COMMAND" != install ]]; then
    die "--kubelet-config only goes with install"
fi
JOIN=0
if [[ -n "$JOIN_SERVER$JOIN_TOKEN$JOIN_CA" ]]; then
    [[ -n "$JOIN_SERVER" && -n "$JOIN_TOKEN" && -n "$JOIN_CA" ]] ||
        die "--join-server, --join-token and --join-ca go together"
    JOIN=1
fi
if [[ "$COMMAND" != install ]]; then
    for option in "$KUBELET:--kubelet" "$NODE_NAME:--node-name" "$NODE_IP:--node-ip" \
        "$JOIN_SERVER:--join-server"; do
        [[ "$option" == :* ]] || die "${option##*:} only goes with install"
    done
fi
if [[ "$NO_KUBELET" == 1 && -n "$KUBELET$NODE_NAME$NODE_IP$JOIN_SERVER" ]]; then
    die "--no-kubelet goes with none of --kubelet, --node-name, --node-ip, --join-*"
fi
if [[ "$JOIN" == 1 ]]; then
    # A URL that goes into a YAML file unquoted: scheme, host (a name, IPv4 or [IPv6]), port, path.
    [[ "$JOIN_SERVER" =~ ^https://[A-Za-z0-9.:-]+(:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$ ||
        "$JOIN_SERVER" =~ ^https://\[[0-9A-Fa-f:.]+\](:[0-9]+)?(/[A-Za-z0-9._~/-]*)?$ ]] ||
        die "--join-server wants the API server's https URL (https://HOST:6443), not '$JOIN_SERVER'"
    # A bootstrap token is "<id>.<secret>", [a-z0-9]{6}.[a-z0-9]{16} (kubeadm token create).
    [[ "$JOIN_TOKEN" =~ ^[a-z0-9]{6}\.[a-z0-9]{16}$ ]] ||
        die "--join-token wants a bootstrap token, [a-z0-9]{6}.[a-z0-9]{16} as kubeadm token create prints"
    [[ -f "$JOIN_CA" && -r "$JOIN_CA" ]] || die "--join-ca: no readable file $JOIN_CA"
    grep -q -- '-----BEGIN CERTIFICATE-----' "$JOIN_CA" ||
        die "--join-ca: $JOIN_CA holds no PEM certificate (the cluster CA: /etc/kubernetes/pki/ca.crt on a kubeadm control plane)"
fi
if [[ -n "$NODE_IP" && ! "$NODE_IP" =~ ^[0-9A-Fa-f.:,]+$ ]]; then
    die "--node-ip wants an IP address (or two, comma-separated), not '$NODE_IP'"
fi

if [[ -n "$PREFIX" ]]; then
    case "$PREFIX" in
        /*) ;;
        *) PREFIX="$PWD/$PREFIX" ;;
    esac
    # "/" and "/x/" are the same root as "" and "/x".
    while [[ "$PREFIX" == */ ]]; do PREFIX="${PREFIX%/}"; done
fi

OS="$(uname -s)"
readonly OS
if [[ "$OS" != Darwin ]]; then
    NO_LAUNCHCTL=1
    LAUNCHCTL_SKIPPED="not macOS: $OS"
elif [[ -n "$PREFIX" ]]; then
    NO_LAUNCHCTL=1
    LAUNCHCTL_SKIPPED="--prefix given"
else
    LAUNCHCTL_SKIPPED="--no-launchctl"
fi

if [[ "$DRY_RUN" == 0 && -z "$PREFIX" && "$EUID" -ne 0 ]]; then
    die "a real install or uninstall needs root: run it with sudo (or use --dry-run, or --prefix DIR)"
fi

# Files and directories are owned by root:wheel (uid 0, gid 0 on macOS; root:root on Linux) when
# we can make them so; installing into a --prefix as a normal user leaves them to that user.
# (Expanded as ${OWNER_ARGS[@]+...} below: macOS's bash 3.2 calls an empty array unbound.)
OWNER_ARGS=()
if [[ "$EUID" -eq 0 ]]; then
    OWNER_ARGS=(-o 0 -g 0)
fi

# ---- paths --------------------------------------------------------------------------------------

# The paths as the running system sees them (what the plist and config refer to) ...
readonly SYS_BIN="/usr/local/bin/darwin-cri"
# The per-container monitor: the server starts it from its own directory.
readonly SYS_MONITOR="/usr/local/bin/darwin-cri-monitor"
readonly SYS_CONF_DIR="/usr/local/etc/darwin-cri"
readonly SYS_CONF="$SYS_CONF_DIR/config.toml"
readonly SYS_PLIST="/Library/LaunchDaemons/$LABEL.plist"
# ... and where they are written: the same under --prefix.
readonly BIN="$PREFIX$SYS_BIN"
readonly MONITOR="$PREFIX$SYS_MONITOR"
readonly CONF_DIR="$PREFIX$SYS_CONF_DIR"
readonly CONF="$PREFIX$SYS_CONF"
readonly PLIST="$PREFIX$SYS_PLIST"
readonly NEWSYSLOG="$PREFIX/etc/newsyslog.d/darwin-cri.conf"
readonly LOG_DIR="$PREFIX/var/log/darwin-cri"
readonly ROOT_DIR="$PREFIX/var/lib/darwin-cri"

readonly SRC_CONF="$SCRIPT_DIR/darwin-cri.toml"
readonly SRC_PLIST="$SCRIPT_DIR/$LABEL.plist"
readonly SRC_NEWSYSLOG="$SCRIPT_DIR/newsyslog.d/darwin-cri.conf"

# The kubelet: the paths its plist and config.yaml name (deploy/kubelet-config.yaml's comments).
readonly SYS_KUBELET="/usr/local/bin/kubelet"
readonly SYS_KUBELET_PLIST="/Library/LaunchDaemons/$KUBELET_LABEL.plist"
readonly SYS_KUBELET_ROOT="/var/lib/kubelet"
readonly SYS_KUBELET_CONF="$SYS_KUBELET_ROOT/config.yaml"
readonly SYS_KUBE_DIR="/etc/kubernetes"
readonly KUBELET_BIN="$PREFIX$SYS_KUBELET"
readonly KUBELET_PLIST="$PREFIX$SYS_KUBELET_PLIST"
readonly KUBELET_ROOT="$PREFIX$SYS_KUBELET_ROOT"
readonly KUBELET_CONF="$PREFIX$SYS_KUBELET_CONF"
readonly KUBE_DIR="$PREFIX$SYS_KUBE_DIR"
# Written by install.sh from --join-*: the bootstrap kubeconfig and the cluster's CA ...
readonly BOOTSTRAP_CONF="$KUBE_DIR/bootstrap-kubelet.conf"
readonly KUBE_PKI="$KUBE_DIR/pki"
readonly KUBE_CA="$KUBE_PKI/ca.crt"
# ... and by kubelet, once the control plane signed its certificate.
readonly KUBECONFIG_FILE="$KUBE_DIR/kubelet.conf"

readonly SRC_KUBELET_PLIST="$SCRIPT_DIR/$KUBELET_LABEL.plist"
readonly SRC_KUBELET_CONF="$SCRIPT_DIR/kubelet-config.yaml"

# Files install.sh writes rather than copies (the kubelet's plist with this node's arguments,
# the bootstrap kubeconfig) are made here first, private to root, and installed from here.
STAGE=""
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup_stage() {
    if [[ -n "$STAGE" ]]; then
        rm -rf "$STAGE"
    fi
}
trap cleanup_stage EXIT
stage_dir() {
    if [[ -z "$STAGE" ]]; then
        STAGE="$(mktemp -d "${TMPDIR:-/tmp}/darwin-cri-install.XXXXXX")"
        chmod 700 "$STAGE"
    fi
}

# ---- helpers ------------------------------------------------------------------------------------

# Directories made by this run, one a line: a dry run makes none, and must not show them twice.
MADE_DIRS=""

# make_dir MODE DIR: create DIR (or set the mode of the one there) with MODE, root:wheel as root.
make_dir() {
    run install -d -m "$1" ${OWNER_ARGS[@]+"${OWNER_ARGS[@]}"} "$2"
    MADE_DIRS+="$2"$'\n'
}

# dir_there DIR: DIR exists, or this run made it.
dir_there() {
    [[ -d "$1" ]] || [[ $'\n'"$MADE_DIRS" == *$'\n'"$1"$'\n'* ]]
}

# install_file MODE SRC DST: copy SRC to DST with MODE (and root:wheel as root), replacing DST.
install_file() {
    local mode="$1" src="$2" dst="$3"
    if [[ -e "$dst" && "$src" -ef "$dst" ]]; then
        note "# $dst is already the file being installed"
        return 0
    fi
    # Create a missing parent, but never re-mode or re-own one that exists: /usr/local/bin may
    # belong to Homebrew's user, /etc/newsyslog.d and /Library/LaunchDaemons to the system.
    local parent
    parent="$(dirname "$dst")"
    if ! dir_there "$parent"; then
        make_dir 755 "$parent"
    fi
    run install -m "$mode" ${OWNER_ARGS[@]+"${OWNER_ARGS[@]}"} "$src" "$dst"
}

# remove_file PATH: remove PATH if it is there.
remove_file() {
    if [[ -e "$1" || -L "$1" ]]; then
        run rm -f "$1"
    else
        note "# already absent: $1"
    fi
}

# done_note MESSAGE: the last line, unless this was a dry run.
done_note() {
    if [[ "$DRY_RUN" == 1 ]]; then
        note "# dry run: nothing was changed"
    else
        note "$1"
    fi
}

# service_loaded [LABEL]: whether launchd has the daemon (darwin-cri's unless LABEL is given).
service_loaded() {
    launchctl print "system/${1:-$LABEL}" >/dev/null 2>&1
}

# stop_service [LABEL]: bootout the daemon if launchd has it, and wait until it is gone
# (bootstrap right after a bootout that has not finished fails with "Input/output error").
stop_service() {
    local label="${1:-$LABEL}"
    if ! service_loaded "$label"; then
        note "# $label is not loaded"
        return 0
    fi
    run launchctl bootout "system/$label"
    if [[ "$DRY_RUN" == 1 ]]; then
        return 0
    fi
    local i
    for ((i = 0; i < 60; i++)); do
        service_loaded "$label" || return 0
        sleep 0.5
    done
    die "launchd still has system/$label 30 s after bootout; see: launchctl print system/$label"
}

# find_binary: the --binary given, else the default candidates.
find_binary() {
    if [[ -n "$BINARY" ]]; then
        printf '%s\n' "$BINARY"
        return 0
    fi
    local candidate
    for candidate in "$PWD/target/release/darwin-cri" "$SCRIPT_DIR/../target/release/darwin-cri"; do
        if [[ -f "$candidate" && -x "$candidate" ]]; then
            (cd "$(dirname "$candidate")" && printf '%s/darwin-cri\n' "$(pwd -P)")
            return 0
        fi
    done
    if candidate="$(command -v darwin-cri)"; then
        printf '%s\n' "$candidate"
        return 0
    fi
    return 1
}

# host_arch: this machine's architecture as Go names it (arm64, amd64).
host_arch() {
    case "$(uname -m)" in
        arm64 | aarch64) printf 'arm64\n' ;;
        x86_64 | amd64) printf 'amd64\n' ;;
        *) uname -m ;;
    esac
}

# find_kubelet: the --kubelet given, else scripts/build-kubelet.sh's output for this machine.
find_kubelet() {
    if [[ -n "$KUBELET" ]]; then
        printf '%s\n' "$KUBELET"
        return 0
    fi
    local candidate rel
    rel="target/kubelet/$KUBE_VERSION/darwin-$(host_arch)/kubelet"
    for candidate in "$PWD/$rel" "$SCRIPT_DIR/../$rel"; do
        if [[ -f "$candidate" && -x "$candidate" ]]; then
            (cd "$(dirname "$candidate")" && printf '%s/kubelet\n' "$(pwd -P)")
            return 0
        fi
    done
    return 1
}

# default_node_name: the Mac's LocalHostName (stable, unlike the DHCP-given host name), else
# the short host name; in lower case, as node names are.
default_node_name() {
    local name=""
    if [[ "$OS" == Darwin ]] && command -v scutil >/dev/null 2>&1; then
        name="$(scutil --get LocalHostName 2>/dev/null || true)"
    fi
    if [[ -z "$name" ]]; then
        name="$(hostname -s 2>/dev/null || hostname)"
    fi
    printf '%s\n' "$name" | tr '[:upper:]' '[:lower:]'
}

# mounts_under DIR: print the mount points at or below DIR (resolved), one a line.
mounts_under() {
    local dir="$1" resolved mnt
    resolved="$(cd "$dir" 2>/dev/null && pwd -P)" || return 0
    if [[ -r /proc/self/mounts ]]; then
        # Linux: the second field, with spaces and the like as octal escapes.
        while read -r _ mnt _; do
            mnt="$(printf '%b' "${mnt//\\/\\0}")"
            if [[ "$mnt" == "$resolved" || "$mnt" == "$resolved"/* ]]; then
                printf '%s\n' "$mnt"
            fi
        done </proc/self/mounts
    else
        # macOS: "<device> on <mount point> (<type>, <options>)". The device of a bindfs mount is
        # its source path, which may itself contain " on ": anchor on " on <dir>" instead.
        local line rest
        while IFS= read -r line; do
            case "$line" in
                *" on $resolved ("* | *" on $resolved/"*)
                    rest="${line#*" on $resolved"}"
                    printf '%s\n' "$resolved${rest% (*}"
                    ;;
            esac
        done < <(mount)
    fi
}

# ---- install ------------------------------------------------------------------------------------

# Set by prepare_kubelet: whether the kubelet is installed, and from where.
WITH_KUBELET=0
SRC_KUBELET=""

# prepare_kubelet: find the kubelet, check what it needs, and write the files install.sh makes
# for it into the stage. Changes nothing installed.
prepare_kubelet() {
    if [[ "$NO_KUBELET" == 1 ]]; then
        note "# --no-kubelet: the kubelet is left alone"
        return 0
    fi
    if ! SRC_KUBELET="$(find_kubelet)"; then
        local built
        built="target/kubelet/$KUBE_VERSION/darwin-$(host_arch)/kubelet"
        if [[ "$JOIN" == 0 && -z "$NODE_NAME$NODE_IP" ]]; then
            note "# no kubelet at $built (scripts/build-kubelet.sh builds it; --kubelet PATH names"
            note "#   another): installing darwin-cri only"
            return 0
        fi
        if [[ "$DRY_RUN" == 1 ]]; then
            SRC_KUBELET="./$built"
            note "# warning: no kubelet binary found (scripts/build-kubelet.sh, or give --kubelet); showing $SRC_KUBELET"
        else
            die "the kubelet options need the kubelet: build it (scripts/build-kubelet.sh darwin/$(host_arch)) or give --kubelet PATH"
        fi
    elif [[ ! -f "$SRC_KUBELET" || ! -x "$SRC_KUBELET" ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then
            note "# warning: $SRC_KUBELET is not an executable file"
        else
            die "$SRC_KUBELET is not an executable file"
        fi
    fi
    WITH_KUBELET=1
    local f
    for f in "$SRC_KUBELET_PLIST" "$SRC_KUBELET_CONF"; do
        [[ -f "$f" ]] || die "missing $f: run install.sh from a complete darwin-cri checkout"
    done

    # The node's name: kubelet registers under it, and it must stay put across network changes.
    local name="$NODE_NAME"
    if [[ -z "$name" ]]; then
        name="$(default_node_name)"
    fi
    # A node name is a DNS subdomain, and also the kubernetes.io/hostname label's value (<= 63).
    if [[ ${#name} -gt 63 || ! "$name" =~ ^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$ ]]; then
        if [[ -n "$NODE_NAME" ]]; then
            die "--node-name '$name' is not a node name: lower-case letters, digits, '-' and '.', at most 63"
        fi
        die "this host's name '$name' is not a node name: give --node-name NAME"
    fi

    # kubelet's plist with this node's arguments after --root-dir, the last of the shipped ones.
    stage_dir
    local extra="\t\t<string>--hostname-override=$name</string>\n"
    if [[ -n "$NODE_IP" ]]; then
        extra+="\t\t<string>--node-ip=$NODE_IP</string>\n"
    fi
    awk -v extra="$extra" '{ print } /<string>--root-dir=/ { printf "%s", extra }' \
        "$SRC_KUBELET_PLIST" >"$STAGE/$KUBELET_LABEL.plist"
    grep -q -- "--hostname-override=$name<" "$STAGE/$KUBELET_LABEL.plist" ||
        die "$SRC_KUBELET_PLIST has no --root-dir argument to add the node's arguments after"
    note "# kubelet's node name: $name${NODE_IP:+, node IP $NODE_IP}"

    if [[ "$JOIN" == 1 ]]; then
        # What kubeadm join writes: the CA inline, the API server, the bootstrap token as the user.
        local ca_data
        ca_data="$(base64 <"$JOIN_CA" | tr -d '\n')"
        (
            umask 077
            cat >"$STAGE/bootstrap-kubelet.conf" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kubernetes
    cluster:
      server: $JOIN_SERVER
      certificate-authority-data: $ca_data
contexts:
  - name: tls-bootstrap-token-user@kubernetes
    context:
      cluster: kubernetes
      user: tls-bootstrap-token-user
current-context: tls-bootstrap-token-user@kubernetes
preferences: {}
users:
  - name: tls-bootstrap-token-user
    user:
      token: $JOIN_TOKEN
EOF
        )
        note "# joining $JOIN_SERVER with bootstrap token ${JOIN_TOKEN%%.*}.<secret> and the CA in $JOIN_CA"
        if [[ -e "$KUBECONFIG_FILE" ]]; then
            note "# note: $KUBECONFIG_FILE exists: kubelet keeps using it while its certificate is valid,"
            note "#   and uses the bootstrap kubeconfig only when it is not (uninstall --purge, or remove it"
            note "#   and $KUBELET_ROOT/pki, to join anew)"
        fi
    fi
}

# install_kubelet: the kubelet's binary, config, plist and, with --join-*, its credentials.
install_kubelet() {
    install_file 755 "$SRC_KUBELET" "$KUBELET_BIN"
    # kubelet makes its root 0750 itself; made here first because config.yaml goes in it.
    make_dir 750 "$KUBELET_ROOT"
    if [[ -e "$KUBELET_CONF" ]]; then
        note "# keeping the existing $KUBELET_CONF: install.sh never overwrites a config;"
        note "#   the shipped one is $SRC_KUBELET_CONF (diff them after an upgrade)"
    else
        install_file 644 "$SRC_KUBELET_CONF" "$KUBELET_CONF"
    fi
    install_file 644 "$STAGE/$KUBELET_LABEL.plist" "$KUBELET_PLIST"
    if [[ "$JOIN" == 1 ]]; then
        # Made only when missing: /etc/kubernetes may be someone else's too.
        dir_there "$KUBE_DIR" || make_dir 755 "$KUBE_DIR"
        dir_there "$KUBE_PKI" || make_dir 755 "$KUBE_PKI"
        # The CA is public (kubelet's clientCAFile); the bootstrap token is a credential.
        install_file 644 "$JOIN_CA" "$KUBE_CA"
        install_file 600 "$STAGE/bootstrap-kubelet.conf" "$BOOTSTRAP_CONF"
    fi
}

# start_kubelet: load kubelet's job, if it has credentials to start with.
start_kubelet() {
    if [[ "$JOIN" == 0 && ! -e "$BOOTSTRAP_CONF" && ! -e "$KUBECONFIG_FILE" ]]; then
        note "# kubelet is installed but not started: it has no $KUBECONFIG_FILE and no"
        note "#   $BOOTSTRAP_CONF. Join a cluster (install --join-server URL --join-token TOKEN"
        note "#   --join-ca FILE), or put a kubeconfig there, then:"
        note "#   sudo launchctl bootstrap system $SYS_KUBELET_PLIST"
        return 0
    fi
    run launchctl enable "system/$KUBELET_LABEL"
    run launchctl bootstrap system "$SYS_KUBELET_PLIST"
    note "# kubelet is started (log: /var/log/darwin-cri/kubelet.log); it retries until darwin-cri answers"
    if [[ "$JOIN" == 1 ]]; then
        note "#   once the control plane approves its certificate request: kubectl get nodes"
    fi
}

do_install() {
    local src_bin
    if ! src_bin="$(find_binary)"; then
        if [[ "$DRY_RUN" == 1 ]]; then
            src_bin="./target/release/darwin-cri"
            note "# warning: no darwin-cri binary found (build it, or give --binary); showing $src_bin"
        else
            die "no darwin-cri binary: build it (cargo build --release) or give --binary PATH"
        fi
    elif [[ ! -f "$src_bin" || ! -x "$src_bin" ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then
            note "# warning: $src_bin is not an executable file"
        else
            die "$src_bin is not an executable file"
        fi
    fi
    # The monitor from the same build: a server runs its own version's monitor.
    local src_monitor
    src_monitor="$(dirname "$src_bin")/darwin-cri-monitor"
    if [[ ! -f "$src_monitor" || ! -x "$src_monitor" ]]; then
        if [[ "$DRY_RUN" == 1 ]]; then
            note "# warning: no $src_monitor beside the binary"
        else
            die "no darwin-cri-monitor beside $src_bin: build both (cargo build --release --bins)"
        fi
    fi
    local f
    for f in "$SRC_CONF" "$SRC_PLIST" "$SRC_NEWSYSLOG"; do
        [[ -f "$f" ]] || die "missing $f: run install.sh from a complete darwin-cri checkout"
    done
    prepare_kubelet

    if [[ "$WITH_KUBELET" == 1 ]]; then
        note "# installing darwin-cri and kubelet${PREFIX:+ under $PREFIX}"
    else
        note "# installing darwin-cri${PREFIX:+ under $PREFIX}"
    fi

    # The server starts each container's monitor from its own path: stopped before the binary
    # is replaced, so no old server ever starts a new monitor. Running containers keep their
    # monitors (install(1) makes a new inode; theirs stays). Started again below.
    # kubelet is stopped too when it is being replaced, and started again after darwin-cri.
    if [[ "$NO_LAUNCHCTL" == 0 ]]; then
        if [[ "$WITH_KUBELET" == 1 ]]; then
            stop_service "$KUBELET_LABEL"
        fi
        stop_service
    fi
    install_file 755 "$src_monitor" "$MONITOR"
    install_file 755 "$src_bin" "$BIN"

    if [[ -e "$CONF" ]]; then
        note "# keeping the existing $CONF: install.sh never overwrites a config;"
        note "#   the shipped one is $SRC_CONF (diff them after an upgrade)"
    else
        install_file 644 "$SRC_CONF" "$CONF"
    fi

    install_file 644 "$SRC_PLIST" "$PLIST"
    install_file 644 "$SRC_NEWSYSLOG" "$NEWSYSLOG"

    # launchd creates the log file but not its directory. The state root holds every container's
    # files and its users' data: root only.
    make_dir 755 "$LOG_DIR"
    make_dir 700 "$ROOT_DIR"

    if [[ "$WITH_KUBELET" == 1 ]]; then
        install_kubelet
    fi

    if [[ "$NO_LAUNCHCTL" == 1 ]]; then
        note "# launchctl and doctor skipped ($LAUNCHCTL_SKIPPED)"
        done_note "# installed"
        return 0
    fi

    # Its containers kept running while it was stopped (each has its own monitor process).
    # A daemon once disabled with `launchctl disable` would refuse to bootstrap.
    run launchctl enable "system/$LABEL"
    run launchctl bootstrap system "$SYS_PLIST"

    local doctor=("$SYS_BIN" --config "$SYS_CONF" doctor)
    if [[ -n "$KUBELET_CONFIG" ]]; then
        doctor+=(--kubelet-config "$KUBELET_CONFIG")
    elif [[ "$WITH_KUBELET" == 1 ]]; then
        doctor+=(--kubelet-config "$SYS_KUBELET_CONF")
    fi
    if [[ "$DRY_RUN" == 0 ]]; then
        # Give the daemon a moment to come up, so that doctor sees it running.
        local i
        for ((i = 0; i < 20; i++)); do
            if launchctl print "system/$LABEL" 2>/dev/null | grep -q 'state = running'; then
                break
            fi
            sleep 0.5
        done
    fi
    local status=0
    run "${doctor[@]}" || status=$?
    if [[ "$status" -ne 0 ]]; then
        note "# darwin-cri is installed and loaded, but doctor found a blocking problem (exit $status):"
        note "#   fix what it reports (FAIL lines), then: sudo launchctl kickstart -k system/$LABEL"
        note "#   log: /var/log/darwin-cri/darwin-cri.log"
        if [[ "$WITH_KUBELET" == 1 ]]; then
            note "#   kubelet was not started: run install again once doctor passes"
        fi
        exit "$status"
    fi
    if [[ "$WITH_KUBELET" == 1 ]]; then
        start_kubelet
    fi
    done_note "# installed; darwin-cri is running (log: /var/log/darwin-cri/darwin-cri.log)"
}

# ---- uninstall ----------------------------------------------------------------------------------

do_uninstall() {
    if [[ "$PURGE" == 1 ]]; then
        # Checked before anything changes. Never rm -rf through a mount: a container's bindfs
        # mount of /Applications or of a build workspace below the state root would take the
        # mounted files with it.
        local mounts dir
        for dir in "$ROOT_DIR" "$KUBELET_ROOT"; do
            if [[ "$dir" == "$KUBELET_ROOT" && "$NO_KUBELET" == 1 ]]; then
                continue
            fi
            mounts="$(mounts_under "$dir")"
            if [[ -n "$mounts" ]]; then
                printf '%s\n' "$mounts" >&2
                die "refusing to purge $dir: the mounts above are still there (containers still exist); drain the node and remove its pods first"
            fi
        done
        if [[ -z "$PREFIX" ]] && command -v pgrep >/dev/null 2>&1 &&
            pgrep -f 'darwin-cri monitor' >/dev/null 2>&1; then
            die "refusing to purge $ROOT_DIR: container monitors are still running (pgrep -fl 'darwin-cri monitor'); drain the node and remove its pods first"
        fi
    fi

    if [[ "$NO_KUBELET" == 1 ]]; then
        note "# uninstalling darwin-cri${PREFIX:+ under $PREFIX} (--no-kubelet: the kubelet is left alone)"
    else
        note "# uninstalling darwin-cri and kubelet${PREFIX:+ under $PREFIX}"
    fi

    # kubelet first: without darwin-cri it would only restart, failing, every ten seconds.
    if [[ "$NO_LAUNCHCTL" == 1 ]]; then
        note "# launchctl skipped ($LAUNCHCTL_SKIPPED)"
    else
        if [[ "$NO_KUBELET" == 0 ]]; then
            stop_service "$KUBELET_LABEL"
        fi
        stop_service
    fi

    if [[ "$NO_KUBELET" == 0 ]]; then
        remove_file "$KUBELET_BIN"
        remove_file "$KUBELET_PLIST"
    fi
    remove_file "$BIN"
    remove_file "$MONITOR"
    remove_file "$PLIST"
    remove_file "$NEWSYSLOG"

    if [[ "$PURGE" == 0 ]]; then
        note "# kept: $CONF_DIR and $ROOT_DIR (images, pods, containers) and $LOG_DIR;"
        if [[ "$NO_KUBELET" == 0 && -e "$KUBELET_ROOT" ]]; then
            note "#   $KUBELET_ROOT (kubelet's config.yaml, its certificate) and the kubeconfigs in $KUBE_DIR;"
        fi
        note "#   uninstall --purge removes them"
    else
        local dir
        local dirs=("$CONF_DIR" "$ROOT_DIR" "$LOG_DIR")
        if [[ "$NO_KUBELET" == 0 ]]; then
            dirs+=("$KUBELET_ROOT")
        fi
        for dir in "${dirs[@]}"; do
            if [[ -e "$dir" ]]; then
                run rm -rf "$dir"
            else
                note "# already absent: $dir"
            fi
        done
        if [[ "$NO_KUBELET" == 0 ]]; then
            # Only what install.sh and kubelet wrote: /etc/kubernetes may hold more.
            remove_file "$BOOTSTRAP_CONF"
            remove_file "$KUBECONFIG_FILE"
            remove_file "$KUBE_CA"
            for dir in "$KUBE_PKI" "$KUBE_DIR"; do
                if [[ -d "$dir" ]] && [[ -z "$(ls -A "$dir")" ]]; then
                    run rmdir "$dir"
                fi
            done
        fi
    fi

    if [[ "$NO_LAUNCHCTL" == 0 ]]; then
        note "# containers started by darwin-cri keep running under their monitors until they exit;"
        note "#   drain the node (kubectl drain) before uninstalling to stop them first"
    fi
    done_note "# uninstalled"
}

case "$COMMAND" in
    install) do_install ;;
    uninstall) do_uninstall ;;
esac
