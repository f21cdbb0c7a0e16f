//! Security: Landlock's ABI, socket path lengths, and who owns the root, the sockets and the
//! configuration.

use super::*;

/// The kernel's Landlock ABI and what of the confinement policy it covers (the Linux twin;
/// macOS confines with Seatbelt and has no such check). A kernel short of the policy fails,
/// since confined containers are refused there, unless the operator chose best effort.
pub(super) fn landlock(config: &Config) -> Option<Check> {
    let abi = platform::landlock_abi()?;
    let best_effort = config.runtime.landlock_best_effort;
    Some(match platform::landlock_decision(abi, best_effort) {
        Ok(lost) if lost.is_empty() => Check::ok(
            "landlock",
            format!(
                "Landlock ABI {abi}: file access, truncation, device ioctls, signal and                  abstract socket scoping (all that confined containers need, ABI {})",
                platform::LANDLOCK_ABI_NEEDED
            ),
        ),
        Ok(lost) => Check::warn(
            "landlock",
            format!(
                "Landlock ABI {abi} (best effort): confined containers start without {}",
                lost.join("; ")
            ),
            "run Linux 6.12 or later",
        ),
        Err(message) => Check::fail(
            "landlock",
            format!("Landlock ABI {abi}: confined containers are refused"),
            message,
        ),
    })
}

pub(super) fn socket_paths(config: &Config) -> Check {
    let mut real = config.clone();
    real.state_dir = real_path(&config.state_dir);
    match crate::serve::check_socket_paths(&real) {
        Ok(()) => Check::ok(
            "socket paths",
            format!(
                "{} and the monitor sockets fit the {}-byte limit",
                config.socket.display(),
                platform::MAX_SOCKET_PATH
            ),
        ),
        Err(e) => Check::fail(
            "socket paths",
            format!("{e:#}"),
            "set a shorter socket or state_dir",
        ),
    }
}

pub(super) fn permissions(config: &Config, config_file: Option<&Path>) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut paths = vec![("root", config.root.clone(), "chmod 700")];
    if let Some(dir) = config.socket.parent() {
        paths.push(("socket dir", dir.to_path_buf(), "chmod 755"));
    }
    if let Some(f) = config_file {
        paths.push(("config", f.to_path_buf(), "chmod 644"));
    }
    for (what, path, fix) in paths {
        let Ok(meta) = std::fs::metadata(&path) else {
            // The server creates the root and socket directories itself.
            continue;
        };
        let mode = meta.permissions().mode() & 0o7777;
        if meta.uid() != 0 && nix::unistd::geteuid().is_root() {
            checks.push(Check::fail(
                "permissions",
                format!(
                    "{what} {} belongs to uid {}, not root",
                    path.display(),
                    meta.uid()
                ),
                format!("chown root {}", path.display()),
            ));
        } else if mode & 0o022 != 0 && !(meta.is_dir() && mode & 0o1000 != 0 && what != "root") {
            checks.push(Check::fail(
                "permissions",
                format!(
                    "{what} {} is writable by others (mode {mode:o}): anyone could change what runs as root",
                    path.display()
                ),
                format!("{fix} {}", path.display()),
            ));
        }
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "permissions",
            "root, socket directory and config are root's and not writable by others",
        ));
    }
    checks
}
