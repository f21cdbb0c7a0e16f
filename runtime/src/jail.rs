//! The layout every container root gets, so that macOS build tools work in a chroot.
//!
//! A chrooted macOS process sees only its root. Xcode, xcodebuild, swift and the simulators
//! expect parts of a macOS system layout that a minimal image may lack: `/tmp`, `/var` and `/etc`
//! as links into `/private`, preference and cache directories under `/Library`, and a writable
//! home with its own `~/Library` (DerivedData lives in `~/Library/Developer`). Every root gets
//! the entries below, created only where the image has nothing at that path: an image's own
//! files, directories and links are never replaced.
//!
//! | path | what | why |
//! | --- | --- | --- |
//! | `/private/tmp` | dir 1777 | `/tmp`; `TMPDIR` when the image sets none |
//! | `/private/var/tmp` | dir 1777 | `confstr(_CS_DARWIN_USER_TEMP_DIR)` fallbacks, clang module caches |
//! | `/private/var/run` | dir 755 | where the mDNSResponder socket is proxied (DNS in the root) |
//! | `/private/var/folders` | dir 755 | per-user temp and cache roots of Foundation |
//! | `/private/var/db` | dir 755 | timezone and other system databases some tools read |
//! | `/private/etc` | dir 755 | hosts, resolv.conf, hostname, passwd |
//! | `/tmp`, `/var`, `/etc` | links to `private/...` | the macOS layout; absolute paths keep working |
//! | `/Library/Preferences` | dir 755 | system preferences (`defaults read /Library/...`) |
//! | `/Library/Caches` | dir 1777 | shared caches |
//! | `/Library/Developer` | dir 755 | CoreSimulator, command line tools' shared data |
//! | `/Users/Shared` | dir 1777 | shared scratch space between users |
//! | `$HOME` | dir 755, the run-as user's | a writable home (not for `/`, `/nonexistent`, `/var/empty`) |
//! | `$HOME/Library/{Preferences,Caches,Developer,Logs}` | dirs 755, the user's | `defaults write`, DerivedData, build logs |
//!
//! Missing parents of the home (`/Users`, `/opt`) are made as root's, 755: only the home and
//! what is below it belong to the user.
//!
//! `/dev` is populated separately (the minimal device set).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use image_service::safe_path::resolve_in_root;

use crate::Result;
use crate::error::IoContext;

/// Changes with the layout, so that layers made by an older version are not reused.
pub const LAYOUT_VERSION: u32 = 2;

/// Links made where the image has nothing at the path: (path, target relative to `/`).
pub const LINKS: &[(&str, &str)] = &[
    ("/tmp", "private/tmp"),
    ("/var", "private/var"),
    ("/etc", "private/etc"),
];

/// Directories made where missing, with their mode.
pub const DIRECTORIES: &[(&str, u32)] = &[
    ("/private/tmp", 0o1777),
    ("/private/var/tmp", 0o1777),
    ("/private/var/run", 0o755),
    ("/private/var/folders", 0o755),
    ("/private/var/db", 0o755),
    ("/private/etc", 0o755),
    ("/Library/Preferences", 0o755),
    ("/Library/Caches", 0o1777),
    ("/Library/Developer", 0o755),
    ("/Users/Shared", 0o1777),
];

/// Directories made in the run-as user's home, owned by the user.
pub const HOME_DIRECTORIES: &[&str] = &[
    "Library/Preferences",
    "Library/Caches",
    "Library/Developer",
    "Library/Logs",
];

/// Homes that mean "no home" (nobody's): never created.
const NO_HOME: &[&str] = &["", "/", "/nonexistent", "/var/empty", "/dev/null"];

/// Lays out `rootfs` (see the module docs) for a process running as `uid:gid` with home `home`
/// (a path inside the root).
pub fn prepare(rootfs: &Path, uid: u32, gid: u32, home: &str) -> Result<()> {
    for (link, target) in LINKS {
        let at = rootfs.join(link.trim_start_matches('/'));
        if std::fs::symlink_metadata(&at).is_err() {
            std::os::unix::fs::symlink(target, &at).at("linking", &at)?;
        }
    }
    for (dir, mode) in DIRECTORIES {
        make_dir(rootfs, Path::new(dir), *mode, None)?;
    }
    if NO_HOME.contains(&home) {
        return Ok(());
    }
    let home = Path::new(home);
    let owner = Some(Owner {
        uid,
        gid,
        from: home,
    });
    make_dir(rootfs, home, 0o755, owner)?;
    for dir in HOME_DIRECTORIES {
        make_dir(rootfs, &home.join(dir), 0o755, owner)?;
    }
    Ok(())
}

/// Every path [`prepare`] may make for a user with home `home`, parents included (absolute,
/// inside the root): what `image commit` leaves out where the image had nothing there.
pub fn layout_paths(home: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = LINKS.iter().map(|(l, _)| PathBuf::from(l)).collect();
    let mut dirs: Vec<PathBuf> = DIRECTORIES.iter().map(|(d, _)| PathBuf::from(d)).collect();
    if !NO_HOME.contains(&home) {
        dirs.push(PathBuf::from(home));
        dirs.extend(HOME_DIRECTORIES.iter().map(|d| Path::new(home).join(d)));
    }
    for d in dirs {
        for a in d.ancestors() {
            if a != Path::new("/") && !out.iter().any(|o| o == a) {
                out.push(a.to_path_buf());
            }
        }
    }
    out
}

/// Who gets the directories made at or below `from`.
#[derive(Debug, Clone, Copy)]
struct Owner<'a> {
    uid: u32,
    gid: u32,
    from: &'a Path,
}

/// Creates `path` (inside the root) and each missing parent with `mode` (owned by `owner` at and
/// below its `from`); existing entries are left as they are. Returns the real path.
fn make_dir(rootfs: &Path, path: &Path, mode: u32, owner: Option<Owner<'_>>) -> Result<PathBuf> {
    let mut missing = Vec::new();
    let mut cur = path.to_path_buf();
    // The image decides where its paths lead (links resolve inside the root); only what does
    // not exist yet is made, from the top down.
    let real = loop {
        let real = resolve_in_root(rootfs, &cur).at("resolving in the container root", &cur)?;
        if std::fs::symlink_metadata(&real).is_ok() || cur.parent().is_none() {
            break real;
        }
        missing.push(cur.clone());
        cur = match cur.parent() {
            Some(p) => p.to_path_buf(),
            None => break real,
        };
    };
    let mut last = real;
    for p in missing.iter().rev() {
        let real = resolve_in_root(rootfs, p).at("resolving in the container root", p)?;
        // A link of the image may lead where parents are missing too: those are made as well.
        let made = match std::fs::create_dir(&real) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(&real),
            other => other,
        };
        match made {
            Ok(()) => {
                std::fs::set_permissions(&real, std::fs::Permissions::from_mode(mode))
                    .at("chmod", &real)?;
                if let Some(o) = owner.filter(|o| p.starts_with(o.from)) {
                    std::os::unix::fs::lchown(&real, Some(o.uid), Some(o.gid))
                        .at("chown", &real)?;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(crate::Error::io(format!("creating {}", real.display()), e)),
        }
        last = real;
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn an_empty_root_gets_the_macos_layout_and_a_home_owned_by_the_user() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let root_user = nix::unistd::geteuid().is_root();
        let (uid, gid) = if root_user {
            (501, 20)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        prepare(root, uid, gid, "/Users/build").expect("prepare");
        for (link, target) in LINKS {
            let at = root.join(link.trim_start_matches('/'));
            assert_eq!(std::fs::read_link(&at).expect("link"), Path::new(target));
        }
        for (d, mode) in DIRECTORIES {
            let m = std::fs::metadata(root.join(d.trim_start_matches('/'))).expect(d);
            assert!(m.is_dir(), "{d}");
            assert_eq!(m.mode() & 0o7777, *mode, "{d}");
        }
        let tmp = std::fs::metadata(root.join("tmp")).expect("tmp through its link");
        assert_eq!(tmp.mode() & 0o7777, 0o1777);
        for d in [
            "Users/build",
            "Users/build/Library",
            "Users/build/Library/Logs",
        ] {
            let m = std::fs::metadata(root.join(d)).expect(d);
            assert_eq!((m.uid(), m.gid()), (uid, gid), "{d} belongs to the user");
        }
        // A home whose parents are missing: they are root's.
        prepare(root, uid, gid, "/opt/builds/me").expect("prepare");
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(std::fs::metadata(root.join("opt")).expect("opt").uid(), me);
        assert_eq!(
            std::fs::metadata(root.join("opt/builds/me"))
                .expect("home")
                .uid(),
            uid
        );
        // Shared parents are not handed to the user.
        assert_eq!(
            std::fs::metadata(root.join("Users")).expect("Users").uid(),
            nix::unistd::geteuid().as_raw()
        );
    }

    #[test]
    fn the_image_keeps_its_own_entries() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        std::fs::create_dir_all(root.join("data/tmp")).expect("mkdir");
        std::os::unix::fs::symlink("data/tmp", root.join("tmp")).expect("symlink");
        std::fs::create_dir_all(root.join("home/me")).expect("mkdir");
        std::fs::set_permissions(root.join("home/me"), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        prepare(root, 0, 0, "/home/me").expect("prepare");
        assert!(
            std::fs::symlink_metadata(root.join("etc"))
                .expect("etc")
                .is_dir(),
            "a real /etc stays"
        );
        assert_eq!(
            std::fs::read_link(root.join("tmp")).expect("link"),
            Path::new("data/tmp")
        );
        assert_eq!(
            std::fs::metadata(root.join("home/me"))
                .expect("home")
                .mode()
                & 0o7777,
            0o700,
            "an existing home keeps its mode"
        );
        assert!(root.join("home/me/Library/Preferences").is_dir());
        assert!(
            root.join("private/var/run").is_dir(),
            "/var now leads to /private/var"
        );
    }

    #[test]
    fn a_dangling_link_in_the_image_gets_its_target_made() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::os::unix::fs::symlink("Volumes/Data/Users", root.join("Users")).expect("symlink");
        prepare(root, 0, 0, "/Users/ci").expect("prepare");
        assert!(
            root.join("Volumes/Data/Users/ci/Library/Preferences")
                .is_dir()
        );
        assert!(root.join("Volumes/Data/Users/Shared").is_dir());
    }

    #[test]
    fn links_in_the_image_cannot_lead_the_layout_out_of_the_root() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::os::unix::fs::symlink(outside.path(), root.join("Library")).expect("symlink");
        std::os::unix::fs::symlink(outside.path(), root.join("Users")).expect("symlink");
        prepare(&root, 0, 0, "/Users/x").expect("prepare");
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("ls").count(),
            0,
            "nothing made outside"
        );
    }
}
