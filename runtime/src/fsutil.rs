//! Small filesystem helpers shared by the runtime and the monitor.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// Writes `bytes` to `path` through a temporary file and a rename, so readers see the old
/// content or the new, never a torn file, even if this process is killed half-way. No fsync: a
/// crash of the whole machine ends every container anyway.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Removes `dir` and everything in it, after unmounting every mount below it. It refuses to
/// delete anything while a mount remains, since deleting through a bind mount would delete the
/// host's files.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    for m in platform::mounts_under(dir)? {
        if let Err(e) = platform::unmount(&m) {
            tracing::warn!(mount = %m.display(), error = %e, "unmount failed");
        }
    }
    let left = platform::mounts_under(dir)?;
    if !left.is_empty() {
        return Err(std::io::Error::other(format!(
            "{} still has mounts below it ({}); not removing it",
            dir.display(),
            left[0].display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The path inside a container root that `path` names, relative and lexically clean, or `None`
/// when `..` would climb above the root (`../../etc`).
pub fn clean_in_root(path: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_paths_that_climb_out_are_refused() {
        assert_eq!(
            clean_in_root("/etc/hosts"),
            Some(PathBuf::from("etc/hosts"))
        );
        assert_eq!(clean_in_root("/a/b/../c/./d"), Some(PathBuf::from("a/c/d")));
        assert_eq!(clean_in_root("../../etc"), None);
        assert_eq!(clean_in_root("/data/../../etc"), None);
        assert_eq!(clean_in_root("/"), Some(PathBuf::new()));
    }

    #[test]
    fn atomic_write_replaces_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.json");
        write_atomic(&p, b"1").expect("write");
        write_atomic(&p, b"22").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"22");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
    }
}
