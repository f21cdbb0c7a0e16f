#!/usr/bin/env bash
# Install or remove darwin-cri as a launchd daemon on macOS.
#
#   sudo deploy/install.sh [install] [options]
#   sudo deploy/install.sh uninstall [--purge] [options]
#
# Run with --help for the options. Every change is printed as "+ command ...", and --dry-run
# prints them without making any (it works on any OS, as any user). Running install again is
# safe: it replaces the binary, the plist and the newsyslog entry, never an existing config, and
# restarts the daemon.
set -euo pipefail

readonly LABEL="io.darwin-cri"
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR

usage() {
    cat <<'EOF'
Usage: install.sh [install|uninstall] [options]

Commands:
  install              (default) install the binary, config, launchd plist and newsyslog
                       entry, then (re)start the daemon and run `darwin-cri doctor`
  uninstall            stop the daemon; remove the binary, plist and newsyslog entry;
                       keep the config and /var/lib/darwin-cri unless --purge

Options:
  --dry-run            print every action as "+ command ...", change nothing
  --prefix DIR         prepend DIR to every installed path (packaging, tests); implies
                       --no-launchctl and needs no root
  --binary PATH        the darwin-cri binary to install (default: ./target/release/darwin-cri,
                       then the repository's target/release/darwin-cri, then darwin-cri on PATH);
                       darwin-cri-monitor, the per-container monitor, is taken from beside it
  --no-launchctl       do not touch launchd and do not run doctor (implied when not on macOS)
  --kubelet-config PATH
                       passed to `darwin-cri doctor --kubelet-config PATH`
  --purge              with uninstall: also remove the config, /var/lib/darwin-cri (images,
                       pods, state) and /var/log/darwin-cri
  -h, --help           this text
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

COMMAND=""
DRY_RUN=0
PREFIX=""
BINARY=""
NO_LAUNCHCTL=0
KUBELET_CONFIG=""
PURGE=0

while (($# > 0)); do
    case "$1" in
        install | uninstall)
            [[ -z "$COMMAND" ]] || die "one command only (got '$COMMAND' and '$1')"
            COMMAND="$1"
            ;;
        --dry-run) DRY_RUN=1 ;;
        --no-launchctl) NO_LAUNCHCTL=1 ;;
        --purge) PURGE=1 ;;
        --prefix | --binary | --kubelet-config)
            (($# >= 2)) || die "$1 needs a value"
            [[ -n "$2" ]] || die "$1 needs a non-empty value"
            case "$1" in
                --prefix) PREFIX="$2" ;;
                --binary) BINARY="$2" ;;
                --kubelet-config) KUBELET_CONFIG="$2" ;;
            esac
            shift
            ;;
        --prefix=* | --binary=* | --kubelet-config=*)
            value="${1#*=}"
            [[ -n "$value" ]] || die "${1%%=*} needs a non-empty value"
            case "$1" in
                --prefix=*) PREFIX="$value" ;;
                --binary=*) BINARY="$value" ;;
                --kubelet-config=*) KUBELET_CONFIG="$value" ;;
            esac
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

# ---- helpers ------------------------------------------------------------------------------------

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
    if [[ ! -d "$parent" ]]; then
        run install -d -m 755 ${OWNER_ARGS[@]+"${OWNER_ARGS[@]}"} "$parent"
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

service_loaded() {
    launchctl print "system/$LABEL" >/dev/null 2>&1
}

# stop_service: bootout the daemon if launchd has it, and wait until it is gone (bootstrap right
# after a bootout that has not finished fails with "Input/output error").
stop_service() {
    if ! service_loaded; then
        note "# $LABEL is not loaded"
        return 0
    fi
    run launchctl bootout "system/$LABEL"
    if [[ "$DRY_RUN" == 1 ]]; then
        return 0
    fi
    local i
    for ((i = 0; i < 60; i++)); do
        service_loaded || return 0
        sleep 0.5
    done
    die "launchd still has system/$LABEL 30 s after bootout; see: launchctl print system/$LABEL"
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

    note "# installing darwin-cri${PREFIX:+ under $PREFIX}"

    # The server starts each container's monitor from its own path: stopped before the binary
    # is replaced, so no old server ever starts a new monitor. Running containers keep their
    # monitors (install(1) makes a new inode; theirs stays). Started again below.
    if [[ "$NO_LAUNCHCTL" == 0 ]]; then
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
    run install -d -m 755 ${OWNER_ARGS[@]+"${OWNER_ARGS[@]}"} "$LOG_DIR"
    run install -d -m 700 ${OWNER_ARGS[@]+"${OWNER_ARGS[@]}"} "$ROOT_DIR"

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
        exit "$status"
    fi
    done_note "# installed; darwin-cri is running (log: /var/log/darwin-cri/darwin-cri.log)"
}

# ---- uninstall ----------------------------------------------------------------------------------

do_uninstall() {
    if [[ "$PURGE" == 1 ]]; then
        # Checked before anything changes. Never rm -rf through a mount: a container's bindfs
        # mount of /Applications or of a build workspace below the state root would take the
        # mounted files with it.
        local mounts
        mounts="$(mounts_under "$ROOT_DIR")"
        if [[ -n "$mounts" ]]; then
            printf '%s\n' "$mounts" >&2
            die "refusing to purge $ROOT_DIR: the mounts above are still there (containers still exist); drain the node and remove its pods first"
        fi
        if [[ -z "$PREFIX" ]] && command -v pgrep >/dev/null 2>&1 &&
            pgrep -f 'darwin-cri monitor' >/dev/null 2>&1; then
            die "refusing to purge $ROOT_DIR: container monitors are still running (pgrep -fl 'darwin-cri monitor'); drain the node and remove its pods first"
        fi
    fi

    note "# uninstalling darwin-cri${PREFIX:+ under $PREFIX}"

    if [[ "$NO_LAUNCHCTL" == 1 ]]; then
        note "# launchctl skipped ($LAUNCHCTL_SKIPPED)"
    else
        stop_service
    fi

    remove_file "$BIN"
    remove_file "$MONITOR"
    remove_file "$PLIST"
    remove_file "$NEWSYSLOG"

    if [[ "$PURGE" == 0 ]]; then
        note "# kept: $CONF_DIR and $ROOT_DIR (images, pods, containers) and $LOG_DIR;"
        note "#   uninstall --purge removes them"
    else
        local dir
        for dir in "$CONF_DIR" "$ROOT_DIR" "$LOG_DIR"; do
            if [[ -e "$dir" ]]; then
                run rm -rf "$dir"
            else
                note "# already absent: $dir"
            fi
        done
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
