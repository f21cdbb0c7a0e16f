//! Removal, leases and garbage collection: a name goes at once; content and snapshots go when no
//! name and no lease (a container's hold on its image) needs them.

use super::*;

pub(super) fn remove_path(path: &Path) -> io::Result<()> {
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
    /// Removes a name, or the image: a tag of an image with other tags is untagged;
    /// otherwise (the last tag, a repo digest, the id) the image and all its names go at once,
    /// then unused snapshots and blobs are garbage-collected. As with containerd, an image that
    /// containers still use is removed too: their leases keep its snapshot (what their roots
    /// are made of) until they are removed, and the collection after the last release takes
    /// it. Returns `false` when nothing matched.
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

    /// Deletes what a process killed mid-work left in `tmp/` (half-built snapshots, private
    /// downloads), when no pull, import or build holds the store; else leaves it for the next
    /// collection. The server calls it at start.
    pub fn sweep_tmp(&self) -> Result<()> {
        let Ok(lock) = Flock::lock(self.open_lock_file()?, FlockArg::LockExclusiveNonblock) else {
            return Ok(());
        };
        for entry in fs::read_dir(self.tmp_dir()).into_iter().flatten().flatten() {
            tracing::debug!(path = %entry.path().display(), "removing a leftover");
            remove_path(&entry.path()).ctx(|| format!("remove {}", entry.path().display()))?;
        }
        drop(lock);
        Ok(())
    }

    /// Deletes snapshots and blobs no image references, and leftovers in `tmp/`.
    ///
    /// Runs only under the exclusive `gc.lock` flock; imports hold it shared for their
    /// whole duration, so a blob or snapshot an import is about to use cannot vanish.
    /// When an import runs, collection is skipped (the next removal collects).
    pub(super) fn gc(&self) -> Result<()> {
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
        // Layers converted for a push live as long as the layer they were made from.
        let converted = self.root.join("converted");
        for e in fs::read_dir(&converted).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let source = name.split('.').next().unwrap_or_default();
            let target = fs::read_to_string(e.path()).unwrap_or_default();
            let target = target
                .split(' ')
                .next()
                .and_then(|d| d.strip_prefix("sha256:"));
            match target {
                Some(t) if blobs.contains(source) => {
                    blobs.insert(t.to_string());
                }
                _ => {
                    let _ = fs::remove_file(e.path());
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

    pub(super) fn lease_path(&self, holder: &str) -> Result<PathBuf> {
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
    pub(super) fn leases(&self) -> Result<Vec<(String, String)>> {
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

    /// Ends `holder`'s lease; a missing lease is fine. A snapshot only that lease kept (its
    /// image was removed meanwhile) is collected.
    pub fn release(&self, holder: &str) -> Result<()> {
        let path = self.lease_path(holder)?;
        let chain = fs::read_to_string(&path).unwrap_or_default();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::Io {
                    context: format!("remove {}", path.display()),
                    source: e,
                });
            }
            Err(_) => return Ok(()),
            Ok(()) => {}
        }
        let orphaned = !chain.trim().is_empty()
            && self.snapshots_dir().join(chain.trim()).exists()
            && !self.load_metas()?.iter().any(|(_, m)| {
                m.chain_ids
                    .iter()
                    .chain([&m.chain_id])
                    .any(|c| c.strip_prefix("sha256:") == Some(chain.trim()))
            });
        if orphaned {
            self.gc()?;
        }
        Ok(())
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
                Err(e) => {
                    return Err(e)
                        .ctx(|| format!("read {}", dir.display()))
                        .map_err(Into::into);
                }
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
}
