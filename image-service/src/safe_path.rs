//! Scoped path resolution: the filepath-securejoin / containerd `fs.RootPath` algorithm.
//!
//! Every path is interpreted relative to a root directory: `..` never climbs above the
//! root and symlinks (absolute or relative) are resolved as if the root were `/`.
//! The result is always `root` joined with a clean relative path.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Maximum number of symlinks followed during one resolution.
pub const MAX_SYMLINKS: u32 = 255;

fn push_components(queue: &mut VecDeque<OsString>, path: &Path, front: bool) {
    let comps: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    if front {
        for c in comps.into_iter().rev() {
            queue.push_front(c);
        }
    } else {
        queue.extend(comps);
    }
}

/// Resolves `unsafe_path` inside `root`, following every symlink (including the last
/// component) within the root. Non-existent components are appended as they are.
///
/// Returns `ELOOP` after [`MAX_SYMLINKS`] symlinks.
pub fn resolve_in_root(root: &Path, unsafe_path: &Path) -> io::Result<PathBuf> {
    let mut queue = VecDeque::new();
    push_components(&mut queue, unsafe_path, false);
    let mut current = PathBuf::new();
    let mut links = 0u32;
    while let Some(comp) = queue.pop_front() {
        if comp == ".." {
            current.pop();
            continue;
        }
        let candidate = current.join(&comp);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(nix::libc::ELOOP));
                }
                let target = std::fs::read_link(&full)?;
                if target.is_absolute() {
                    current = PathBuf::new();
                }
                push_components(&mut queue, &target, true);
            }
            // Existing non-symlinks, and anything that does not exist (or cannot be
            // inspected) is appended as is: the result stays inside the root anyway.
            _ => current = candidate,
        }
    }
    Ok(root.join(current))
}

/// Resolves everything but the last component of `path` inside `root`; the last
/// component is returned as is and never followed. Use it to create entries.
///
/// An empty path, or one whose last component is `.` or `..`, is an `InvalidInput` error.
pub fn resolve_parent_in_root(root: &Path, path: &Path) -> io::Result<(PathBuf, OsString)> {
    let invalid = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {path:?} has no usable final component"),
        )
    };
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.ends_with(b"/.") || bytes == b"." {
        return Err(invalid());
    }
    let name = match path.components().next_back() {
        Some(Component::Normal(n)) => n.to_os_string(),
        _ => return Err(invalid()),
    };
    let parent = path.parent().unwrap_or(Path::new(""));
    let resolved = resolve_in_root(root, parent)?;
    Ok((resolved, name))
}

/// Lexically cleans a path to a relative path without `.`/`..`/root components
/// (`..` at the top is dropped, like `path.Clean("/" + p)`).
pub fn clean_relative(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        (dir, root)
    }

    #[test]
    fn plain_and_dotdot() {
        let (_d, root) = setup();
        assert_eq!(
            resolve_in_root(&root, Path::new("etc")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/etc/")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("../../../etc/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/usr/../../x/./y")).unwrap(),
            root.join("x/y")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("")).unwrap(),
            root.join("")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("/..")).unwrap(),
            root.join("")
        );
    }

    #[test]
    fn absolute_symlinks_stay_inside() {
        let (d, root) = setup();
        symlink("/etc", root.join("abs")).unwrap();
        symlink(d.path(), root.join("outside")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        let outside_rel = d.path().strip_prefix("/").unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("outside/root")).unwrap(),
            root.join(outside_rel).join("root")
        );
    }

    #[test]
    fn relative_symlink_escape_is_clamped() {
        let (_d, root) = setup();
        symlink("../../../../..", root.join("usr/bin/up")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("usr/bin/up/etc/x")).unwrap(),
            root.join("etc/x")
        );
        symlink("../bin", root.join("usr/bin/sib")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("usr/bin/sib")).unwrap(),
            root.join("usr/bin")
        );
    }

    #[test]
    fn chains_and_last_component() {
        let (_d, root) = setup();
        symlink("b", root.join("a")).unwrap();
        symlink("/c", root.join("b")).unwrap();
        symlink("etc/../usr", root.join("c")).unwrap();
        assert_eq!(
            resolve_in_root(&root, Path::new("a")).unwrap(),
            root.join("usr")
        );
        assert_eq!(
            resolve_in_root(&root, Path::new("a/bin/sh")).unwrap(),
            root.join("usr/bin/sh")
        );
        // the parent variant does not follow the last component
        let (p, n) = resolve_parent_in_root(&root, Path::new("a/bin/a")).unwrap();
        assert_eq!(p, root.join("usr/bin"));
        assert_eq!(n, "a");
        let (p, n) = resolve_parent_in_root(&root, Path::new("/a")).unwrap();
        assert_eq!(p, root.join(""));
        assert_eq!(n, "a");
        for bad in ["", "/", "a/..", ".", "a/."] {
            assert!(
                resolve_parent_in_root(&root, Path::new(bad)).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn symlink_loops() {
        let (_d, root) = setup();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("/loop1", root.join("loop2")).unwrap();
        symlink("self/x", root.join("self")).unwrap();
        for p in ["loop1", "loop2/x", "self"] {
            let err = resolve_in_root(&root, Path::new(p)).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(nix::libc::ELOOP), "{p}");
        }
    }

    #[test]
    fn clean() {
        assert_eq!(
            clean_relative(Path::new("/abs/../../evil")),
            PathBuf::from("evil")
        );
        assert_eq!(clean_relative(Path::new("./a/./b/")), PathBuf::from("a/b"));
        assert_eq!(clean_relative(Path::new("../..")), PathBuf::new());
    }
}
