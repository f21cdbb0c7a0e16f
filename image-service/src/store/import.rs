//! Importing images: an OCI layout (index, manifests, configs, layers) verified and committed
//! under its names, with the platform choice for multi-platform indexes.

use super::*;

/// The name an import registers: the explicit name, else `io.containerd.image.name`,
/// else a full `org.opencontainers.image.ref.name`.
pub(super) fn image_name(explicit: Option<&str>, cand: &Candidate) -> Result<String> {
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

pub(super) fn config_from_oci(cfg: &oci_spec::image::ImageConfiguration) -> ImageConfig {
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

impl ImageStore {
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
            let compression = crate::Compression::from_media_type(l.media_type().as_ref())?;
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
            let keep = self.keeps_setuid_of(&image_name);
            self.ensure_snapshot(parent, chain, path, *compression, &diff_ids[i], keep)?;
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

    pub(super) fn write_ref(&self, name: &str, id: &str) -> Result<()> {
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

    pub(super) fn select(
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
}
