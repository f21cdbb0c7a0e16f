//! The device nodes every container root gets: the minimal set a program expects in /dev.
//! They are made by the runtime, with the host's own device numbers, whatever the image has
//! at those names.

use std::path::Path;

/// Creates the minimal device set in `dev_dir`: each of null, zero, full, random, urandom and
/// tty that the host has, as a node with the host's device number (so the same code is right on
/// Linux and macOS, whose numbers differ), plus `shm/` (1777) and `pts/`.
pub(crate) fn populate_dev(dev_dir: &Path) -> std::io::Result<()> {
    use nix::sys::stat::{Mode, SFlag, mknod};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // `dev_dir` was resolved inside the container root; its entries come from the image and
    // are untrusted: whatever is there (a symlink to a host file, say) is replaced, never
    // followed, before a node or directory is made and its mode set.
    std::fs::create_dir_all(dev_dir)?;
    let replace =
        |path: &Path, keep: &dyn Fn(&std::fs::Metadata) -> bool| -> std::io::Result<bool> {
            match std::fs::symlink_metadata(path) {
                Ok(m) if keep(&m) => Ok(true),
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).map(|()| false),
                Ok(_) => std::fs::remove_file(path).map(|()| false),
                Err(_) => Ok(false),
            }
        };
    for name in ["null", "zero", "full", "random", "urandom", "tty"] {
        let Ok(host) = std::fs::metadata(Path::new("/dev").join(name)) else {
            continue;
        };
        let path = dev_dir.join(name);
        let same = |m: &std::fs::Metadata| {
            std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type())
                && m.rdev() == host.rdev()
        };
        if !replace(&path, &same)? {
            mknod(
                &path,
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                host.rdev() as _,
            )?;
        }
        // mknod honours the umask; the devices must be usable by any container user. The path
        // is a device node now, not a link: the mode lands on it.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    }
    for (name, mode) in [("pts", 0o755), ("shm", 0o1777)] {
        let path = dev_dir.join(name);
        if !replace(&path, &|m| m.is_dir())? {
            std::fs::create_dir(&path)?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn populate_dev_replaces_image_symlinks_instead_of_following_them() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "secret").expect("write");
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let victim_dir = dir.path().join("victim-dir");
        std::fs::create_dir(&victim_dir).expect("mkdir");
        std::fs::set_permissions(&victim_dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        let dev = dir.path().join("rootfs/dev");
        std::fs::create_dir_all(&dev).expect("mkdir");
        std::os::unix::fs::symlink(&victim, dev.join("null")).expect("symlink");
        std::os::unix::fs::symlink(&victim_dir, dev.join("shm")).expect("symlink");
        populate_dev(&dev).expect("populate");
        let mode = |p: &Path| {
            std::fs::symlink_metadata(p)
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode(&victim), 0o600, "the host file's mode is untouched");
        assert_eq!(mode(&victim_dir), 0o700);
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "secret");
        assert!(
            std::fs::symlink_metadata(dev.join("null"))
                .expect("stat")
                .file_type()
                .is_char_device()
        );
        assert!(
            std::fs::symlink_metadata(dev.join("shm"))
                .expect("stat")
                .is_dir()
        );
        assert_eq!(mode(&dev.join("shm")), 0o1777);
    }
}
