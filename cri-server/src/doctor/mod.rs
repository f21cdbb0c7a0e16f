//! `darwin-cri doctor`: checks that this host can run darwin-cri, and says what to fix.
//!
//! Each check tries the real thing where it can (a chroot, a mount with the configured
//! mechanism, a copy-on-write root, a registry request) rather than guessing from versions. A
//! FAIL blocks darwin-cri from working and makes the exit status 1; a warn is worth knowing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;

mod host;
mod kubelet;
mod network;
mod security;
mod storage;

use host::*;
use kubelet::*;
use network::*;
use security::*;
use storage::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, detail: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

const MACOS: bool = matches!(platform::OS, platform::Os::MacOs);

/// Runs every check; `config_file` is the file the configuration came from, if any.
pub async fn run(
    config: &Config,
    config_file: Option<&Path>,
    kubelet_config: Option<&Path>,
) -> Vec<Check> {
    let mut checks = vec![user(), monitor()];
    if MACOS {
        checks.push(sip());
    }
    let scratch = scratch_dir(config);
    checks.push(chroot(scratch.as_deref()));
    checks.extend(mounts(config, scratch.as_deref()));
    checks.push(root_filesystem(config, scratch.as_deref()));
    checks.push(root_nosuid(config));
    checks.push(root_pool(config));
    checks.extend(landlock(config));
    checks.push(socket_paths(config));
    checks.extend(permissions(config, config_file));
    checks.push(mdns(config));
    checks.push(cluster_dns(config));
    checks.extend(registries(config).await);
    checks.extend(kubelet(config, kubelet_config));
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    checks
}

/// Prints the checks, one per line with the fix under it; returns the exit status.
pub fn report(checks: &[Check]) -> i32 {
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        println!("{tag}  {:<16} {}", c.name, c.detail);
        if let Some(fix) = &c.fix {
            println!("      {:<16} fix: {fix}", "");
        }
    }
    let failed = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warned = checks.iter().filter(|c| c.status == Status::Warn).count();
    println!(
        "{} checks: {failed} failed, {warned} warnings",
        checks.len()
    );
    i32::from(failed > 0)
}

/// A directory under the root for the probes, on the file system containers will use. A root
/// that does not exist yet is made as the server makes it, 700.
fn scratch_dir(config: &Config) -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    if !config.root.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.root)
            .ok()?;
    }
    let dir = config.root.join(format!(".doctor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// `path` with its nearest existing ancestor's symlinks resolved, as the server will see it
/// once it has made the directories (on macOS /var is /private/var).
fn real_path(path: &Path) -> PathBuf {
    let mut existing = path;
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return path.to_path_buf(),
        }
    }
    let mut real = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    real.extend(rest.iter().rev());
    real
}
