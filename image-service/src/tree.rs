//! Copying directory trees: the [`TreeCloner`] trait and a portable implementation.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::sys::stat::{Mode, SFlag};

/// Clones a directory tree. Implementations may use copy-on-write (APFS `clonefile`,
/// reflinks) or plain copies.
pub trait TreeCloner: Send + Sync + std::fmt::Debug {
    /// Creates `dst` (which must not exist) as a copy of `src`, preserving file types,
    /// modes, ownership, mtimes, symlinks (never followed) and hard links within the tree.
    fn clone_tree(&self, src: &Path, dst: &Path) -> io::Result<()>;
}

/// Portable [`TreeCloner`]: walks the tree, copies regular files with
/// `reflink_or_copy` (copy-on-write where the filesystem supports it).
#[derive(Debug, Default, Clone, Copy)]
pub struct CopyCloner;

impl TreeCloner for CopyCloner {
    fn clone_tree(&self, src: &Path, dst: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(src)?;
        let mut copy = Copy {
            link_files: false,
            links: HashMap::new(),
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        copy.entry(src, dst, &meta)
    }
}

/// [`TreeCloner`] for image snapshots where no copy-on-write clone exists: directories,
/// symlinks and special files are copied, regular files are hard links to the parent
/// snapshot's (a copy when linking fails: another filesystem, too many links).
///
/// Only valid because snapshots are never written in place: the unpacker replaces a file by
/// unlinking it and creating a new one, and container roots are overlays over snapshots or
/// real copies of them ([`CopyCloner`]). Building a snapshot then costs a walk of the parent
/// instead of a copy of its data.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkCloner;

impl TreeCloner for LinkCloner {
    fn clone_tree(&self, src: &Path, dst: &Path) -> io::Result<()> {
        let meta = fs::symlink_metadata(src)?;
        let mut copy = Copy {
            link_files: true,
            links: HashMap::new(),
            owner: (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            ),
        };
        copy.entry(src, dst, &meta)
    }
}

/// The fastest correct [`TreeCloner`] for a container root on this OS: one copy-on-write clone
/// of the whole tree where the OS has it (APFS `clonefile` on macOS), else [`CopyCloner`]
/// (reflinks where the file system has them, plain copies otherwise).
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeCloner;

impl TreeCloner for NativeCloner {
    fn clone_tree(&self, src: &Path, dst: &Path) -> io::Result<()> {
        match platform::clone_tree(src, dst) {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => CopyCloner.clone_tree(src, dst),
            other => other,
        }
    }
}

/// [`NativeCloner`], shared.
pub fn native_cloner() -> std::sync::Arc<dyn TreeCloner> {
    std::sync::Arc::new(NativeCloner)
}

/// How one image snapshot becomes the base of the next layer's (never written in place
/// afterwards): a clone where the OS clones trees in one call (each is free of data copies
/// already), else [`LinkCloner`]: a snapshot shares its parent's files.
pub fn snapshot_cloner() -> std::sync::Arc<dyn TreeCloner> {
    if platform::CLONES_TREES {
        std::sync::Arc::new(NativeCloner)
    } else {
        std::sync::Arc::new(LinkCloner)
    }
}

/// One tree copy in progress.
struct Copy {
    /// Hard-link regular files to the source instead of copying them.
    link_files: bool,
    /// First copy of each multiply-linked inode, to link the others to.
    links: HashMap<(u64, u64), PathBuf>,
    /// Who new entries belong to: ownership is only changed where it differs, since on some
    /// filesystems every extra metadata update of a fresh inode costs as much as creating it.
    owner: (u32, u32),
}

/// Changes ownership without following symlinks; EPERM is ignored when not root.
pub(crate) fn lchown_quiet(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EPERM) && !nix::unistd::geteuid().is_root() =>
        {
            Ok(())
        }
        other => other,
    }
}

impl Copy {
    fn chown(&self, dst: &Path, meta: &Metadata) -> io::Result<()> {
        if (meta.uid(), meta.gid()) == self.owner {
            return Ok(());
        }
        lchown_quiet(dst, meta.uid(), meta.gid())
    }

    fn entry(&mut self, src: &Path, dst: &Path, meta: &Metadata) -> io::Result<()> {
        let ft = meta.file_type();
        let mtime = FileTime::from_last_modification_time(meta);
        let atime = FileTime::from_last_access_time(meta);
        let mode = meta.mode() & 0o7777;
        if ft.is_dir() {
            fs::create_dir(dst)?;
            for entry in fs::read_dir(src)? {
                let entry = entry?;
                let child_meta = entry.metadata()?; // does not follow symlinks
                self.entry(&entry.path(), &dst.join(entry.file_name()), &child_meta)?;
            }
            self.chown(dst, meta)?;
            fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
            filetime::set_symlink_file_times(dst, atime, mtime)?;
            return Ok(());
        }
        if self.link_files && ft.is_file() {
            match fs::hard_link(src, dst) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(path = %src.display(), error = %e, "cannot link; copying")
                }
            }
        }
        let links = &mut self.links;
        if !ft.is_symlink() && meta.nlink() > 1 && !self.link_files {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = links.get(&key) {
                return fs::hard_link(first, dst);
            }
            links.insert(key, dst.to_path_buf());
        }
        if ft.is_symlink() {
            let target = fs::read_link(src)?;
            std::os::unix::fs::symlink(&target, dst)?;
            // A symlink's own timestamps mean nothing to the programs that follow it; setting
            // them would double the cost of copying a tree of links (busybox, toolchains).
            return self.chown(dst, meta);
        }
        if ft.is_file() {
            reflink_copy::reflink_or_copy(src, dst)?;
        } else {
            use std::os::unix::fs::FileTypeExt;
            let perm = Mode::from_bits_truncate((mode & 0o777) as _);
            let res = if ft.is_fifo() {
                nix::unistd::mkfifo(dst, perm)
            } else if ft.is_char_device() || ft.is_block_device() {
                let flag = if ft.is_char_device() {
                    SFlag::S_IFCHR
                } else {
                    SFlag::S_IFBLK
                };
                nix::sys::stat::mknod(dst, flag, perm, meta.rdev() as _)
            } else {
                tracing::warn!(path = %src.display(), "skipping unsupported file type while copying");
                return Ok(());
            };
            if let Err(e) = res {
                if ft.is_fifo() {
                    return Err(e.into());
                }
                tracing::warn!(path = %src.display(), error = %e, "cannot create device node; skipped");
                links.retain(|_, v| v != dst);
                return Ok(());
            }
        }
        // chown before chmod: chown clears setuid/setgid bits.
        self.chown(dst, meta)?;
        fs::set_permissions(dst, fs::Permissions::from_mode(mode))?;
        filetime::set_symlink_file_times(dst, atime, mtime)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn link_cloner_shares_files_and_copies_the_rest() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("sub")).unwrap();
        fs::write(src.join("sub/f"), b"data").unwrap();
        fs::set_permissions(src.join("sub"), fs::Permissions::from_mode(0o750)).unwrap();
        symlink("sub/f", src.join("l")).unwrap();
        let dst = d.path().join("dst");
        LinkCloner.clone_tree(&src, &dst).unwrap();
        let (a, b) = (
            fs::metadata(src.join("sub/f")).unwrap(),
            fs::metadata(dst.join("sub/f")).unwrap(),
        );
        assert_eq!(a.ino(), b.ino(), "regular files are shared");
        assert_ne!(
            fs::metadata(src.join("sub")).unwrap().ino(),
            fs::metadata(dst.join("sub")).unwrap().ino()
        );
        assert_eq!(
            fs::metadata(dst.join("sub")).unwrap().mode() & 0o7777,
            0o750
        );
        assert_eq!(fs::read_link(dst.join("l")).unwrap(), Path::new("sub/f"));
        // Replacing the file in the clone (as the unpacker does) leaves the source alone.
        fs::remove_file(dst.join("sub/f")).unwrap();
        fs::write(dst.join("sub/f"), b"new").unwrap();
        assert_eq!(fs::read(src.join("sub/f")).unwrap(), b"data");
    }

    #[test]
    fn copies_types_modes_links() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        fs::create_dir_all(src.join("bin")).unwrap();
        fs::write(src.join("bin/busybox"), b"#!binary").unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::chown(src.join("bin/busybox"), Some(0), Some(0)).unwrap();
        fs::set_permissions(src.join("bin/busybox"), fs::Permissions::from_mode(0o4755)).unwrap();
        for i in 0..50 {
            symlink("busybox", src.join(format!("bin/tool{i}"))).unwrap();
        }
        symlink("/nonexistent/abs", src.join("dangling")).unwrap();
        fs::hard_link(src.join("bin/busybox"), src.join("bin/hl")).unwrap();
        fs::create_dir(src.join("priv")).unwrap();
        fs::write(src.join("priv/secret"), b"s").unwrap();
        std::os::unix::fs::lchown(src.join("priv/secret"), Some(1234), Some(4321)).unwrap();
        fs::set_permissions(src.join("priv"), fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        let old = FileTime::from_unix_time(1_000_000, 0);
        filetime::set_symlink_file_times(src.join("priv/secret"), old, old).unwrap();
        filetime::set_symlink_file_times(src.join("bin/tool3"), old, old).unwrap();

        let dst = d.path().join("dst");
        CopyCloner.clone_tree(&src, &dst).unwrap();
        assert!(
            CopyCloner.clone_tree(&src, &dst).is_err(),
            "dst must not exist"
        );

        let m = fs::symlink_metadata(dst.join("bin/busybox")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        assert_eq!(fs::read(dst.join("bin/busybox")).unwrap(), b"#!binary");
        let hl = fs::symlink_metadata(dst.join("bin/hl")).unwrap();
        assert_eq!(hl.ino(), m.ino(), "hard link preserved");
        assert_ne!(
            m.ino(),
            fs::metadata(src.join("bin/busybox")).unwrap().ino()
        );
        assert_eq!(
            fs::read_link(dst.join("bin/tool7")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent/abs")
        );
        let p = fs::symlink_metadata(dst.join("priv")).unwrap();
        assert_eq!(p.mode() & 0o7777, 0o700);
        let s = fs::symlink_metadata(dst.join("priv/secret")).unwrap();
        assert_eq!((s.uid(), s.gid()), (1234, 4321));
        assert_eq!(FileTime::from_last_modification_time(&s), old);
        let f = fs::symlink_metadata(dst.join("fifo")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&f.file_type()));
        assert_eq!(f.mode() & 0o777, 0o640);
        // the copy is independent
        fs::write(dst.join("priv/secret"), b"changed").unwrap();
        assert_eq!(fs::read(src.join("priv/secret")).unwrap(), b"s");
    }
}
