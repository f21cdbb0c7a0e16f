//! The host: who runs darwin-cri, System Integrity Protection, chroot, and the monitor binary.

use super::*;

pub(super) fn user() -> Check {
    if nix::unistd::geteuid().is_root() {
        Check::ok("user", "running as root")
    } else {
        Check::fail(
            "user",
            format!(
                "running as uid {}: chroot and mounts need root",
                nix::unistd::geteuid()
            ),
            "run darwin-cri as root (the launchd plist in deploy/ does)",
        )
    }
}

pub(super) fn sip() -> Check {
    match std::process::Command::new("csrutil").arg("status").output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            let line = text.lines().next().unwrap_or_default().trim().to_string();
            // What the state allows (docs/seatbelt.md; unproven on a Mac): chroot(2) itself and
            // Seatbelt work with SIP on; running a root's copy of the dyld shared cache needs
            // SIP's file-system protection off (copies lose the flag the kernel requires).
            if text.contains("status: disabled") {
                Check::ok(
                    "sip",
                    format!("{line}: chroot roots can run their copy of the dyld shared cache"),
                )
            } else if text.contains("Filesystem Protections: disabled") {
                Check::ok(
                    "sip",
                    format!(
                        "{line} (file-system protection off): chroot roots can run their copy \
                         of the dyld shared cache; Seatbelt confinement works either way"
                    ),
                )
            } else {
                Check::warn(
                    "sip",
                    line,
                    "with SIP on, chroot(2) and Seatbelt work but a root's copy of the dyld shared \
                     cache is not mapped, so programs in containers fail to start: in recoveryOS \
                     run `csrutil enable --without fs` (or `csrutil disable`); see docs/seatbelt.md",
                )
            }
        }
        Err(e) => Check::warn(
            "sip",
            format!("cannot run csrutil: {e}"),
            "check `csrutil status`",
        ),
    }
}

pub(super) fn chroot(scratch: Option<&Path>) -> Check {
    let Some(dir) = scratch else {
        return Check::fail(
            "chroot",
            "no scratch directory under the root to try a chroot in",
            "make the root directory writable by root",
        );
    };
    match platform::try_chroot(dir) {
        Ok(()) => Check::ok(
            "chroot",
            format!("a process may chroot into {}", dir.display()),
        ),
        Err(e) => Check::fail(
            "chroot",
            format!("chroot into {} was refused: {e}", dir.display()),
            if MACOS {
                "run as root with System Integrity Protection disabled (recoveryOS: `csrutil disable`)"
            } else {
                "run as root, with CAP_SYS_CHROOT"
            },
        ),
    }
}

/// Finds `program` as exec(3) would: a path with a slash as it is, otherwise along PATH.
pub(super) fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// The resolver(5) files darwin-cri keeps for ready pods' cluster domains.
/// The small monitor binary beside this one (what each container runs under).
pub(super) fn monitor() -> Check {
    let Ok(exe) = std::env::current_exe() else {
        return Check::warn(
            "monitor",
            "cannot tell where darwin-cri is installed",
            "run darwin-cri by its full path",
        );
    };
    let program = runtime::monitor::MonitorProgram::beside(&exe);
    if program.is_small() {
        Check::ok(
            "monitor",
            format!(
                "{} (protocol {})",
                program.exe().display(),
                runtime::monitor::PROTOCOL
            ),
        )
    } else {
        Check::warn(
            "monitor",
            format!(
                "no {} beside {}: containers are monitored by darwin-cri itself, at a higher \
                 memory cost each",
                runtime::monitor::MONITOR_BINARY,
                exe.display()
            ),
            "install darwin-cri-monitor from the same build into the same directory \
             (deploy/install.sh and the Homebrew formula do)",
        )
    }
}
