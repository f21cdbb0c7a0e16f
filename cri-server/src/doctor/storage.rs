//! Storage: mounts with the configured mechanism, the termination-log file mount, the root's
//! file system and nosuid.

use super::*;

pub(super) fn mounts(config: &Config, scratch: Option<&Path>) -> Vec<Check> {
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
pub(super) fn file_mount(policy: &runtime::mounts::MountPolicy, dir: &Path) -> Check {
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
pub(super) fn root_nosuid(config: &Config) -> Check {
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

/// The roots made ahead for big images (runtime::pool): what they hold against their bound.
pub(super) fn root_pool(config: &Config) -> Check {
    let pool = config.runtime.root_pool.options();
    let copies =
        !platform::LAYERED_ROOTS || config.runtime.rootfs == crate::config::RootfsMode::Copy;
    if pool.size == 0 || !copies {
        return Check::ok(
            "root pool",
            if pool.size == 0 {
                "off (runtime.root_pool.size = 0): every copied root is made at CreateContainer"
            } else {
                "unused: containers' roots are layers, made in one mount"
            },
        );
    }
    let usage = runtime::pool::usage(&config.root);
    let detail = format!(
        "{} roots ready for {} images, {:.1} GiB of {:.1} GiB (size {} per image with at least {} files)",
        usage.roots,
        usage.images,
        usage.bytes as f64 / (1u64 << 30) as f64,
        pool.max_bytes as f64 / (1u64 << 30) as f64,
        pool.size,
        pool.min_files
    );
    if usage.bytes >= pool.max_bytes {
        Check::warn(
            "root pool",
            detail,
            "the pools are at their bound: big images beyond it make their roots at \
             CreateContainer; raise runtime.root_pool.max_mib or remove unused images",
        )
    } else {
        Check::ok("root pool", detail)
    }
}

pub(super) fn root_filesystem(config: &Config, scratch: Option<&Path>) -> Check {
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
