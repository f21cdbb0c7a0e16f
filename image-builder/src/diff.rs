//! What changed in a container's or a build step's root since its image: the input of `image
//! commit` and of each RUN of `image build` ([`root_changes`]).
//!
//! Two ways, by how the root was made:
//! - [`tree_changes`] walks the root beside the image's snapshot and compares each entry's type,
//!   mode, owner, size, mtime and link target. Roots that are clones (APFS on macOS, `rootfs =
//!   "copy"` on Linux) keep every unchanged file's metadata, so an entry that differs was written.
//! - [`overlay_changes`] reads an overlayfs upper directory (the Linux twin's layered roots): what
//!   is there was written; a 0/0 character device is a deletion; a directory marked opaque hides
//!   its lower content.
//!
//! `skip` names paths (relative to the root) that are not the container's own changes: what the
//! runtime put there (hosts, resolv.conf, /dev, mount points) and volumes; they and what is below
//! them are left out either way.

use std::collections::BTreeSet;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use image_service::Result;
use image_service::layer::{Change, sorted_names};
use platform::IoContext;
use runtime::ChangedRoot;

/// What changed in `root` since `lower` (the image's unpacked tree it was made from, asked for
/// only where the root is not layered), leaving out what the runtime put there, and the tree to
/// read the changed entries from (the overlay's upper directory where the root is layered, the
/// root itself otherwise).
pub fn root_changes(
    root: &ChangedRoot,
    lower: impl FnOnce() -> Result<PathBuf>,
) -> Result<(PathBuf, Vec<Change>)> {
    let skip = |p: &Path| {
        root.runtime_paths.iter().any(|r| p.starts_with(r))
            || root.runtime_entries.iter().any(|r| p == r)
    };
    match &root.upper {
        Some(upper) if upper.is_dir() => Ok((upper.clone(), overlay_changes(upper, &skip)?)),
        _ => Ok((
            root.rootfs.clone(),
            tree_changes(&root.rootfs, &lower()?, &skip)?,
        )),
    }
}

fn same_kind(a: &Metadata, b: &Metadata) -> bool {
    let (a, b) = (a.file_type(), b.file_type());
    (a.is_dir() && b.is_dir())
        || (a.is_file() && b.is_file())
        || (a.is_symlink() && b.is_symlink())
        || (a.is_fifo() && b.is_fifo())
        || (a.is_char_device() && b.is_char_device())
        || (a.is_block_device() && b.is_block_device())
        || (a.is_socket() && b.is_socket())
}

fn same_attributes(a: &Metadata, b: &Metadata) -> bool {
    a.mode() == b.mode() && a.uid() == b.uid() && a.gid() == b.gid()
}

/// Whether the entry was changed (its content or attributes), both being of the same kind.
fn changed(path: &Path, lower_path: &Path, a: &Metadata, b: &Metadata) -> Result<bool> {
    if !same_attributes(a, b) {
        return Ok(true);
    }
    if a.is_dir() {
        return Ok(false);
    }
    if a.file_type().is_symlink() {
        let ta = fs::read_link(path).ctx(|| format!("readlink {}", path.display()))?;
        let tb = fs::read_link(lower_path).ctx(|| format!("readlink {}", lower_path.display()))?;
        return Ok(ta != tb);
    }
    Ok(a.size() != b.size()
        || a.mtime() != b.mtime()
        || a.mtime_nsec() != b.mtime_nsec()
        || a.rdev() != b.rdev())
}

/// The changes of `root` against `lower` (the image's snapshot), sorted by path.
pub fn tree_changes(
    root: &Path,
    lower: &Path,
    skip: &dyn Fn(&Path) -> bool,
) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk(root, lower, Path::new(""), skip, &mut out)?;
    Ok(out)
}

fn walk(
    root: &Path,
    lower: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    let here = root.join(rel);
    let lower_here = lower.join(rel);
    let names = sorted_names(&here)?;
    let present: BTreeSet<&std::ffi::OsString> = names.iter().collect();
    let lower_names = if lower_here.is_dir() && !lower_here.is_symlink() {
        sorted_names(&lower_here)?
    } else {
        Vec::new()
    };
    let mut gone = lower_names
        .iter()
        .filter(|n| !present.contains(n))
        .map(|n| rel.join(n))
        .filter(|p| !skip(p))
        .peekable();
    for name in &names {
        let p = rel.join(name);
        // Deletions sort among the entries, by name.
        while let Some(g) = gone.next_if(|g| g < &p) {
            out.push(Change::Delete(g));
        }
        if skip(&p) {
            continue;
        }
        let path = root.join(&p);
        let meta = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        let lower_path = lower.join(&p);
        match fs::symlink_metadata(&lower_path) {
            Ok(lm) if same_kind(&meta, &lm) => {
                if changed(&path, &lower_path, &meta, &lm)? {
                    out.push(Change::Add(p.clone()));
                }
                if meta.is_dir() {
                    walk(root, lower, &p, skip, out)?;
                }
            }
            Ok(_) => {
                // Another kind of entry replaces the image's: what was below it is hidden.
                out.push(Change::Add(p.clone()));
                if meta.is_dir() {
                    out.push(Change::Opaque(p.clone()));
                    add_all(root, &p, skip, out)?;
                }
            }
            Err(_) => {
                out.push(Change::Add(p.clone()));
                if meta.is_dir() {
                    add_all(root, &p, skip, out)?;
                }
            }
        }
    }
    out.extend(gone.map(Change::Delete));
    Ok(())
}

/// Every entry below the directory `rel` of `root`, as added.
fn add_all(
    root: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    for name in sorted_names(&root.join(rel))? {
        let p = rel.join(&name);
        if skip(&p) {
            continue;
        }
        out.push(Change::Add(p.clone()));
        let meta = fs::symlink_metadata(root.join(&p)).ctx(|| format!("stat {}", p.display()))?;
        if meta.is_dir() {
            add_all(root, &p, skip, out)?;
        }
    }
    Ok(())
}

/// The changes recorded in an overlayfs upper directory, sorted by path.
pub fn overlay_changes(upper: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    overlay_walk(upper, Path::new(""), skip, &mut out)?;
    Ok(out)
}

fn overlay_walk(
    upper: &Path,
    rel: &Path,
    skip: &dyn Fn(&Path) -> bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    for name in sorted_names(&upper.join(rel))? {
        let p: PathBuf = rel.join(&name);
        if skip(&p) {
            continue;
        }
        let path = upper.join(&p);
        let meta = fs::symlink_metadata(&path).ctx(|| format!("stat {}", path.display()))?;
        if meta.file_type().is_char_device() && meta.rdev() == 0 {
            out.push(Change::Delete(p));
            continue;
        }
        out.push(Change::Add(p.clone()));
        if meta.is_dir() {
            if platform::is_overlay_opaque(&path) {
                out.push(Change::Opaque(p.clone()));
            }
            overlay_walk(upper, &p, skip, out)?;
        }
    }
    Ok(())
}
