//! The image store: import, metadata, names, snapshots and garbage collection.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::content::{ingest_blob, write_atomic};
use crate::layout::{self, Candidate, Loaded};
use crate::platform::{Offer, Platform, choose};
use crate::reference;
use crate::tree::TreeCloner;
use crate::{Error, IoContext, Result, is_sha256_hex, random_name, sha256_hex};

pub use author::{ImageDocuments, NewImage, NewLayer, StoreHold};

mod author;
mod gc;
mod import;
mod snapshots;

/// Every `*.json` record in `dir` that parses, with its path; a malformed one is skipped with a
/// warning naming `what` it is, one removed meanwhile (by another process) is skipped quietly.
fn load_json_dir<T: serde::de::DeserializeOwned>(
    dir: &Path,
    what: &str,
) -> Result<Vec<(PathBuf, T)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).ctx(|| format!("read {}", dir.display()))? {
        let entry = entry.ctx(|| format!("read {}", dir.display()))?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match fs::read(&path).map(|b| serde_json::from_slice::<T>(&b)) {
            Ok(Ok(record)) => out.push((path, record)),
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring malformed {what}")
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("read {}", path.display()))
                    .map_err(Into::into);
            }
        }
    }
    Ok(out)
}
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

/// The runtime-relevant part of an image config.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageConfig {
    /// `user`, `user:group`, `uid:gid`; empty for root.
    pub user: String,
    /// `KEY=value` entries.
    pub env: Vec<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// Working directory; empty for `/`.
    pub working_dir: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Stop signal name, e.g. `SIGTERM`; empty when unset.
    pub stop_signal: String,
}

/// An image known to the store.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// `sha256:<config digest hex>`.
    pub id: String,
    /// Normalized tags, `docker.io/library/busybox:latest`.
    pub repo_tags: Vec<String>,
    /// `docker.io/library/busybox@sha256:<manifest digest>`.
    pub repo_digests: Vec<String>,
    /// Compressed layers plus config size.
    pub size: u64,
    /// Runtime config.
    pub config: ImageConfig,
    /// ChainID of the top layer: the snapshot key.
    pub chain_id: String,
    /// Digest of the manifest.
    pub manifest_digest: String,
    /// `os/arch[/variant]` of the image.
    pub platform: String,
}

/// Disk usage of the store.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsUsage {
    /// Bytes used (allocated blocks).
    pub used_bytes: u64,
    /// Inodes used.
    pub inodes_used: u64,
}

/// What `meta/<id>.json` holds: the image without names, plus GC roots.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    id: String,
    size: u64,
    config: ImageConfig,
    chain_id: String,
    manifest_digest: String,
    platform: String,
    #[serde(default)]
    config_digest: String,
    #[serde(default)]
    layer_digests: Vec<String>,
    #[serde(default)]
    chain_ids: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct RefFile {
    name: String,
    id: String,
}

type Stamp = (Option<SystemTime>, Option<SystemTime>);

#[derive(Debug, Default)]
struct Cache {
    stamp: Option<Stamp>,
    loaded_at: Option<SystemTime>,
    images: Arc<Vec<Image>>,
}

/// Changes closer than this to the load time may be missed by an mtime comparison
/// (coarse filesystem timestamps), so such a cache is reloaded on the next call.
const RACY_WINDOW: Duration = Duration::from_secs(2);

/// How long a partial download waits for a pull to resume it.
const INGEST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The image store. Cheap to share between threads (`Arc<ImageStore>`).
#[derive(Debug)]
pub struct ImageStore {
    root: PathBuf,
    platform: Platform,
    cloner: Arc<dyn TreeCloner>,
    cache: RwLock<Cache>,
    keep_setuid: Vec<String>,
}

fn ensure_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).ctx(|| format!("create {}", path.display()))?;
    Ok(())
}

fn mtime_of(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn ref_file_name(name: &str) -> String {
    format!("{}.json", hex::encode(Sha256::digest(name.as_bytes())))
}

/// An image ready to be recorded by [`ImageStore::commit`].
#[derive(Debug)]
pub(crate) struct Commit<'a> {
    /// Names to point at the image (`repo:tag`, `repo@digest`).
    pub names: Vec<String>,
    pub manifest_digest: String,
    /// The index the manifest was chosen from, kept as a blob.
    pub index_digest: Option<String>,
    pub config_digest: String,
    pub config_size: u64,
    pub config: &'a oci_spec::image::ImageConfiguration,
    /// Layer digests and compressed sizes, in order.
    pub layers: Vec<(String, u64)>,
    /// `os/arch[/variant]`.
    pub platform: String,
}

/// ChainIDs of validated DiffIDs.
pub(crate) fn checked_chain_ids(diff_ids: &[String]) -> Result<Vec<String>> {
    for d in diff_ids {
        sha256_hex(d)?;
    }
    Ok(chain_ids(diff_ids))
}

/// What an index entry says it is built for, if it says.
pub(crate) fn offer_of_descriptor(d: &oci_spec::image::Descriptor) -> Option<Offer> {
    d.platform().as_ref().map(|p| Offer {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone(),
        os_version: p.os_version().clone(),
    })
}

/// What a config says it is built for.
pub(crate) fn offer_of_config(cfg: &oci_spec::image::ImageConfiguration) -> Offer {
    Offer {
        os: cfg.os().to_string(),
        architecture: cfg.architecture().to_string(),
        variant: cfg.variant().clone(),
        os_version: cfg.os_version().clone(),
    }
}

/// ChainIDs of a list of DiffIDs (OCI image spec).
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

impl ImageStore {
    /// Opens (creating directories as needed) the store at `root`, importing images
    /// for `platform` and cloning snapshots with `cloner`.
    pub fn open(
        root: &Path,
        platform: Platform,
        cloner: Arc<dyn TreeCloner>,
    ) -> Result<ImageStore> {
        for sub in [
            "blobs/sha256",
            "snapshots",
            "meta",
            "refs",
            "tmp",
            "ingest",
            "leases",
        ] {
            ensure_dir(&root.join(sub))?;
        }
        Ok(ImageStore {
            root: root.to_path_buf(),
            platform,
            cloner,
            cache: RwLock::new(Cache::default()),
            keep_setuid: Vec::new(),
        })
    }

    /// Images whose setuid and setgid bits are kept at unpack (`image.keep_setuid`): names as
    /// references give them, `repository` (every tag) or `repository:tag`. Snapshots are shared
    /// by layer (ChainID): a layer already unpacked for another image keeps what it was given.
    pub fn with_keep_setuid(mut self, names: Vec<String>) -> ImageStore {
        self.keep_setuid = names;
        self
    }

    /// Whether a layer unpacked for `name` keeps its setuid and setgid bits.
    pub fn keeps_setuid_of(&self, name: &str) -> bool {
        if self.keep_setuid.is_empty() {
            return false;
        }
        let Ok(parsed) = reference::parse(name) else {
            return false;
        };
        let full = reference::tag_ref_of(&parsed).unwrap_or_default();
        let repository = full
            .rsplit_once(':')
            .map(|(r, _)| r)
            .unwrap_or(&full)
            .to_string();
        self.keep_setuid.iter().any(|k| {
            let k = reference::parse(k)
                .ok()
                .and_then(|p| reference::tag_ref_of(&p))
                .unwrap_or_else(|| k.clone());
            k == full
                || k.strip_suffix(":latest").is_some_and(|r| r == repository)
                || *k == repository
        })
    }

    /// Whether any name of `image` keeps setuid and setgid bits.
    pub fn keeps_setuid(&self, image: &Image) -> bool {
        image.repo_tags.iter().any(|t| self.keeps_setuid_of(t))
    }

    /// The platform images are pulled and imported for.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The store root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub(crate) fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }
    fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    fn meta_dir(&self) -> PathBuf {
        self.root.join("meta")
    }
    fn refs_dir(&self) -> PathBuf {
        self.root.join("refs")
    }

    fn open_lock_file(&self) -> Result<File> {
        let path = self.root.join("gc.lock");
        Ok(OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))?)
    }

    /// Shared lock held by imports: garbage collection (exclusive) cannot run meanwhile.
    pub(crate) fn lock_shared(&self) -> Result<Flock<File>> {
        Flock::lock(self.open_lock_file()?, FlockArg::LockShared).map_err(|(_, e)| Error::Io {
            context: "lock image store".to_string(),
            source: e.into(),
        })
    }

    fn invalidate(&self) {
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        c.stamp = None;
    }

    fn current_stamp(&self) -> Stamp {
        (mtime_of(&self.meta_dir()), mtime_of(&self.refs_dir()))
    }

    /// The current images, reloaded from disk when `meta/` or `refs/` changed.
    fn images(&self) -> Result<Arc<Vec<Image>>> {
        let stamp = self.current_stamp();
        {
            let c = self.cache.read().unwrap_or_else(|e| e.into_inner());
            if Self::fresh(&c, &stamp) {
                return Ok(c.images.clone());
            }
        }
        let mut c = self.cache.write().unwrap_or_else(|e| e.into_inner());
        if Self::fresh(&c, &stamp) {
            return Ok(c.images.clone());
        }
        let loaded_at = SystemTime::now();
        let images = Arc::new(self.load_images()?);
        c.stamp = Some(stamp);
        c.loaded_at = Some(loaded_at);
        c.images = images.clone();
        Ok(images)
    }

    fn fresh(c: &Cache, stamp: &Stamp) -> bool {
        if c.stamp.as_ref() != Some(stamp) {
            return false;
        }
        let newest = stamp.0.max(stamp.1);
        match (newest, c.loaded_at) {
            (Some(m), Some(l)) => l
                .duration_since(m)
                .map(|d| d >= RACY_WINDOW)
                .unwrap_or(false),
            _ => false,
        }
    }

    fn load_metas(&self) -> Result<Vec<(PathBuf, Meta)>> {
        load_json_dir(&self.meta_dir(), "image metadata")
    }

    fn load_refs(&self) -> Result<Vec<(PathBuf, RefFile)>> {
        load_json_dir(&self.refs_dir(), "image ref")
    }

    fn load_images(&self) -> Result<Vec<Image>> {
        let metas = self.load_metas()?;
        let refs = self.load_refs()?;
        let mut images: BTreeMap<String, Image> = metas
            .into_iter()
            .map(|(_, m)| {
                (
                    m.id.clone(),
                    Image {
                        id: m.id,
                        repo_tags: Vec::new(),
                        repo_digests: Vec::new(),
                        size: m.size,
                        config: m.config,
                        chain_id: m.chain_id,
                        manifest_digest: m.manifest_digest,
                        platform: m.platform,
                    },
                )
            })
            .collect();
        for (_, r) in refs {
            if let Some(img) = images.get_mut(&r.id) {
                if r.name.contains('@') {
                    img.repo_digests.push(r.name);
                } else {
                    img.repo_tags.push(r.name);
                }
            }
        }
        let mut out: Vec<Image> = images.into_values().collect();
        for img in &mut out {
            img.repo_tags.sort();
            img.repo_digests.sort();
        }
        Ok(out)
    }

    /// All images.
    pub fn list(&self) -> Result<Vec<Image>> {
        Ok(self.images()?.as_ref().clone())
    }

    /// Finds an image by id (`sha256:<hex>`, bare hex, unique prefix of >= 12 hex chars),
    /// `name`, `name:tag`, `name@digest` or `name:tag@digest` (digest wins).
    /// Garbage references resolve to `None`.
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>> {
        let images = self.images()?;
        Ok(resolve_in(&images, reference).cloned())
    }
}

fn resolve_in<'a>(images: &'a [Image], reference: &str) -> Option<&'a Image> {
    let r = reference.trim();
    let (hexpart, had_prefix) = match r.strip_prefix("sha256:") {
        Some(h) => (h, true),
        None => (r, false),
    };
    if hexpart.len() >= 12
        && hexpart.len() <= 64
        && hexpart
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        let mut found = images.iter().filter(|i| {
            i.id.strip_prefix("sha256:")
                .is_some_and(|h| h.starts_with(hexpart))
        });
        if let Some(first) = found.next() {
            if found.next().is_none() {
                return Some(first);
            }
            return None; // ambiguous prefix
        }
        if had_prefix || is_sha256_hex(hexpart) {
            return None;
        }
    }
    if had_prefix {
        return None;
    }
    let parsed = reference::parse(r).ok()?;
    if let Some(digest) = parsed.digest() {
        let digest_ref = reference::digest_ref_of(&parsed)?;
        let repo = format!("{}/{}", parsed.registry(), parsed.repository());
        return images
            .iter()
            .find(|i| i.repo_digests.contains(&digest_ref))
            .or_else(|| {
                images.iter().find(|i| {
                    i.manifest_digest == digest
                        && i.repo_tags
                            .iter()
                            .chain(&i.repo_digests)
                            .any(|n| reference::repository_of(n) == repo)
                })
            });
    }
    let tag = reference::tag_ref_of(&parsed)?;
    images.iter().find(|i| i.repo_tags.contains(&tag))
}
