//! Roots made ahead ("clone ahead", docs/architecture.md): where a container's root is a copy
//! of its image (APFS clones on macOS, the twin's `rootfs = "copy"`), making it costs time in
//! proportion to the image's files (seconds for an Xcode-sized image) on CreateContainer's
//! path. The pool makes such roots in the background, at the lowest priority, after a pull and
//! after each use, so that CreateContainer renames a ready one into place.
//!
//! On disk, under `ROOT/pool/<image digest>/`: `r-<n>` are ready roots (exact copies of the
//! image's snapshot), `r-<n>.tmp` is one being made (renamed to `r-<n>` only once complete, so a
//! crash leaves only `.tmp` entries half made), and `bytes` is the disk one root of the image
//! takes (measured on the first). Only images with at least `min_files` entries get a pool;
//! the pools together never hold more than `max_bytes` (counted in allocated blocks: on APFS a
//! clone shares its blocks, so the bound is conservative there). Removing an image removes its
//! pool ([`RootPool::prune`]); a restart deletes half-made roots, keeps the ready ones of images
//! that still exist, and fills the pools again ([`RootPool::recover`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};

use image_service::ImageStore;
use image_service::tree::TreeCloner;

use crate::trash::Trash;

/// How many roots to keep ready, for which images, within what disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Ready roots per image; 0 turns the pool off.
    pub size: usize,
    /// Images with fewer entries (files, directories, links) than this get no pool: their
    /// roots are made on CreateContainer's path, as without a pool.
    pub min_files: u64,
    /// Disk the pools may take together, in bytes.
    pub max_bytes: u64,
}

/// What the pools hold on disk now (for metrics and doctor).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolUsage {
    /// Ready roots, over all images.
    pub roots: u64,
    /// Images with a pool directory.
    pub images: u64,
    /// Disk the ready and half-made roots take, in bytes.
    pub bytes: u64,
}

const READY_PREFIX: &str = "r-";
const MAKING_SUFFIX: &str = ".tmp";
const BYTES_FILE: &str = "bytes";

/// What the pools under `root` hold (read from the disk: doctor calls it without a server).
pub fn usage(root: &Path) -> PoolUsage {
    let mut usage = PoolUsage::default();
    for (_, dir) in list(&root.join("pool")) {
        if !dir.is_dir() {
            continue;
        }
        usage.images += 1;
        let per_root = root_bytes(&dir).unwrap_or(0);
        for (name, _) in list(&dir) {
            if name.starts_with(READY_PREFIX) {
                usage.bytes += per_root;
                if !name.ends_with(MAKING_SUFFIX) {
                    usage.roots += 1;
                }
            }
        }
    }
    usage
}

/// The pools of one runtime root.
#[derive(Debug)]
pub(crate) struct RootPool {
    dir: PathBuf,
    opts: PoolOptions,
    images: Arc<ImageStore>,
    cloner: Arc<dyn TreeCloner>,
    trash: Arc<Trash>,
    /// Images found to have fewer than `min_files` entries (not measured again).
    small: SmallImages,
    worker: Mutex<Option<Sender<String>>>,
}

/// The pool directory's name for image `id` ("sha256:HEX" → "HEX"); `None` for an id that is
/// not a plain digest (never a path).
fn key(image_id: &str) -> Option<String> {
    let hex = image_id.strip_prefix("sha256:").unwrap_or(image_id);
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| hex.to_string())
}

fn ready_roots(dir: &Path) -> Vec<PathBuf> {
    list(dir)
        .into_iter()
        .filter(|(name, _)| name.starts_with(READY_PREFIX) && !name.ends_with(MAKING_SUFFIX))
        .map(|(_, p)| p)
        .collect()
}

fn list(dir: &Path) -> Vec<(String, PathBuf)> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                .collect()
        })
        .unwrap_or_default()
}

fn root_bytes(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join(BYTES_FILE))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the tree at `root` has at least `n` entries (stops counting there).
fn has_entries(root: &Path, n: u64) -> bool {
    let mut seen = 0u64;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen >= n {
                return true;
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    seen >= n
}

/// Disk the tree at `root` takes (allocated blocks; hard links counted once).
fn disk_bytes(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0u64;
    let mut inodes = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.nlink() > 1 && !meta.is_dir() && !inodes.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += meta.blocks() * 512;
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// A name no other root of this process or an earlier one uses.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{READY_PREFIX}{}-{n}", crate::model::now_nanos())
}

impl RootPool {
    pub fn new(
        root: &Path,
        opts: PoolOptions,
        images: Arc<ImageStore>,
        trash: Arc<Trash>,
    ) -> RootPool {
        RootPool {
            dir: root.join("pool"),
            opts,
            images,
            cloner: image_service::tree::native_cloner(),
            trash,
            small: SmallImages::default(),
            worker: Mutex::new(None),
        }
    }

    /// Moves a ready root of `image_id` to `dst` (which must not exist) and asks for another;
    /// false when the pool has none (or is off): the caller makes the root itself.
    pub fn take(&self, image_id: &str, dst: &Path) -> bool {
        if self.opts.size == 0 {
            return false;
        }
        let Some(key) = key(image_id) else {
            return false;
        };
        let mut taken = false;
        // Another create may take the same root first: its rename wins, this one tries the next.
        for root in ready_roots(&self.dir.join(&key)) {
            if std::fs::rename(&root, dst).is_ok() {
                taken = true;
                break;
            }
        }
        self.fill(image_id);
        taken
    }

    /// Asks for `image_id`'s pool to be filled, in the background.
    pub fn fill(&self, image_id: &str) {
        if self.opts.size == 0 || key(image_id).is_none() {
            return;
        }
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = worker.as_ref()
            && tx.send(image_id.to_string()).is_ok()
        {
            return;
        }
        let (tx, rx) = channel::<String>();
        let pool = PoolWorker {
            dir: self.dir.clone(),
            opts: self.opts,
            images: Arc::clone(&self.images),
            cloner: Arc::clone(&self.cloner),
            trash: Arc::clone(&self.trash),
        };
        let small = self.small.clone();
        let spawned = std::thread::Builder::new()
            .name("darwin-cri-pool".into())
            .spawn(move || {
                if let Err(e) = platform::background_thread() {
                    tracing::debug!(error = %e, "the pool thread keeps its priority");
                }
                while let Ok(first) = rx.recv() {
                    // Requests for one image that piled up while a root was made are one.
                    let mut wanted = vec![first];
                    wanted.extend(rx.try_iter());
                    wanted.sort();
                    wanted.dedup();
                    for image_id in wanted {
                        if let Err(e) = pool.fill(&image_id, &small) {
                            tracing::warn!(image = image_id, error = %e, "cannot make a root ahead");
                        }
                    }
                }
            });
        match spawned {
            Ok(_) => {
                let _ = tx.send(image_id.to_string());
                *worker = Some(tx);
            }
            Err(e) => tracing::warn!(error = %e, "no pool thread: roots are made at create"),
        }
    }

    /// Removes the pools of images that are no longer in the store (after RemoveImage).
    pub fn prune(&self) {
        let Ok(images) = self.images.list() else {
            return;
        };
        let live: HashSet<String> = images.iter().filter_map(|i| key(&i.id)).collect();
        for (name, dir) in list(&self.dir) {
            if !live.contains(&name) {
                tracing::info!(image = name, "removing the root pool of a removed image");
                if let Err(e) = self.trash.discard(&dir) {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove a root pool");
                }
            }
        }
    }

    /// At start: half-made roots go, pools of removed images go, every image's pool is filled.
    /// Not `active` (roots are layers, not copies) or turned off: every pool goes.
    pub fn recover(&self, active: bool) {
        if self.opts.size == 0 || !active {
            // What an earlier configuration made goes.
            if self.dir.exists()
                && let Err(e) = self.trash.discard(&self.dir)
            {
                tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove the root pools");
            }
            return;
        }
        self.prune();
        for (_, dir) in list(&self.dir) {
            for (entry, path) in list(&dir) {
                if entry.ends_with(MAKING_SUFFIX) {
                    tracing::info!(path = %path.display(), "deleting a half-made root");
                    let _ = self.trash.discard(&path);
                }
            }
        }
        // Every image, imported or pulled before: the small ones are found so at the first
        // few thousand entries and left alone.
        for image in self.images.list().unwrap_or_default() {
            self.fill(&image.id);
        }
    }
}

/// The images found too small for a pool, shared with the pool thread.
#[derive(Debug, Clone, Default)]
struct SmallImages(Arc<Mutex<HashSet<String>>>);

/// What the pool thread works with.
#[derive(Debug)]
struct PoolWorker {
    dir: PathBuf,
    opts: PoolOptions,
    images: Arc<ImageStore>,
    cloner: Arc<dyn TreeCloner>,
    trash: Arc<Trash>,
}

impl PoolWorker {
    /// Makes roots of `image_id` until its pool is full or the disk bound is reached.
    fn fill(&self, image_id: &str, small: &SmallImages) -> std::io::Result<()> {
        let Some(key) = key(image_id) else {
            return Ok(());
        };
        let dir = self.dir.join(&key);
        if small
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return Ok(());
        }
        let image = match self.images.resolve(image_id) {
            Ok(Some(image)) => image,
            // Removed meanwhile: its pool goes with it.
            Ok(None) => return self.trash.discard(&dir),
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        };
        if ready_roots(&dir).len() >= self.opts.size {
            return Ok(());
        }
        // The snapshot may not be collected while it is copied.
        let holder = format!("pool-{}", &key[..32]);
        let snapshot = self
            .images
            .lease(&holder, &image)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let made = self.fill_from(&dir, &key, &snapshot, small);
        if let Err(e) = self.images.release(&holder) {
            tracing::warn!(holder, error = %e, "cannot release the pool's lease");
        }
        made
    }

    fn fill_from(
        &self,
        dir: &Path,
        key: &str,
        snapshot: &Path,
        small: &SmallImages,
    ) -> std::io::Result<()> {
        if root_bytes(dir).is_none() && !has_entries(snapshot, self.opts.min_files) {
            small
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key.to_string());
            return Ok(());
        }
        std::fs::create_dir_all(dir)?;
        while ready_roots(dir).len() < self.opts.size {
            let used = usage(self.dir.parent().unwrap_or(Path::new("/"))).bytes;
            if let Some(per_root) = root_bytes(dir)
                && used.saturating_add(per_root) > self.opts.max_bytes
            {
                tracing::info!(
                    image = key,
                    used,
                    per_root,
                    max = self.opts.max_bytes,
                    "the root pools are at their disk bound; not making another root"
                );
                return Ok(());
            }
            let name = unique();
            let tmp = dir.join(format!("{name}{MAKING_SUFFIX}"));
            let started = std::time::Instant::now();
            if let Err(e) = self.cloner.clone_tree(snapshot, &tmp) {
                let _ = self.trash.discard(&tmp);
                return Err(e);
            }
            if root_bytes(dir).is_none() {
                let bytes = disk_bytes(&tmp);
                crate::fsutil::write_atomic(&dir.join(BYTES_FILE), bytes.to_string().as_bytes())?;
                if used.saturating_add(bytes) > self.opts.max_bytes {
                    tracing::info!(
                        image = key,
                        bytes,
                        max = self.opts.max_bytes,
                        "a root of this image does not fit in the pools' disk bound"
                    );
                    return self.trash.discard(&tmp);
                }
            }
            std::fs::rename(&tmp, dir.join(&name))?;
            tracing::info!(image = key, elapsed = ?started.elapsed(), "made a root ahead");
        }
        Ok(())
    }
}
