//! Deletion after the reply: a removed container's or pod's directory is renamed into
//! `ROOT/trash` (one rename, on the same volume), and a background thread at the lowest
//! priority unmounts what is still mounted below it and deletes it.
//!
//! Deleting a root is most of RemoveContainer's time (an overlay's unmount syncs its upper
//! volume, and every file of the root's changes is unlinked), and nothing observable depends on
//! it: the record is gone from the store and every List before the reply, the name is free at
//! once, and the directory is no longer where any lookup goes. The trash is its own crash-safe
//! record: what a crash leaves in it is deleted at the next start ([`Trash::empty`]).
//!
//! Where the rename cannot be made (a mount point that the OS refuses to move, a directory on
//! another volume) the directory is deleted where it is, by the same thread: its name (a random
//! id) is never used again, and a crash first leaves it to recovery as debris.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

use crate::fsutil::remove_tree;

/// The trash of one runtime root and the thread that empties it.
#[derive(Debug)]
pub(crate) struct Trash {
    dir: PathBuf,
    worker: Mutex<Option<Sender<PathBuf>>>,
}

impl Trash {
    /// The trash under `root` (made if missing); its thread starts at the first discard.
    pub fn new(root: &Path) -> std::io::Result<Trash> {
        let dir = root.join("trash");
        std::fs::create_dir_all(&dir)?;
        Ok(Trash {
            dir,
            worker: Mutex::new(None),
        })
    }

    /// Where discarded directories wait for deletion.
    #[cfg(test)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Takes `dir` out of its place at once and deletes it in the background (in place where it
    /// cannot be moved). A missing `dir` is success.
    pub fn discard(&self, dir: &Path) -> std::io::Result<()> {
        if std::fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = self.dir.join(format!("{name}.{}", unique()));
        match std::fs::rename(dir, &target) {
            Ok(()) => {
                self.send(target);
                Ok(())
            }
            Err(e) => {
                // Its id is never used again and recovery deletes it as debris if a crash
                // comes first: deleted in place, still after the reply.
                tracing::debug!(dir = %dir.display(), error = %e, "cannot move to the trash; deleting in place");
                self.send(dir.to_path_buf());
                Ok(())
            }
        }
    }

    /// Deletes in the background whatever the trash holds (what a crash left there).
    pub fn empty(&self) {
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                tracing::info!(path = %e.path().display(), "deleting what a removal left in the trash");
                self.send(e.path());
            }
        }
    }

    fn send(&self, path: PathBuf) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        let path = match worker.as_ref() {
            Some(tx) => match tx.send(path) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => path,
        };
        let (tx, rx) = channel::<PathBuf>();
        let spawned = std::thread::Builder::new()
            .name("darwin-cri-trash".into())
            .spawn(move || {
                if let Err(e) = platform::background_thread() {
                    tracing::debug!(error = %e, "the trash thread keeps its priority");
                }
                for path in rx {
                    if let Err(e) = remove_tree(&path) {
                        tracing::warn!(path = %path.display(), error = %e, "cannot delete from the trash; the next start tries again");
                    }
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(path);
                *worker = Some(tx);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no trash thread; deleting now");
                let _ = remove_tree(&path);
            }
        }
    }
}

/// A name no other discard of this process or an earlier one uses.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", crate::model::now_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_gone(p: &Path) -> bool {
        for _ in 0..200 {
            if std::fs::symlink_metadata(p).is_err() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_discarded_directory_leaves_at_once_and_is_deleted_after() {
        let root = tempfile::tempdir().expect("tempdir");
        let trash = Trash::new(root.path()).expect("trash");
        let dir = root.path().join("pods").join("c1");
        std::fs::create_dir_all(dir.join("rootfs/etc")).expect("mkdir");
        std::fs::write(dir.join("rootfs/etc/hosts"), b"x").expect("write");
        trash.discard(&dir).expect("discard");
        assert!(std::fs::symlink_metadata(&dir).is_err(), "moved at once");
        // The same name can be made again at once.
        std::fs::create_dir_all(&dir).expect("again");
        for _ in 0..200 {
            if std::fs::read_dir(trash.dir())
                .expect("list")
                .next()
                .is_none()
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            std::fs::read_dir(trash.dir())
                .expect("list")
                .next()
                .is_none(),
            "the trash is emptied"
        );
        trash
            .discard(&root.path().join("missing"))
            .expect("missing");
    }

    #[test]
    fn what_a_crash_left_in_the_trash_is_deleted_at_the_next_start() {
        let root = tempfile::tempdir().expect("tempdir");
        let left = root.path().join("trash").join("c2.1-0");
        std::fs::create_dir_all(left.join("rootfs/bin")).expect("mkdir");
        let trash = Trash::new(root.path()).expect("trash");
        trash.empty();
        assert!(wait_gone(&left), "emptied");
    }
}
