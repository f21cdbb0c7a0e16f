//! kubelet's volumes inside container roots: which host paths may be mounted, and how.
//!
//! Linux has bind mounts. macOS has none: there the host directory is re-exported at the
//! target by bindfs, a FUSE file system (over macFUSE or fuse-t). The same bindfs code path runs
//! on Linux with Debian's bindfs, so the tests exercise it beside plain bind mounts.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use image_service::safe_path::resolve_in_root;

use crate::error::IoContext;
use crate::{Error, Result};

/// How a host path is made visible inside a container root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountMechanism {
    /// The kernel's bind mounts (Linux).
    Bind,
    /// A bindfs process per mount, run as `program [options] [-o ro] source target`.
    Bindfs {
        program: PathBuf,
        options: Vec<String>,
    },
}

impl MountMechanism {
    /// What this OS uses when the configuration says "auto".
    pub fn native() -> MountMechanism {
        if !platform::HAS_BIND_MOUNTS {
            MountMechanism::Bindfs {
                program: "bindfs".into(),
                options: Vec::new(),
            }
        } else {
            MountMechanism::Bind
        }
    }
}

/// Where mounts may come from and how they are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPolicy {
    pub mechanism: MountMechanism,
    /// Host directories a mount source must lie under once symlinks are resolved; empty allows
    /// every path. kubelet's own mounts (hosts file, service-account tokens, termination log)
    /// come from its root dir, so that belongs in the list.
    pub allowed_host_paths: Vec<PathBuf>,
    /// darwin-cri's own directories (its root, its state directory, the CRI socket's directory):
    /// a mount source that is one of them, lies inside one or holds one is refused whatever
    /// `allowed_host_paths` says, and so is `/` (see [`MountPolicy::resolve_source`]).
    pub own_paths: Vec<PathBuf>,
}

impl Default for MountPolicy {
    fn default() -> Self {
        MountPolicy {
            mechanism: MountMechanism::native(),
            allowed_host_paths: Vec::new(),
            own_paths: Vec::new(),
        }
    }
}

impl MountPolicy {
    /// The policy with darwin-cri's own directories (root, state directory, the socket's
    /// directory) refused as mount sources.
    pub fn with_own_paths(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        self.own_paths.extend(paths);
        self
    }

    /// Why `real` (a resolved source) may never be mounted, whatever the allowed list says.
    fn refused_always(&self, real: &Path) -> Option<String> {
        if real.parent().is_none() {
            return Some("is the host's root directory /".into());
        }
        for own in &self.own_paths {
            // Compared as the host resolves them (macOS: /var is /private/var).
            let own = own.canonicalize().unwrap_or_else(|_| own.clone());
            if real.starts_with(&own) || own.starts_with(real) {
                return Some(format!(
                    "is or {} darwin-cri's own directory {} (its root, state or socket \
                     directory: other pods' roots, the metadata store, the CRI and monitor \
                     sockets)",
                    if real.starts_with(&own) {
                        "lies inside"
                    } else {
                        "holds"
                    },
                    own.display()
                ));
            }
        }
        None
    }
}

/// What containerd masks in every container's /proc and /sys (kernel memory, keys, timers and
/// scheduler internals, hardware) and what it makes read-only (kernel settings, the sysrq
/// trigger, interrupts, buses): the same here, for the /proc the Linux twin gives every root.
pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub const DEFAULT_READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Masks and write-protects paths inside a container root as containerd does, with mounts
/// (where the OS has bind mounts): a masked file gets the host's /dev/null over it, a masked
/// directory an empty read-only directory (made in `container_dir`), a read-only path itself
/// mounted read-only. Returns the mount points made; on an error those are undone.
pub(crate) fn mask(
    empty: &Path,
    masked: &[PathBuf],
    read_only: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    let mut made = Vec::new();
    let result = (|| -> io::Result<()> {
        for path in masked {
            if std::fs::symlink_metadata(path)?.is_dir() {
                // One empty directory serves every container: bound read-only, nothing can
                // be written into it from any of them.
                empty_dir(empty)?;
                platform::bind_mount(empty, path, true)?;
            } else {
                platform::bind_mount(Path::new("/dev/null"), path, true)?;
            }
            made.push(path.clone());
        }
        for path in read_only {
            platform::bind_mount(path, path, true)?;
            made.push(path.clone());
        }
        Ok(())
    })();
    if let Err(e) = result {
        for m in made.iter().rev() {
            let _ = platform::unmount(m);
        }
        return Err(Error::io("masking paths in the container root", e));
    }
    Ok(made)
}

/// `dir` as an empty directory of mode 0555 (made if missing), the source masked directories
/// are bound from.
fn empty_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(_) => {
            std::fs::create_dir_all(dir)?;
            std::fs::symlink_metadata(dir)?
        }
    };
    if !meta.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if meta.permissions().mode() & 0o7777 != 0o555 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555))?;
    }
    Ok(())
}

impl MountPolicy {
    /// The real path to mount for kubelet's `host_path`, or why it may not be mounted.
    ///
    /// The mount is made from the resolved path, so swapping a symlink in the source after this
    /// check does not redirect the mount.
    pub fn resolve_source(&self, host_path: &str, container_path: &str) -> Result<PathBuf> {
        let given = Path::new(host_path);
        if host_path.is_empty() || !given.is_absolute() {
            return Err(Error::InvalidArgument(format!(
                "mount source {host_path:?} (for {container_path:?}) is not an absolute path"
            )));
        }
        let real = given.canonicalize().map_err(|e| {
            Error::InvalidArgument(format!(
                "mount source {host_path:?} (for {container_path:?}) does not exist: {e}"
            ))
        })?;
        // Whatever the allowed list says (empty allows everything else): `/` would give the
        // container the whole host, and darwin-cri's own directories every other pod's root, the
        // metadata store and the sockets that start processes as root.
        if let Some(why) = self.refused_always(&real) {
            return Err(Error::InvalidArgument(format!(
                "mount source {host_path:?} (for {container_path:?}) {}{why}; it is never \
                 mounted into a container, whatever mounts.allowed_host_paths says",
                if real != given {
                    format!("resolves to {}, which ", real.display())
                } else {
                    String::new()
                }
            )));
        }
        if self.allowed_host_paths.is_empty()
            || self.allowed_host_paths.iter().any(|allowed| {
                real.starts_with(allowed.canonicalize().as_deref().unwrap_or(allowed))
            })
        {
            return Ok(real);
        }
        let allowed = self
            .allowed_host_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let how = if real != given {
            format!("resolves through a symlink to {}, which is", real.display())
        } else {
            "is".into()
        };
        Err(Error::InvalidArgument(format!(
            "mount source {host_path:?} (for {container_path:?}) {how} outside the allowed \
             host paths ({allowed}); add its directory to mounts.allowed_host_paths to permit it"
        )))
    }

    /// Makes `source` visible at `target` (an existing directory or file of the same kind), and
    /// says how.
    ///
    /// bindfs mounts only directories: macOS cannot mount over a file (XNU refuses a mount point
    /// that is not a directory). A file (kubelet's termination log and hosts file) is hard-linked
    /// into the root instead, so the container's writes reach kubelet; across file systems it is
    /// copied, and then they do not. Linux FUSE could mount over a file, but takes the same path
    /// here so that the tests exercise what macOS does.
    pub fn mount(&self, source: &Path, target: &Path, readonly: bool) -> io::Result<Mounted> {
        match &self.mechanism {
            MountMechanism::Bind => {
                platform::bind_mount_nofollow(source, target, readonly).map(|()| Mounted::Mount)
            }
            MountMechanism::Bindfs { program, options } => {
                // Walked without following links right before bindfs resolves the path again: a
                // directory on the way swapped for a link since the check is refused here. bindfs
                // itself works by path, so the source's directories must not be writable by
                // builds (see the README's security model).
                let fd = platform::open_nofollow(source)?;
                if !std::fs::metadata(source)?.is_dir() {
                    drop(fd);
                    // A link is the host's file: a read-only one would take a root process's
                    // writes. Read-only file mounts are copies, read-only for everyone.
                    if readonly {
                        return read_only_copy(source, target);
                    }
                    return link_or_copy(source, target);
                }
                bindfs(program, options, source, target, readonly).map(|()| Mounted::Mount)
            }
        }
    }

    /// Whether `m`'s propagation can be given from `source`. Bind mounts take it from the
    /// source's mount, as containerd checks: HostToContainer needs a shared or slave mount there,
    /// Bidirectional a shared one. bindfs (macOS, and the twin's bindfs mode, which behaves the
    /// same) shows the host's later mounts below the source whatever is asked, and cannot carry a
    /// container's mounts back: Bidirectional is refused.
    fn check_propagation(&self, m: &crate::model::MountSpec, source: &Path) -> Result<()> {
        use platform::Propagation;
        let refuse = |why: String| {
            Err(Error::InvalidArgument(format!(
                "mount {:?} with propagation {:?}: {why}",
                m.container_path, m.propagation
            )))
        };
        match (&self.mechanism, m.propagation) {
            (_, Propagation::Private) => Ok(()),
            (MountMechanism::Bindfs { .. }, Propagation::HostToContainer) => Ok(()),
            (MountMechanism::Bindfs { .. }, Propagation::Bidirectional) => refuse(
                "bindfs volumes (macOS) cannot carry the container's mounts to the host".into(),
            ),
            (MountMechanism::Bind, p) => {
                let (shared, slave) = platform::propagation_of(source)
                    .at("reading the propagation of the mount holding", source)?;
                match p {
                    Propagation::Bidirectional if !shared => refuse(format!(
                        "{} is not on a shared mount (mount --make-rshared it first)",
                        source.display()
                    )),
                    Propagation::HostToContainer if !shared && !slave => refuse(format!(
                        "{} is on a private mount (mount --make-rshared or --make-rslave it first)",
                        source.display()
                    )),
                    _ => Ok(()),
                }
            }
        }
    }

    /// Makes kubelet's `mounts` inside `rootfs`, in order, each from its resolved host path in
    /// `sources`: a mount point of the source's kind is made inside the root (the container path
    /// resolved within it), then mounted by this policy's mechanism. Returns the mount points that
    /// are mounts (to undo when the container goes); on an error the ones already made are undone.
    pub(crate) fn mount_all(
        &self,
        rootfs: &Path,
        mounts: &[crate::model::MountSpec],
        sources: &[PathBuf],
        container_id: &str,
    ) -> Result<Vec<PathBuf>> {
        let inside = |p: &str| {
            resolve_in_root(rootfs, Path::new(p))
                .at("resolving in the container root", Path::new(p))
        };
        let mut mounted = Vec::new();
        let mount_result = (|| -> Result<()> {
            for (m, source) in mounts.iter().zip(sources) {
                let target = inside(&m.container_path)?;
                let is_dir = std::fs::metadata(source)
                    .at("inspecting mount source", source)?
                    .is_dir();
                if is_dir {
                    std::fs::create_dir_all(&target).at("creating mount point", &target)?;
                } else {
                    if let Some(parent) = target.parent() {
                        std::fs::create_dir_all(parent).at("creating", parent)?;
                    }
                    if std::fs::symlink_metadata(&target).is_err() {
                        std::fs::write(&target, b"").at("creating mount point", &target)?;
                    }
                }
                if std::fs::metadata(&target)
                    .map(|t| t.is_dir())
                    .unwrap_or(false)
                    != is_dir
                {
                    return Err(Error::InvalidArgument(format!(
                        "mount {:?}: source is a {} but the container path is not",
                        m.container_path,
                        if is_dir { "directory" } else { "file" }
                    )));
                }
                self.check_propagation(m, source)?;
                let how = self
                    .mount(source, &target, m.readonly)
                    .at("mounting onto", &target)?;
                if how == Mounted::Mount {
                    mounted.push(target.clone());
                    if self.mechanism == MountMechanism::Bind {
                        platform::set_propagation(&target, m.propagation)
                            .at("setting the mount propagation of", &target)?;
                    }
                }
                if how == Mounted::Copy && !m.readonly {
                    tracing::warn!(
                        container = container_id,
                        source = %source.display(),
                        "a file mount was copied into the root (another file system): the \
                         container's writes to it stay in the root"
                    );
                }
            }
            Ok(())
        })();
        if let Err(e) = mount_result {
            for t in mounted.iter().rev() {
                let _ = platform::unmount(t);
            }
            return Err(e);
        }
        Ok(mounted)
    }
}

/// How a mount source was made visible in a container root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mounted {
    /// A mount: unmounted when the container goes.
    Mount,
    /// A hard link to the host file: writes reach it.
    Link,
    /// A copy (source and root on different file systems): writes stay in the root.
    Copy,
}

fn read_only_copy(source: &Path, target: &Path) -> io::Result<Mounted> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(target);
    std::fs::copy(source, target)?;
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o444))?;
    Ok(Mounted::Copy)
}

fn link_or_copy(source: &Path, target: &Path) -> io::Result<Mounted> {
    let _ = std::fs::remove_file(target);
    match std::fs::hard_link(source, target) {
        Ok(()) => Ok(Mounted::Link),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            std::fs::copy(source, target)?;
            Ok(Mounted::Copy)
        }
        Err(e) => Err(e),
    }
}

/// Runs bindfs, which daemonizes once the mount is up: the mount exists when it returns.
fn bindfs(
    program: &Path,
    options: &[String],
    source: &Path,
    target: &Path,
    readonly: bool,
) -> io::Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(options);
    if readonly {
        cmd.arg("-o").arg("ro");
    }
    // bindfs stays as a daemon for as long as the mount: it must hold nothing of the server's.
    platform::inherit_only_stdio(&mut cmd);
    let out = cmd
        .arg(source)
        .arg(target)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("running {}: {e}", program.display())))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{} {} {} failed ({}): {}",
        program.display(),
        source.display(),
        target.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    )))
}

/// Whether the mount at `target` is dead: its FUSE daemon is gone, so every access fails
/// (ENOTCONN on Linux, ENXIO "Device not configured" on macOS), or hung, so an access does not
/// answer within two seconds (the thread asking is then left behind, blocked).
pub fn is_stale(target: &Path) -> bool {
    let (tx, rx) = std::sync::mpsc::channel();
    let path = target.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(
            std::fs::metadata(&path)
                .map(|_| ())
                .map_err(|e| e.raw_os_error()),
        );
    });
    match rx.recv_timeout(std::time::Duration::from_secs(2)) {
        Ok(Ok(())) => false,
        Ok(Err(code)) => matches!(
            code,
            Some(libc::ENOTCONN) | Some(libc::ENXIO) | Some(libc::EIO)
        ),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #26, 11: an empty allowed list (the default) allowed `/`, the socket directory
    /// and darwin-cri's own root and state.
    #[test]
    fn the_host_root_and_darwin_cris_own_directories_are_never_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (root, state) = (dir.path().join("root"), dir.path().join("run"));
        let data = dir.path().join("data");
        for d in [&root, &state, &data, &root.join("pods/p")] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::os::unix::fs::symlink("/", data.join("slash")).expect("symlink");
        let s = |p: &Path| p.display().to_string();
        for allowed in [vec![], vec![PathBuf::from("/")]] {
            let p = MountPolicy {
                allowed_host_paths: allowed,
                ..MountPolicy::default()
            }
            .with_own_paths([root.clone(), state.clone()]);
            for refused in [
                PathBuf::from("/"),
                data.join("slash"),
                root.clone(),
                root.join("pods/p"),
                state.clone(),
                dir.path().to_path_buf(),
            ] {
                let e = p
                    .resolve_source(&s(&refused), "/host")
                    .expect_err("refused");
                assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
                assert!(e.to_string().contains("never"), "{e}");
            }
            assert!(p.resolve_source(&s(&data), "/data").is_ok());
        }
    }

    fn policy(allowed: &[&Path]) -> MountPolicy {
        MountPolicy {
            mechanism: MountMechanism::Bind,
            allowed_host_paths: allowed.iter().map(|p| p.to_path_buf()).collect(),
            own_paths: Vec::new(),
        }
    }

    #[test]
    fn symlinks_out_of_the_allowed_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let allowed = dir.path().join("kubelet");
        let outside = dir.path().join("secrets");
        std::fs::create_dir_all(allowed.join("vol")).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::os::unix::fs::symlink(&outside, allowed.join("link")).expect("symlink");
        std::os::unix::fs::symlink(allowed.join("vol"), allowed.join("inner")).expect("symlink");
        let p = policy(&[&allowed]);
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();

        let ok = p
            .resolve_source(&s(&allowed.join("vol")), "/data")
            .expect("inside");
        assert_eq!(ok, allowed.canonicalize().expect("real").join("vol"));
        let inner = p
            .resolve_source(&s(&allowed.join("inner")), "/data")
            .expect("a symlink that stays inside is fine");
        assert_eq!(inner, ok, "the mount is made from the resolved path");

        let err = p
            .resolve_source(&s(&allowed.join("link")), "/data")
            .expect_err("symlink out")
            .to_string();
        assert!(
            err.contains("symlink") && err.contains("allowed_host_paths"),
            "{err}"
        );
        let err = p
            .resolve_source(&s(&outside), "/data")
            .expect_err("outside")
            .to_string();
        assert!(err.contains("outside the allowed host paths"), "{err}");
        let err = p
            .resolve_source(&s(&allowed.join("nothing")), "/data")
            .expect_err("missing")
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(p.resolve_source("relative/path", "/data").is_err());

        // No list: every existing path, symlinked or not.
        let open = policy(&[]);
        assert!(open.resolve_source(&s(&allowed.join("link")), "/d").is_ok());
    }

    #[test]
    fn a_live_directory_is_not_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(!is_stale(dir.path()));
        assert!(
            !is_stale(&dir.path().join("missing")),
            "absent is not stale"
        );
    }
}
