//! `darwin-cri doctor`: checks that this host can run darwin-cri, and says what to fix.
//!
//! Each check tries the real thing where it can (a chroot, a mount with the configured
//! mechanism, a copy-on-write root, a registry request) rather than guessing from versions. A
//! FAIL blocks darwin-cri from working and makes the exit status 1; a warn is worth knowing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::config::Config;

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

/// Where kubelet's configuration file is looked for when `--kubelet-config` is not given.
const KUBELET_CONFIGS: &[&str] = &[
    "/usr/local/etc/kubernetes/kubelet-config.yaml",
    "/etc/kubernetes/kubelet-config.yaml",
    "/var/lib/kubelet/config.yaml",
];

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

fn user() -> Check {
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

fn sip() -> Check {
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

fn chroot(scratch: Option<&Path>) -> Check {
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
fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

fn mounts(config: &Config, scratch: Option<&Path>) -> Vec<Check> {
    use runtime::mounts::MountMechanism;
    let policy = config.mounts.policy();
    let mut checks = Vec::new();
    if let MountMechanism::Bindfs { program, .. } = &policy.mechanism {
        match find_program(program) {
            Some(found) => checks.push(Check::ok("bindfs", found.display().to_string())),
            None => {
                checks.push(Check::fail(
                    "bindfs",
                    format!(
                        "bindfs not found as {:?} (mounts.bindfs_path)",
                        program.display().to_string()
                    ),
                    if MACOS {
                        "brew install --cask macfuse && brew install gromgit/fuse/bindfs-mac \
                         (or fuse-t and its bindfs), or set mounts.bindfs_path"
                    } else {
                        "apt-get install bindfs, or set mounts.bindfs_path"
                    },
                ));
                return checks;
            }
        }
        let fuse: &[&str] = if MACOS {
            &[
                "/Library/Filesystems/macfuse.fs",
                "/Library/Application Support/fuse-t",
                "/usr/local/lib/libfuse-t.dylib",
            ]
        } else {
            &["/dev/fuse"]
        };
        match fuse.iter().find(|p| Path::new(p).exists()) {
            Some(p) => checks.push(Check::ok("fuse", *p)),
            None => checks.push(Check::fail(
                "fuse",
                format!("no FUSE found (looked for {})", fuse.join(", ")),
                if MACOS {
                    "install macFUSE (brew install --cask macfuse; allow its system extension) or fuse-t"
                } else {
                    "load the fuse module (modprobe fuse)"
                },
            )),
        }
    }
    let Some(dir) = scratch else {
        return checks;
    };
    let (src, dst) = (dir.join("src"), dir.join("dst"));
    let probe = (|| -> std::io::Result<()> {
        std::fs::create_dir_all(&src)?;
        std::fs::create_dir_all(&dst)?;
        std::fs::write(src.join("probe"), "darwin-cri")?;
        policy.mount(&src, &dst, true)?;
        let seen = std::fs::read_to_string(dst.join("probe"));
        let refused = std::fs::write(dst.join("write"), "x").is_err();
        platform::unmount(&dst)?;
        match seen {
            Ok(s) if s == "darwin-cri" && refused => Ok(()),
            Ok(_) if !refused => Err(std::io::Error::other("a read-only mount took a write")),
            Ok(_) => Err(std::io::Error::other("the mounted file read differently")),
            Err(e) => Err(e),
        }
    })();
    let how = match &policy.mechanism {
        MountMechanism::Bind => "bind mount".to_string(),
        MountMechanism::Bindfs { program, .. } => format!("{} mount", program.display()),
    };
    checks.push(file_mount(&policy, dir));
    checks.push(match probe {
        Ok(()) => Check::ok("mount", format!("a read-only {how} works")),
        Err(e) => Check::fail(
            "mount",
            format!("a read-only {how} of a test directory failed: {e}"),
            if MACOS {
                "check that macFUSE's system extension is allowed (System Settings > Privacy & \
                 Security) and that bindfs runs by hand as root"
            } else {
                "check that bindfs or mount(8) works by hand as root"
            },
        ),
    });
    checks
}

/// kubelet mounts files too (the termination log, /etc/hosts); a container's writes to the
/// termination log must reach kubelet's file.
fn file_mount(policy: &runtime::mounts::MountPolicy, dir: &Path) -> Check {
    use runtime::mounts::Mounted;
    let (src, dst) = (dir.join("src-file"), dir.join("dst-file"));
    let probe = (|| -> std::io::Result<Mounted> {
        std::fs::write(&src, "")?;
        std::fs::write(&dst, "")?;
        let how = policy.mount(&src, &dst, false)?;
        std::fs::write(&dst, "from the container")?;
        if how == Mounted::Mount {
            platform::unmount(&dst)?;
        }
        Ok(how)
    })();
    let reached = std::fs::read_to_string(&src).is_ok_and(|s| s == "from the container");
    match probe {
        Ok(Mounted::Mount) | Ok(Mounted::Link) if reached => Check::ok(
            "file mount",
            "writes to a mounted file (the termination log) reach the host's",
        ),
        Ok(how) => Check::warn(
            "file mount",
            format!(
                "a mounted file is a {how:?}: the container's writes to it (the termination log) do not reach kubelet's"
            ),
            "keep root on the same file system as kubelet's root dir, so files are hard-linked",
        ),
        Err(e) => Check::fail(
            "file mount",
            format!("mounting a file failed: {e}"),
            "check that the mount mechanism works by hand as root",
        ),
    }
}

/// Whether darwin-cri's root (image store and container roots together, so that clones stay on
/// one volume) is on a file system mounted nosuid: on macOS the only way setuid bits in a
/// container root grant nothing (the Linux twin mounts each layered root nosuid itself).
fn root_nosuid(config: &Config) -> Check {
    use nix::sys::statvfs::{FsFlags, statvfs};
    match statvfs(&config.root) {
        Ok(st) if st.flags().contains(FsFlags::ST_NOSUID) => Check::ok(
            "nosuid",
            format!(
                "{} is on a file system mounted nosuid",
                config.root.display()
            ),
        ),
        Ok(_) if MACOS => Check::warn(
            "nosuid",
            format!(
                "{} is not on a volume mounted nosuid: a setuid program kept in an image \
                 (image.keep_setuid) or made in a container by root works there",
                config.root.display()
            ),
            "put darwin-cri's root on its own APFS volume mounted nosuid: \
             `diskutil apfs addVolume disk3 APFS darwin-cri -mountpoint /var/lib/darwin-cri`, \
             then `mount -u -o nosuid /var/lib/darwin-cri` (and an /etc/fstab entry with nosuid)",
        ),
        Ok(_) => Check::ok(
            "nosuid",
            "layered container roots are mounted nosuid one by one (copied roots rely on the \
             setuid bits cleared at unpack)",
        ),
        Err(e) => Check::warn(
            "nosuid",
            format!(
                "cannot read the mount flags of {}: {e}",
                config.root.display()
            ),
            "check that the root directory exists",
        ),
    }
}

/// The kernel's Landlock ABI and what of the confinement policy it covers (the Linux twin;
/// macOS confines with Seatbelt and has no such check). A kernel short of the policy fails,
/// since confined containers are refused there, unless the operator chose best effort.
fn landlock(config: &Config) -> Option<Check> {
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

fn root_filesystem(config: &Config, scratch: Option<&Path>) -> Check {
    let fs = match platform::filesystem_type(&config.root) {
        Ok(fs) => fs,
        Err(e) => {
            return Check::fail(
                "root fs",
                format!("cannot stat {}: {e}", config.root.display()),
                "create the root directory",
            );
        }
    };
    if MACOS {
        return if fs == "apfs" {
            Check::ok(
                "root fs",
                format!(
                    "{} is on APFS: containers' roots are clones",
                    config.root.display()
                ),
            )
        } else {
            Check::fail(
                "root fs",
                format!(
                    "{} is on {fs}, not APFS: no clonefile(2), every container would copy its image",
                    config.root.display()
                ),
                "set root to a directory on an APFS volume",
            )
        };
    }
    let Some(dir) = scratch else {
        return Check::ok("root fs", fs);
    };
    let snapshot = dir.join("snapshot");
    let _ = std::fs::create_dir_all(&snapshot);
    let layered = runtime::rootfs::overlay(&snapshot, &[], &dir.join("c"), true)
        .map(|_| platform::mounts_under(&dir.join("c")).unwrap_or_default());
    let layered = match layered {
        Ok(mounts) => {
            let any = !mounts.is_empty();
            for m in mounts {
                let _ = platform::unmount(&m);
            }
            any
        }
        Err(_) => false,
    };
    if layered {
        Check::ok(
            "root fs",
            format!(
                "{} is on {fs}: containers' roots are overlayfs layers",
                config.root.display()
            ),
        )
    } else {
        Check::warn(
            "root fs",
            format!(
                "{} is on {fs}: no overlayfs there, containers' roots are copies",
                config.root.display()
            ),
            "put root on a file system overlayfs accepts (ext4, xfs) for fast starts",
        )
    }
}

fn socket_paths(config: &Config) -> Check {
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

fn permissions(config: &Config, config_file: Option<&Path>) -> Vec<Check> {
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

fn mdns(config: &Config) -> Check {
    match config.runtime.mdns_socket() {
        None => Check::ok(
            "dns",
            "no mDNSResponder relay configured (runtime.mdns_socket)",
        ),
        Some(path) if std::fs::symlink_metadata(&path).is_ok() => Check::ok(
            "dns",
            format!("{} is relayed into container roots", path.display()),
        ),
        Some(path) => Check::warn(
            "dns",
            format!(
                "{} does not exist: containers will not resolve names",
                path.display()
            ),
            "start mDNSResponder (launchctl kickstart system/com.apple.mDNSResponder) or set runtime.mdns_socket",
        ),
    }
}

/// The resolver(5) files darwin-cri keeps for ready pods' cluster domains.
/// The small monitor binary beside this one (what each container runs under).
fn monitor() -> Check {
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

fn cluster_dns(config: &Config) -> Check {
    let Some(dir) = config.runtime.resolver_dir() else {
        return Check::ok(
            "cluster dns",
            "pods resolve cluster names through their resolv.conf (no resolver directory)",
        );
    };
    let mut ours = Vec::new();
    let mut others = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if runtime::cluster_dns::is_ours(&e.path()) {
            let servers: Vec<String> = std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.strip_prefix("nameserver "))
                .map(str::to_string)
                .collect();
            ours.push(format!("{name} → {}", servers.join(", ")));
        } else {
            others.push(name);
        }
    }
    let mut detail = if ours.is_empty() {
        format!(
            "{}: no cluster domain is routed (written when a pod with a cluster DNS config starts)",
            dir.display()
        )
    } else {
        format!("{}: {}", dir.display(), ours.join("; "))
    };
    if !others.is_empty() {
        detail.push_str(&format!(
            "; not darwin-cri's, left alone: {}",
            others.join(", ")
        ));
    }
    Check::ok("cluster dns", detail)
}

async fn registries(config: &Config) -> Vec<Check> {
    let hosts: Vec<&String> = config
        .image
        .registries
        .keys()
        .filter(|h| h.as_str() != "*")
        .collect();
    if hosts.is_empty() {
        return vec![Check::ok(
            "registries",
            "none configured: pulls go to each image's own registry",
        )];
    }
    let registry = match image_service::registry::Registry::new(config.image.registry()) {
        Ok(r) => r,
        Err(e) => {
            return vec![Check::fail(
                "registries",
                format!("the registry client cannot be set up: {e}"),
                "check image.ca_files",
            )];
        }
    };
    let mut checks = Vec::new();
    for host in hosts {
        for (url, answer) in registry.probe(host).await {
            checks.push(match answer {
                Ok(200 | 401) => Check::ok("registry", format!("{url} answers")),
                Ok(code) => Check::warn(
                    "registry",
                    format!("{url} answered HTTP {code}, not a registry's 200 or 401"),
                    "check the host and mirror URLs in [image.registries]",
                ),
                Err(e) => Check::warn(
                    "registry",
                    format!("{url} is unreachable: {e}"),
                    "check the network, the URL, and image.ca_files for a private CA",
                ),
            });
        }
    }
    checks
}

/// The parts of kubelet's KubeletConfiguration that matter to darwin-cri.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct KubeletConfig {
    kind: String,
    container_runtime_endpoint: String,
    image_service_endpoint: String,
    cgroups_per_q_o_s: Option<bool>,
    feature_gates: std::collections::BTreeMap<String, bool>,
}

fn kubelet(config: &Config, given: Option<&Path>) -> Vec<Check> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match KUBELET_CONFIGS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        {
            Some(p) => p,
            None => {
                return vec![Check::warn(
                    "kubelet",
                    format!(
                        "no kubelet configuration found (looked at {})",
                        KUBELET_CONFIGS.join(", ")
                    ),
                    "pass --kubelet-config PATH; deploy/kubelet-config.yaml is a starting point",
                )];
            }
        },
    };
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_saphyr::from_str::<KubeletConfig>(&t).map_err(|e| e.to_string()));
    let kc = match parsed {
        Ok(kc) if kc.kind == "KubeletConfiguration" => kc,
        Ok(kc) => {
            return vec![Check::fail(
                "kubelet",
                format!(
                    "{} is a {:?}, not a KubeletConfiguration",
                    path.display(),
                    kc.kind
                ),
                "point --kubelet-config at kubelet's --config file",
            )];
        }
        Err(e) => {
            return vec![Check::fail(
                "kubelet",
                format!("cannot read {}: {e}", path.display()),
                "fix the file's YAML",
            )];
        }
    };
    let want = format!("unix://{}", config.socket.display());
    let mut checks = Vec::new();
    for (field, value) in [
        ("containerRuntimeEndpoint", &kc.container_runtime_endpoint),
        ("imageServiceEndpoint", &kc.image_service_endpoint),
    ] {
        if value.is_empty() && field == "imageServiceEndpoint" {
            continue;
        }
        if value != &want {
            checks.push(Check::fail(
                "kubelet",
                format!(
                    "{} has {field}: {value:?}, not darwin-cri's socket",
                    path.display()
                ),
                format!("set {field}: {want}"),
            ));
        }
    }
    if kc.cgroups_per_q_o_s != Some(false) {
        checks.push(Check::warn(
            "kubelet",
            format!(
                "{} does not set cgroupsPerQOS: false; macOS has no cgroups",
                path.display()
            ),
            "set cgroupsPerQOS: false and enforceNodeAllocatable: []",
        ));
    }
    if kc.feature_gates.get("PodAndContainerStatsFromCRI") != Some(&true) {
        checks.push(Check::warn(
            "kubelet",
            format!(
                "{} does not enable PodAndContainerStatsFromCRI; there is no cAdvisor on macOS",
                path.display()
            ),
            "set featureGates: {PodAndContainerStatsFromCRI: true}",
        ));
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "kubelet",
            format!("{} points kubelet at {want}", path.display()),
        ));
    }
    checks
}
