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
use crate::unpack::apply_layer;
use crate::{Error, IoContext, Result, is_sha256_hex, random_name, sha256_hex};

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
}

fn ensure_dir(path: &Path) -> Result<()> {
    fs::create_dir_all(path).ctx(|| format!("create {}", path.display()))
}

fn mtime_of(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn ref_file_name(name: &str) -> String {
    format!("{}.json", hex::encode(Sha256::digest(name.as_bytes())))
}

fn config_from_oci(cfg: &oci_spec::image::ImageConfiguration) -> ImageConfig {
    let Some(c) = cfg.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        user: c.user().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        working_dir: c.working_dir().clone().unwrap_or_default(),
        labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
        stop_signal: c.stop_signal().clone().unwrap_or_default(),
    }
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

fn remove_path(path: &Path) -> io::Result<()> {
    let res = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match res {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
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
        })
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
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(|| format!("open {}", path.display()))
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
        let dir = self.meta_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path).map(|b| serde_json::from_slice::<Meta>(&b)) {
                Ok(Ok(m)) => out.push((path, m)),
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring malformed image metadata")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
            }
        }
        Ok(out)
    }

    fn load_refs(&self) -> Result<Vec<(PathBuf, RefFile)>> {
        let dir = self.refs_dir();
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            let path = entry.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            match fs::read(&path).map(|b| serde_json::from_slice::<RefFile>(&b)) {
                Ok(Ok(r)) => out.push((path, r)),
                Ok(Err(e)) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring malformed image ref")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(|| format!("read {}", path.display())),
            }
        }
        Ok(out)
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

    /// Removes a name, or the image: a tag of an image with other tags is untagged;
    /// otherwise (the last tag, a repo digest, the id) the image and all its names go,
    /// then unused snapshots and blobs are garbage-collected. An image whose snapshot a
    /// container holds is refused with [`Error::InUse`]. Returns `false` when nothing
    /// matched.
    pub fn remove(&self, reference: &str) -> Result<bool> {
        let Some(image) = self.resolve(reference)? else {
            return Ok(false);
        };
        if let Ok(name) = reference::normalize(reference)
            && image.repo_tags.contains(&name)
            && image.repo_tags.len() > 1
        {
            let path = self.refs_dir().join(ref_file_name(&name));
            remove_path(&path).ctx(|| format!("remove {}", path.display()))?;
            self.invalidate();
            return Ok(true);
        }
        let chain = sha256_hex(&image.chain_id)?;
        if let Some((holder, _)) = self.leases()?.into_iter().find(|(_, c)| c == chain) {
            return Err(Error::InUse(format!("{} (container {holder})", image.id)));
        }
        for (path, r) in self.load_refs()? {
            if r.id == image.id {
                remove_path(&path).ctx(|| format!("remove {}", path.display()))?;
            }
        }
        let meta = self
            .meta_dir()
            .join(format!("{}.json", sha256_hex(&image.id)?));
        remove_path(&meta).ctx(|| format!("remove {}", meta.display()))?;
        self.invalidate();
        self.gc()?;
        Ok(true)
    }

    /// Deletes snapshots and blobs no image references, and leftovers in `tmp/`.
    ///
    /// Runs only under the exclusive `gc.lock` flock; imports hold it shared for their
    /// whole duration, so a blob or snapshot an import is about to use cannot vanish.
    /// When an import runs, collection is skipped (the next removal collects).
    fn gc(&self) -> Result<()> {
        let lock = match Flock::lock(self.open_lock_file()?, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((_, e)) => {
                tracing::debug!(error = %e, "image store busy; garbage collection skipped");
                return Ok(());
            }
        };
        let mut chains = HashSet::new();
        let mut blobs = HashSet::new();
        for (_, m) in self.load_metas()? {
            chains.extend(
                m.chain_ids
                    .iter()
                    .filter_map(|c| c.strip_prefix("sha256:").map(str::to_string)),
            );
            chains.extend(m.chain_id.strip_prefix("sha256:").map(str::to_string));
            for d in m
                .layer_digests
                .iter()
                .chain([&m.config_digest, &m.manifest_digest, &m.id])
            {
                if let Some(h) = d.strip_prefix("sha256:") {
                    blobs.insert(h.to_string());
                }
            }
        }
        let sweep = |dir: PathBuf, keep: &HashSet<String>| -> Result<()> {
            for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
                let entry = entry.ctx(|| format!("read {}", dir.display()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !keep.contains(&name) {
                    tracing::debug!(path = %entry.path().display(), "garbage-collecting");
                    remove_path(&entry.path())
                        .ctx(|| format!("remove {}", entry.path().display()))?;
                }
            }
            Ok(())
        };
        // Snapshots that containers still use survive the removal of their image.
        for (_, chain) in self.leases()? {
            chains.insert(chain);
        }
        sweep(self.snapshots_dir(), &chains)?;
        sweep(self.blobs_dir(), &blobs)?;
        // No import runs (we hold the exclusive lock): anything in tmp/ is a leftover.
        sweep(self.tmp_dir(), &HashSet::new())?;
        // Partial downloads are kept for the next pull to resume, for a day.
        let ingest = self.root.join("ingest");
        if let Ok(entries) = fs::read_dir(&ingest) {
            for e in entries.flatten() {
                let stale = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_none_or(|age| age > INGEST_MAX_AGE);
                if stale {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        drop(lock);
        Ok(())
    }

    fn lease_path(&self, holder: &str) -> Result<PathBuf> {
        if holder.is_empty()
            || !holder
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Error::InvalidReference(format!(
                "lease holder {holder:?} must be alphanumeric"
            )));
        }
        Ok(self.root.join("leases").join(holder))
    }

    /// Every lease: holder and the hex ChainID it keeps.
    fn leases(&self) -> Result<Vec<(String, String)>> {
        let dir = self.root.join("leases");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let entry = entry.ctx(|| format!("read {}", dir.display()))?;
            let chain = fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                chain.trim().to_string(),
            ));
        }
        Ok(out)
    }

    /// Keeps `image`'s snapshot on disk for `holder` (a container id) until [`Self::release`],
    /// even if the image is removed meanwhile (a container whose root is layered over the
    /// snapshot needs it for its whole life), and returns the snapshot's path.
    pub fn lease(&self, holder: &str, image: &Image) -> Result<PathBuf> {
        let path = self.lease_path(holder)?;
        // Shared, like an import: garbage collection cannot run between the check and the write.
        let _lock =
            Flock::lock(self.open_lock_file()?, FlockArg::LockShared).map_err(|(_, e)| {
                Error::Io {
                    context: "locking the image store".into(),
                    source: e.into(),
                }
            })?;
        let snapshot = self.rootfs(image)?;
        let hex = sha256_hex(&image.chain_id)?;
        fs::write(&path, hex).ctx(|| format!("write {}", path.display()))?;
        Ok(snapshot)
    }

    /// Who holds leases (for recovery: leases of containers that no longer exist are released).
    pub fn lease_holders(&self) -> Result<Vec<String>> {
        Ok(self
            .leases()?
            .into_iter()
            .map(|(holder, _)| holder)
            .collect())
    }

    /// Ends `holder`'s lease; a missing lease is fine.
    pub fn release(&self, holder: &str) -> Result<()> {
        let path = self.lease_path(holder)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io {
                context: format!("remove {}", path.display()),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// The unpacked top snapshot of an image (read-only by convention: clone it).
    pub fn rootfs(&self, image: &Image) -> Result<PathBuf> {
        let hex = sha256_hex(&image.chain_id)?;
        let path = self.snapshots_dir().join(hex);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(Error::NotFound(format!("{} (snapshot missing)", image.id)))
        }
    }

    /// Bytes and inodes used under the store root.
    pub fn fs_usage(&self) -> Result<FsUsage> {
        let mut usage = FsUsage::default();
        let mut seen = HashSet::new();
        let mut stack = vec![self.root.clone()];
        while let Some(dir) = stack.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).ctx(|| format!("read {}", dir.display())),
            };
            for entry in entries {
                let Ok(entry) = entry else { continue };
                let Ok(meta) = entry.metadata() else { continue };
                if !seen.insert((meta.dev(), meta.ino())) {
                    continue;
                }
                usage.inodes_used += 1;
                usage.used_bytes += meta.blocks() * 512;
                if meta.is_dir() {
                    stack.push(entry.path());
                }
            }
        }
        Ok(usage)
    }

    /// Imports the image for the store's platform from an OCI image layout directory.
    /// `name` overrides the name annotations of `index.json`.
    pub fn import_oci_layout(&self, dir: &Path, name: Option<&str>) -> Result<Image> {
        let _lock = self.lock_shared()?;
        let candidates = layout::read_candidates(dir)?;
        if candidates.is_empty() {
            return Err(Error::InvalidLayout(
                "index.json lists no image manifest".to_string(),
            ));
        }
        let display_name = name
            .map(str::to_string)
            .or_else(|| candidates.iter().find_map(|c| c.containerd_name.clone()))
            .or_else(|| candidates.iter().find_map(|c| c.ref_name.clone()))
            .unwrap_or_else(|| dir.display().to_string());
        let (cand, manifest_bytes, loaded, platform) =
            self.select(dir, &candidates, &display_name)?;
        let image_name = image_name(name, &cand)?;
        let manifest_digest = cand.desc.digest().to_string();

        // Blobs: manifest, config, layers, all through the verifying writer.
        let tmp = self.tmp_dir();
        let blobs = self.blobs_dir();
        ingest_blob(
            &tmp,
            &blobs,
            &layout::blob_path(dir, &manifest_digest)?,
            &manifest_digest,
            manifest_bytes.len() as u64,
        )?;
        let config_desc = loaded.manifest.config();
        let config_digest = config_desc.digest().to_string();
        ingest_blob(
            &tmp,
            &blobs,
            &layout::blob_path(dir, &config_digest)?,
            &config_digest,
            config_desc.size(),
        )?;
        let mut layers = Vec::new();
        for l in loaded.manifest.layers() {
            let compression = layout::layer_compression(l.media_type().as_ref())?;
            let digest = l.digest().to_string();
            let path = ingest_blob(
                &tmp,
                &blobs,
                &layout::blob_path(dir, &digest)?,
                &digest,
                l.size(),
            )?;
            layers.push((digest, l.size(), path, compression));
        }

        let diff_ids = loaded.config.rootfs().diff_ids().clone();
        let chains = checked_chain_ids(&diff_ids)?;
        let mut parent: Option<&str> = None;
        for (i, chain) in chains.iter().enumerate() {
            let (_, _, path, compression) = &layers[i];
            self.ensure_snapshot(parent, chain, path, *compression, &diff_ids[i])?;
            parent = Some(chain);
        }

        let parsed = reference::parse(&image_name)?;
        let mut names = Vec::new();
        names.extend(reference::tag_ref_of(&parsed));
        names.push(format!(
            "{}@{manifest_digest}",
            reference::repository_of(&image_name)
        ));
        let image = self.commit(&Commit {
            names,
            manifest_digest,
            index_digest: None,
            config_digest,
            config_size: config_desc.size(),
            config: &loaded.config,
            layers: layers.iter().map(|l| (l.0.clone(), l.1)).collect(),
            platform,
        })?;
        drop(_lock);
        Ok(image)
    }

    /// Records an image whose blobs and layer snapshots are in the store: its metadata,
    /// then its names (so a listed name always has its image).
    pub(crate) fn commit(&self, c: &Commit<'_>) -> Result<Image> {
        let chains = checked_chain_ids(c.config.rootfs().diff_ids())?;
        let chain_id = match chains.last() {
            Some(last) => last.clone(),
            None => {
                // An image without layers: an empty snapshot keyed by the empty ChainID.
                let empty = format!("sha256:{}", hex::encode(Sha256::digest(b"")));
                self.ensure_empty_snapshot(&empty)?;
                empty
            }
        };
        let mut all_chains = chains.clone();
        all_chains.push(chain_id.clone());
        all_chains.dedup();
        let id = c.config_digest.clone();
        let mut layer_digests: Vec<String> = c.layers.iter().map(|l| l.0.clone()).collect();
        layer_digests.extend(c.index_digest.clone());
        let meta = Meta {
            id: id.clone(),
            size: c.layers.iter().map(|l| l.1).sum::<u64>() + c.config_size,
            config: config_from_oci(c.config),
            chain_id,
            manifest_digest: c.manifest_digest.clone(),
            platform: c.platform.clone(),
            config_digest: c.config_digest.clone(),
            layer_digests,
            chain_ids: all_chains,
        };
        let meta_json = serde_json::to_vec_pretty(&meta)
            .map_err(|e| Error::InvalidLayout(format!("serialize metadata: {e}")))?;
        let meta_path = self.meta_dir().join(format!("{}.json", sha256_hex(&id)?));
        if fs::read(&meta_path).ok().as_deref() != Some(meta_json.as_slice()) {
            write_atomic(&self.tmp_dir(), &meta_path, &meta_json)?;
        }
        for n in &c.names {
            self.write_ref(n, &id)?;
        }
        self.invalidate();
        self.resolve(&id)?
            .ok_or_else(|| Error::NotFound(format!("{id} (removed while importing)")))
    }

    fn write_ref(&self, name: &str, id: &str) -> Result<()> {
        let path = self.refs_dir().join(ref_file_name(name));
        let r = RefFile {
            name: name.to_string(),
            id: id.to_string(),
        };
        let data = serde_json::to_vec(&r)
            .map_err(|e| Error::InvalidLayout(format!("serialize ref: {e}")))?;
        if fs::read(&path).ok().as_deref() == Some(data.as_slice()) {
            return Ok(());
        }
        write_atomic(&self.tmp_dir(), &path, &data)
    }

    fn select(
        &self,
        dir: &Path,
        candidates: &[Candidate],
        display_name: &str,
    ) -> Result<(Candidate, Vec<u8>, Loaded, String)> {
        let wanted = &self.platform;
        let mut offers = Vec::with_capacity(candidates.len());
        for c in candidates {
            offers.push(match offer_of_descriptor(&c.desc) {
                Some(o) => o,
                None => offer_of_config(&layout::load(dir, c)?.1.config),
            });
        }
        let (cand, platform) = match choose(wanted, &offers) {
            Ok(i) => (candidates[i].clone(), offers[i].to_string()),
            Err(available) => {
                return Err(Error::NoMatchingPlatform {
                    wanted: wanted.to_string(),
                    reference: display_name.to_string(),
                    available,
                });
            }
        };
        let (manifest_bytes, loaded) = layout::load(dir, &cand)?;
        // A config that contradicts its index entry is rejected.
        let (os, arch) = (
            loaded.config.os().to_string(),
            loaded.config.architecture().to_string(),
        );
        if !wanted.matches(&os, &arch, None) {
            return Err(Error::InvalidLayout(format!(
                "manifest {} is listed as {platform} but its config says {os}/{arch}",
                cand.desc.digest()
            )));
        }
        Ok((cand, manifest_bytes, loaded, platform))
    }

    fn ensure_empty_snapshot(&self, chain: &str) -> Result<()> {
        let final_path = self.snapshots_dir().join(sha256_hex(chain)?);
        if final_path.is_dir() {
            return Ok(());
        }
        let tmp = self
            .tmp_dir()
            .join(random_name().ctx(|| "random name".to_string())?);
        fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", tmp.display()))?;
        self.publish_snapshot(&tmp, &final_path)
    }

    fn publish_snapshot(&self, tmp: &Path, final_path: &Path) -> Result<()> {
        if let Err(e) = fs::rename(tmp, final_path) {
            // Someone else built it meanwhile: keep theirs.
            let _ = fs::remove_dir_all(tmp);
            if !final_path.is_dir() {
                return Err(e).ctx(|| format!("publish snapshot {}", final_path.display()));
            }
        }
        Ok(())
    }

    pub(crate) fn ensure_snapshot(
        &self,
        parent: Option<&str>,
        chain: &str,
        layer: &Path,
        compression: crate::unpack::Compression,
        diff_id: &str,
    ) -> Result<()> {
        let final_path = self.snapshots_dir().join(sha256_hex(chain)?);
        if final_path.is_dir() {
            return Ok(());
        }
        let tmp = self
            .tmp_dir()
            .join(random_name().ctx(|| "random name".to_string())?);
        let result = (|| {
            match parent {
                None => {
                    fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                        .ctx(|| format!("chmod {}", tmp.display()))?;
                }
                Some(p) => {
                    let src = self.snapshots_dir().join(sha256_hex(p)?);
                    self.cloner
                        .clone_tree(&src, &tmp)
                        .ctx(|| format!("clone snapshot {p}"))?;
                }
            }
            let file = File::open(layer).ctx(|| format!("open layer {}", layer.display()))?;
            apply_layer(
                &tmp,
                BufReader::with_capacity(256 << 10, file),
                compression,
                diff_id,
            )
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.publish_snapshot(&tmp, &final_path)
    }
}

/// The name an import registers: the explicit name, else `io.containerd.image.name`,
/// else a full `org.opencontainers.image.ref.name`.
fn image_name(explicit: Option<&str>, cand: &Candidate) -> Result<String> {
    if let Some(n) = explicit {
        return reference::normalize(n);
    }
    if let Some(n) = &cand.containerd_name {
        return reference::normalize(n);
    }
    if let Some(n) = &cand.ref_name {
        if n.contains('/') || n.contains(':') || n.contains('@') {
            return reference::normalize(n);
        }
        return Err(Error::InvalidReference(format!(
            "the layout only names the image by tag {n:?}; pass a full image name"
        )));
    }
    Err(Error::InvalidReference(
        "the layout does not name the image; pass a name".to_string(),
    ))
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{BuiltImage, LayerBuilder, LayoutBuilder, sha};
    use crate::tree::CopyCloner;
    use serde_json::{Value, json};

    fn linux_amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    fn open_store(root: &Path, platform: Platform) -> ImageStore {
        ImageStore::open(root, platform, Arc::new(CopyCloner)).unwrap()
    }

    fn layer1() -> Vec<u8> {
        LayerBuilder::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"busybox binary", 0o755)
            .symlink("bin/sh", "busybox")
            .dir("etc/", 0o755)
            .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
            .file("etc/remove-me", b"old", 0o644)
            .file("var/cache/old", b"old", 0o644)
            .build()
    }

    fn layer2(extra: &str) -> Vec<u8> {
        LayerBuilder::new()
            .whiteout("etc/remove-me")
            .file("etc/new-file", extra.as_bytes(), 0o600)
            .opaque("var/cache")
            .file("var/cache/fresh", b"fresh", 0o644)
            .build()
    }

    fn config() -> Value {
        json!({
            "User": "1000:1000",
            "Env": ["PATH=/bin", "FOO=bar"],
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo hi"],
            "WorkingDir": "/work",
            "Labels": {"a": "b"},
            "StopSignal": "SIGINT",
        })
    }

    fn simple_layout(dir: &Path, name: &str, extra: &str) -> BuiltImage {
        let lb = LayoutBuilder::new(dir);
        let img = lb.image(&[layer1(), layer2(extra)], true, "linux", "amd64", config());
        lb.index_json(vec![LayoutBuilder::manifest_desc(
            &img,
            None,
            json!({ANNOTATION: name}),
        )]);
        img
    }

    const ANNOTATION: &str = "io.containerd.image.name";

    fn count(dir: &Path) -> usize {
        fs::read_dir(dir).unwrap().count()
    }

    #[test]
    fn import_resolve_remove() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("images");
        let store = open_store(&root, linux_amd64());
        // a second store on the same root, as the CLI would be: primed before the import
        let other = open_store(&root, linux_amd64());
        assert!(other.list().unwrap().is_empty());

        let built = simple_layout(&t.path().join("layout"), "busybox:1.36", "new");
        let img = store
            .import_oci_layout(&t.path().join("layout"), None)
            .unwrap();
        assert_eq!(img.id, built.config_digest);
        assert_eq!(img.repo_tags, vec!["docker.io/library/busybox:1.36"]);
        assert_eq!(
            img.repo_digests,
            vec![format!(
                "docker.io/library/busybox@{}",
                built.manifest_digest
            )]
        );
        assert_eq!(img.manifest_digest, built.manifest_digest);
        assert_eq!(img.size, built.size);
        assert_eq!(img.platform, "linux/amd64");
        let chain2 = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(
                format!("{} {}", built.diff_ids[0], built.diff_ids[1]).as_bytes()
            ))
        );
        assert_eq!(img.chain_id, chain2);
        assert_eq!(
            img.config,
            ImageConfig {
                user: "1000:1000".into(),
                env: vec!["PATH=/bin".into(), "FOO=bar".into()],
                entrypoint: vec!["/bin/sh".into(), "-c".into()],
                cmd: vec!["echo hi".into()],
                working_dir: "/work".into(),
                labels: [("a".to_string(), "b".to_string())].into_iter().collect(),
                stop_signal: "SIGINT".into(),
            }
        );

        // rootfs content
        let rootfs = store.rootfs(&img).unwrap();
        assert_eq!(rootfs, root.join("snapshots").join(&chain2[7..]));
        assert_eq!(fs::read(rootfs.join("etc/new-file")).unwrap(), b"new");
        assert!(!rootfs.join("etc/remove-me").exists());
        assert!(!rootfs.join("var/cache/old").exists());
        assert!(rootfs.join("var/cache/fresh").exists());
        assert_eq!(
            fs::read_link(rootfs.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        // the lower snapshot still has the removed file
        let lower = root.join("snapshots").join(&built.diff_ids[0][7..]);
        assert!(lower.join("etc/remove-me").exists());
        assert_eq!(count(&root.join("snapshots")), 2);
        assert_eq!(count(&root.join("blobs/sha256")), 4);
        assert_eq!(count(&root.join("tmp")), 0);

        // every form resolves
        let hexid = &img.id[7..];
        let d = &built.manifest_digest;
        for r in [
            img.id.clone(),
            hexid.to_string(),
            hexid[..12].to_string(),
            format!("sha256:{}", &hexid[..12]),
            "busybox:1.36".into(),
            "docker.io/library/busybox:1.36".into(),
            format!("busybox@{d}"),
            format!("docker.io/library/busybox@{d}"),
            format!("busybox:1.36@{d}"),
            format!("busybox:other@{d}"),
        ] {
            assert_eq!(store.resolve(&r).unwrap().as_ref(), Some(&img), "{r}");
        }
        for r in [
            "busybox",
            "busybox:latest",
            "alpine:1.36",
            "Not A Reference!",
            "",
            &hexid[..11],
            &format!("ghcr.io/x/busybox@{d}"),
            &format!("busybox@{}", sha(b"nope")),
            &sha(b"nope"),
        ] {
            assert_eq!(store.resolve(r).unwrap(), None, "{r}");
        }

        // the other store instance sees the import
        assert_eq!(other.list().unwrap(), vec![img.clone()]);

        // re-import is a no-op
        let again = store
            .import_oci_layout(&t.path().join("layout"), None)
            .unwrap();
        assert_eq!(again, img);
        assert_eq!(store.list().unwrap().len(), 1);
        assert_eq!(count(&root.join("snapshots")), 2);
        assert_eq!(count(&root.join("tmp")), 0);

        let usage = store.fs_usage().unwrap();
        assert!(usage.used_bytes > 0 && usage.inodes_used > 10, "{usage:?}");

        // remove + gc
        assert!(!store.remove("alpine").unwrap());
        assert!(store.remove("busybox:1.36").unwrap());
        assert!(store.list().unwrap().is_empty());
        assert!(other.list().unwrap().is_empty());
        assert_eq!(store.resolve(&img.id).unwrap(), None);
        assert!(!store.remove(&img.id).unwrap());
        for sub in ["snapshots", "blobs/sha256", "meta", "refs", "tmp"] {
            assert_eq!(count(&root.join(sub)), 0, "{sub} not empty after remove");
        }
        assert!(matches!(store.rootfs(&img), Err(Error::NotFound(_))));
    }

    #[test]
    fn tag_moves_and_shared_layers_survive_gc() {
        let t = tempfile::tempdir().unwrap();
        let store = open_store(&t.path().join("images"), linux_amd64());
        simple_layout(&t.path().join("l1"), "ignored:1", "v1");
        simple_layout(&t.path().join("l2"), "ignored:2", "v2");
        let a = store
            .import_oci_layout(&t.path().join("l1"), Some("app:v1"))
            .unwrap();
        assert_eq!(a.repo_tags, vec!["docker.io/library/app:v1"]);
        let b = store
            .import_oci_layout(&t.path().join("l2"), Some("app:v1"))
            .unwrap();
        assert_ne!(a.id, b.id, "different layers, different config");
        assert_eq!(
            store.resolve("app:v1").unwrap().map(|i| i.id),
            Some(b.id.clone())
        );
        let a_now = store.resolve(&a.id).unwrap().unwrap();
        assert!(a_now.repo_tags.is_empty(), "tag moved away from a");
        assert_eq!(a_now.repo_digests.len(), 1, "a keeps its repo digest");
        // layer 1 is shared: 3 snapshots in total
        assert_eq!(count(&t.path().join("images/snapshots")), 3);

        assert!(store.remove(&a.id).unwrap());
        assert_eq!(count(&t.path().join("images/snapshots")), 2);
        let rootfs = store.rootfs(&b).unwrap();
        assert_eq!(fs::read(rootfs.join("etc/new-file")).unwrap(), b"v2");
        assert_eq!(
            fs::read(rootfs.join("bin/busybox")).unwrap(),
            b"busybox binary"
        );
        assert_eq!(store.list().unwrap().len(), 1);
    }

    fn multi_platform(dir: &Path, nested: bool) -> (BuiltImage, BuiltImage) {
        let lb = LayoutBuilder::new(dir);
        let amd = lb.image(&[layer1()], false, "linux", "amd64", config());
        let arm = lb.image(
            &[layer1(), layer2("arm")],
            true,
            "linux",
            "arm64",
            json!({}),
        );
        let descs = vec![
            LayoutBuilder::manifest_desc(&amd, Some(("linux", "amd64")), Value::Null),
            LayoutBuilder::manifest_desc(&arm, Some(("linux", "arm64")), Value::Null),
        ];
        if nested {
            let idx = lb.nested_index(descs, json!({ANNOTATION: "ghcr.io/x/multi:2"}));
            lb.index_json(vec![idx]);
        } else {
            let mut descs = descs;
            for d in &mut descs {
                d["annotations"] = json!({ANNOTATION: "ghcr.io/x/multi:2"});
            }
            lb.index_json(descs);
        }
        (amd, arm)
    }

    #[test]
    fn platform_selection() {
        let t = tempfile::tempdir().unwrap();
        for nested in [false, true] {
            let layout = t.path().join(format!("layout-{nested}"));
            let (amd, arm) = multi_platform(&layout, nested);
            let store = open_store(&t.path().join(format!("s-amd-{nested}")), linux_amd64());
            let img = store.import_oci_layout(&layout, None).unwrap();
            assert_eq!(img.manifest_digest, amd.manifest_digest);
            assert_eq!(img.repo_tags, vec!["ghcr.io/x/multi:2"]);
            let store = open_store(
                &t.path().join(format!("s-arm-{nested}")),
                Platform::parse("linux/arm64/v8").unwrap(),
            );
            let img = store.import_oci_layout(&layout, None).unwrap();
            assert_eq!(img.manifest_digest, arm.manifest_digest);
            assert_eq!(img.platform, "linux/arm64");
            assert_eq!(img.config, ImageConfig::default());
            assert!(store.rootfs(&img).unwrap().join("var/cache/fresh").exists());

            let store = open_store(
                &t.path().join(format!("s-darwin-{nested}")),
                Platform::parse("darwin/arm64").unwrap(),
            );
            let err = store.import_oci_layout(&layout, None).unwrap_err();
            assert!(matches!(err, Error::NoMatchingPlatform { .. }));
            assert_eq!(
                err.to_string(),
                "no manifest for darwin/arm64 in ghcr.io/x/multi:2; available: linux/amd64, linux/arm64"
            );
            assert!(store.list().unwrap().is_empty());
        }
        // without platform in index.json the config decides
        let layout = t.path().join("noplat");
        simple_layout(&layout, "x:1", "x");
        let store = open_store(
            &t.path().join("s-noplat"),
            Platform::parse("darwin/arm64").unwrap(),
        );
        let err = store.import_oci_layout(&layout, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no manifest for darwin/arm64 in x:1; available: linux/amd64"
        );
    }

    #[test]
    fn names_from_annotations() {
        let t = tempfile::tempdir().unwrap();
        let store = open_store(&t.path().join("images"), linux_amd64());
        let layout = t.path().join("l");
        let lb = LayoutBuilder::new(&layout);
        let img = lb.image(&[layer1()], true, "linux", "amd64", config());
        lb.index_json(vec![LayoutBuilder::manifest_desc(
            &img,
            None,
            json!({"org.opencontainers.image.ref.name": "1.36"}),
        )]);
        let err = store.import_oci_layout(&layout, None).unwrap_err();
        assert!(matches!(err, Error::InvalidReference(_)), "{err}");
        let i = store
            .import_oci_layout(&layout, Some("registry.local:5000/team/app"))
            .unwrap();
        assert_eq!(i.repo_tags, vec!["registry.local:5000/team/app:latest"]);
        assert!(matches!(
            store.import_oci_layout(&layout, Some("Bad Name")),
            Err(Error::InvalidReference(_))
        ));

        lb.index_json(vec![LayoutBuilder::manifest_desc(
            &img,
            None,
            json!({"org.opencontainers.image.ref.name": "quay.io/a/b:3"}),
        )]);
        let i = store.import_oci_layout(&layout, None).unwrap();
        assert_eq!(
            i.repo_tags,
            vec!["quay.io/a/b:3", "registry.local:5000/team/app:latest"]
        );
    }

    #[test]
    fn corrupt_layouts_are_errors() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("images");
        let store = open_store(&root, linux_amd64());

        // DiffID mismatch: config announces a different diff_id
        let layout = t.path().join("badiff");
        let lb = LayoutBuilder::new(&layout);
        let l = layer1();
        let gz = crate::testutil::gzip(&l);
        let layer_digest = lb.blob(&gz);
        let cfg = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(b"wrong")]}});
        let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
        let cfg_digest = lb.blob(&cfg_bytes);
        let manifest = json!({"schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_bytes.len()},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer_digest, "size": gz.len()}]});
        let mb = serde_json::to_vec(&manifest).unwrap();
        let md = lb.blob(&mb);
        lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(), "annotations": {ANNOTATION: "bad:1"}})]);
        let err = store.import_oci_layout(&layout, None).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(count(&root.join("snapshots")), 0);
        assert_eq!(count(&root.join("tmp")), 0);
        assert!(store.list().unwrap().is_empty());

        // zstd layers
        let manifest = json!({"schemaVersion": 2,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_bytes.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": layer_digest, "size": gz.len()}]});
        let mb = serde_json::to_vec(&manifest).unwrap();
        let md = lb.blob(&mb);
        lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(), "annotations": {ANNOTATION: "bad:1"}})]);
        // A gzip blob labelled zstd: the decoder refuses it and nothing is published.
        let err = store.import_oci_layout(&layout, None).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert_eq!(count(&root.join("snapshots")), 0);

        // tampered blob
        let layout = t.path().join("tampered");
        let built = simple_layout(&layout, "t:1", "t");
        let _ = built;
        let img = LayoutBuilder {
            dir: layout.clone(),
        };
        let layer_path = fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
            .unwrap();
        let mut data = fs::read(&layer_path).unwrap();
        let n = data.len();
        data[n - 5] ^= 0x55;
        fs::write(&layer_path, data).unwrap();
        // (a fresh store: the other one already holds verified copies of these layers)
        let fresh = open_store(&t.path().join("images2"), linux_amd64());
        let err = fresh.import_oci_layout(&img.dir, None).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        assert_eq!(count(&t.path().join("images2/tmp")), 0);

        // garbage JSON, missing files, missing blobs
        let layout = t.path().join("garbage");
        let lb = LayoutBuilder::new(&layout);
        fs::write(layout.join("index.json"), b"{not json").unwrap();
        assert!(matches!(
            store.import_oci_layout(&layout, None),
            Err(Error::InvalidLayout(_))
        ));
        lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(b"x"), "size": 1})]);
        let err = store.import_oci_layout(&layout, Some("x")).unwrap_err();
        assert!(matches!(err, Error::InvalidLayout(_)), "{err}");
        lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../../etc/passwd", "size": 1})]);
        assert!(store.import_oci_layout(&layout, Some("x")).is_err());
        lb.index_json(vec![]);
        assert!(matches!(
            store.import_oci_layout(&layout, Some("x")),
            Err(Error::InvalidLayout(_))
        ));
        assert!(matches!(
            store.import_oci_layout(&t.path().join("nonexistent"), Some("x")),
            Err(Error::InvalidLayout(_))
        ));
        assert_eq!(count(&root.join("tmp")), 0);
    }

    #[test]
    fn concurrent_imports_of_the_same_image() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("images");
        let layout = t.path().join("l");
        simple_layout(&layout, "busybox:1", "c");
        let stores: Vec<_> = (0..4)
            .map(|_| Arc::new(open_store(&root, linux_amd64())))
            .collect();
        let handles: Vec<_> = stores
            .iter()
            .map(|s| {
                let s = s.clone();
                let layout = layout.clone();
                std::thread::spawn(move || s.import_oci_layout(&layout, None).unwrap())
            })
            .collect();
        let images: Vec<Image> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(images.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(count(&root.join("snapshots")), 2);
        assert_eq!(count(&root.join("tmp")), 0);
        let rootfs = stores[0].rootfs(&images[0]).unwrap();
        assert_eq!(fs::read(rootfs.join("etc/new-file")).unwrap(), b"c");
    }

    #[test]
    fn platform_parse_and_host() {
        let p = Platform::parse("darwin/arm64/v8").unwrap();
        assert_eq!(p.to_string(), "darwin/arm64/v8");
        assert_eq!(p.variant.as_deref(), Some("v8"));
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""] {
            assert!(Platform::parse(bad).is_err(), "{bad}");
        }
        let h = Platform::host();
        assert_ne!(h.os, "macos");
        assert!(!["x86_64", "aarch64"].contains(&h.architecture.as_str()));
    }

    #[test]
    fn store_is_shareable() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<ImageStore>();
        assert_send_sync::<Arc<dyn TreeCloner>>();
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = sha(b"a");
        let b = sha(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], sha(format!("{a} {b}").as_bytes()));
        assert!(chain_ids(&[]).is_empty());
    }
}
