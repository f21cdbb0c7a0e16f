//! The container's process as the monitor starts it (and exec sessions): its spec read from the
//! bundle, its executable found inside the root, its command confined to the root. Both the
//! process supervisor (process.rs) and the control socket's exec (control.rs) use it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use image_service::safe_path::resolve_in_root;
use platform::Credentials;

use super::*;
use crate::model::ProcessSpec;

/// Finds `name` as the container would: a path containing `/` is taken as is (relative to
/// `cwd`), anything else is searched in the container's `PATH`. Resolution stays inside `rootfs`.
/// Returns the path as the container sees it.
pub fn find_executable(
    rootfs: &Path,
    cwd: &str,
    name: &str,
    env: &[String],
) -> Result<String, MonitorError> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |in_container: &str| -> bool {
        resolve_in_root(rootfs, Path::new(in_container))
            .and_then(std::fs::metadata)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.is_empty() {
        return Err(MonitorError::Refused("no command specified".into()));
    }
    if name.contains('/') {
        let full = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("{}/{name}", cwd.trim_end_matches('/'))
        };
        return if runnable(&full) {
            Ok(full)
        } else {
            Err(MonitorError::Refused(format!(
                "exec: {name:?}: no such executable file in the container"
            )))
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/{name}", d.trim_end_matches('/')))
        .find(|c| runnable(c))
        .ok_or_else(|| {
            MonitorError::Refused(format!(
                "exec: {name:?}: executable file not found in $PATH ({path})"
            ))
        })
}

/// Builds the command for `spec`'s process (or `args` instead of its own), confined to its root;
/// with `terminal`, as a session leader whose stdin is its controlling terminal.
pub(super) fn command_for(
    spec: &ProcessSpec,
    args: &[String],
    terminal: bool,
) -> Result<Command, MonitorError> {
    let program = find_executable(
        &spec.rootfs,
        &spec.cwd,
        args.first().map(String::as_str).unwrap_or(""),
        &spec.env,
    )?;
    let mut cmd = Command::new(program);
    cmd.arg0(args.first().map(String::as_str).unwrap_or_default());
    cmd.args(&args[1..]).env_clear();
    for kv in &spec.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let creds = Credentials {
        uid: spec.uid,
        gid: spec.gid,
        groups: spec.groups.clone(),
        nice: spec.limits.nice,
        nproc: spec.limits.pids,
        nofile: spec.limits.nofile,
        terminal,
    };
    platform::confine(
        &mut cmd,
        &spec.rootfs,
        Path::new(&spec.cwd),
        &creds,
        spec.confinement.as_ref(),
    )
    .map_err(|e| MonitorError::io("confining the process", e))?;
    Ok(cmd)
}

/// The process spec the server wrote into the bundle.
pub(super) fn read_spec(bundle: &Path) -> Result<ProcessSpec, MonitorError> {
    std::fs::read(bundle_file(bundle, PROCESS_FILE))
        .map_err(|e| MonitorError::io("reading the process spec", e))
        .and_then(|b| {
            serde_json::from_slice(&b)
                .map_err(|e| MonitorError::parse("parsing the process spec", e))
        })
}
