//! Making images in the store: new layers over a stored image (or none), names given to a stored
//! image, and a stored image written out as an OCI layout.
//!
//! A new image keeps its base's config document as it is (fields this crate does not model
//! included) and its base's manifest kind (Docker schema 2 or OCI), appends the layers' DiffIDs
//! and history, and is recorded like a pulled one: blobs, a snapshot per new ChainID, metadata,
//! names. The CRI sees it at the next ListImages; RemoveImage and GC treat it like any other.

use serde_json::{Value, json};

use super::*;
use crate::Compression;
use crate::layer::LayerBlob;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// One layer of a new image, or a step that made none (ENV, CMD…), with its history line.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub blob: Option<LayerBlob>,
    pub created_by: String,
}

/// What a new image is made of.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    /// The stored image it extends; `None` starts from nothing (scratch).
    pub base: Option<Image>,
    /// For an image from nothing: `os`, `architecture`, `os.version` (empty: none).
    pub platform: (String, String, String),
    pub layers: Vec<NewLayer>,
    /// Replaces the config's `config` object (Env, Cmd, User…) when set.
    pub runtime_config: Option<Value>,
    /// RFC 3339 `created`; `None` is now. Reproducible images fix it.
    pub created: Option<String>,
    /// Names to give it (normalized here).
    pub names: Vec<String>,
}

/// The stored documents of an image.
#[derive(Debug, Clone)]
pub struct ImageDocuments {
    pub manifest: Value,
    pub manifest_bytes: Vec<u8>,
    pub manifest_media_type: String,
    pub config: Value,
    pub config_bytes: Vec<u8>,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Writes a file of a layout that may be on another file system than the store: the temporary
/// file sits beside it.
fn write_beside(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.partial"));
    fs::write(&tmp, bytes)
        .and_then(|()| fs::rename(&tmp, path))
        .ctx(|| format!("write {}", path.display()))?;
    Ok(())
}

/// A hold on the store that keeps garbage collection out (it would take a layer in the making
/// for debris): held by whoever makes layers, from the first one until the image is recorded.
#[derive(Debug)]
pub struct StoreHold {
    _lock: Flock<File>,
}

impl ImageStore {
    /// Keeps garbage collection out while layers are made (see [`StoreHold`]).
    pub fn hold(&self) -> Result<StoreHold> {
        Ok(StoreHold {
            _lock: self.lock_shared()?,
        })
    }

    /// A new, empty directory in the store's temporary space (the store's file system, so that
    /// what is made there can be moved in); the caller removes it.
    pub fn new_work_dir(&self) -> Result<PathBuf> {
        let dir = self
            .tmp_dir()
            .join(random_name().ctx(|| "random name".to_string())?);
        fs::create_dir_all(&dir).ctx(|| format!("create {}", dir.display()))?;
        Ok(dir)
    }

    /// A new layer written into the store's temporary space; hold the store meanwhile.
    pub fn layer_writer(
        &self,
        compression: Compression,
        opts: crate::layer::TarOptions,
    ) -> Result<crate::layer::LayerWriter> {
        crate::layer::LayerWriter::new(&self.tmp_dir(), compression, opts)
    }

    /// Ends a layer and keeps it as a blob.
    pub fn store_layer(&self, writer: crate::layer::LayerWriter) -> Result<LayerBlob> {
        writer.finish(&self.blobs_dir())
    }

    /// Unpacks a new layer over the snapshot `parent` (none: over nothing); the new ChainID.
    /// The snapshot stays while the store is held, and after that as long as an image uses it.
    pub fn add_layer_snapshot(&self, parent: Option<&str>, blob: &LayerBlob) -> Result<String> {
        let chain = match parent {
            None => blob.diff_id.clone(),
            Some(p) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{p} {}", blob.diff_id).as_bytes()))
            ),
        };
        let path = self.blob_path(&blob.digest)?;
        self.ensure_snapshot(
            parent,
            &chain,
            &path,
            blob.compression,
            &blob.diff_id,
            false,
        )?;
        Ok(chain)
    }

    /// The unpacked tree of the ChainID `chain`.
    pub fn snapshot_path(&self, chain: &str) -> Result<PathBuf> {
        let path = self.snapshots_dir().join(sha256_hex(chain)?);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(Error::NotFound(format!("snapshot {chain}")))
        }
    }

    /// The ChainID of an image's top layer, `None` for an image without layers.
    pub fn top_chain(&self, image: &Image) -> Result<Option<String>> {
        let docs = self.documents(image)?;
        let layers = docs.config["rootfs"]["diff_ids"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0);
        Ok((layers > 0).then(|| image.chain_id.clone()))
    }

    /// Where the blob `digest` is kept, if the store has it.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let path = self.blobs_dir().join(sha256_hex(digest)?);
        if path.is_file() {
            Ok(path)
        } else {
            Err(Error::NotFound(format!("blob {digest}")))
        }
    }

    fn read_json_blob(&self, digest: &str) -> Result<(Vec<u8>, Value)> {
        let bytes = fs::read(self.blob_path(digest)?).ctx(|| format!("read blob {digest}"))?;
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::InvalidLayout(format!("blob {digest}: {e}")))?;
        Ok((bytes, value))
    }

    /// The manifest and config of a stored image.
    pub fn documents(&self, image: &Image) -> Result<ImageDocuments> {
        let (manifest_bytes, manifest) = self.read_json_blob(&image.manifest_digest)?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| Error::InvalidLayout(format!("manifest of {} has no config", image.id)))?
            .to_string();
        let (config_bytes, config) = self.read_json_blob(&config_digest)?;
        let manifest_media_type = manifest["mediaType"]
            .as_str()
            .unwrap_or(OCI_MANIFEST)
            .to_string();
        Ok(ImageDocuments {
            manifest,
            manifest_bytes,
            manifest_media_type,
            config,
            config_bytes,
        })
    }

    /// Stores a JSON document as a blob; its digest and size.
    pub fn put_json_blob(&self, value: &Value) -> Result<(String, u64, Vec<u8>)> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::InvalidLayout(format!("serialize: {e}")))?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        let path = self.blobs_dir().join(sha256_hex(&digest)?);
        if !path.is_file() {
            write_atomic(&self.tmp_dir(), &path, &bytes)?;
        }
        Ok((digest, bytes.len() as u64, bytes))
    }

    /// The layer blob `digest` (compressed as `from`) in `to`: converted once, then kept and
    /// found again (`converted/<hex>.<to>`), so a second push of the layer sends nothing new.
    pub fn converted_layer(
        &self,
        digest: &str,
        from: Compression,
        to: Compression,
    ) -> Result<(String, u64)> {
        let suffix = to.name();
        let dir = self.root.join("converted");
        ensure_dir(&dir)?;
        let record = dir.join(format!("{}.{suffix}", sha256_hex(digest)?));
        if let Ok(text) = fs::read_to_string(&record)
            && let Some((d, size)) = text.trim().split_once(' ')
            && let Ok(size) = size.parse::<u64>()
            && self.blob_path(d).is_ok()
        {
            return Ok((d.to_string(), size));
        }
        let file = File::open(self.blob_path(digest)?).ctx(|| format!("open blob {digest}"))?;
        let reader = BufReader::with_capacity(256 << 10, file);
        let tar = from.decoder(reader)?;
        let blob = crate::layer::recompress(&self.tmp_dir(), &self.blobs_dir(), tar, to)?;
        write_atomic(
            &self.tmp_dir(),
            &record,
            format!("{} {}", blob.digest, blob.size).as_bytes(),
        )?;
        Ok((blob.digest, blob.size))
    }

    /// Records that the image is `name` (`repo@digest`) in a registry.
    pub fn add_repo_digest(&self, image: &Image, name: &str) -> Result<()> {
        self.write_ref(name, &image.id)?;
        self.invalidate();
        Ok(())
    }

    /// Gives the stored image `source` the name `target` too.
    pub fn tag(&self, source: &str, target: &str) -> Result<Image> {
        let image = self
            .resolve(source)?
            .ok_or_else(|| Error::NotFound(source.to_string()))?;
        let name = reference::normalize(target)?;
        if name.contains('@') {
            return Err(Error::InvalidReference(format!(
                "{target:?}: a tag is a name, not a digest"
            )));
        }
        self.write_ref(&name, &image.id)?;
        self.invalidate();
        self.resolve(&image.id)?
            .ok_or_else(|| Error::NotFound(image.id.clone()))
    }

    /// Records a new image: its layers' snapshots, config and manifest blobs, metadata and names.
    pub fn create_image(&self, new: NewImage) -> Result<Image> {
        let _lock = self.lock_shared()?;
        let (mut config, mut manifest, base_chain) = match &new.base {
            Some(base) => {
                let docs = self.documents(base)?;
                (docs.config, docs.manifest, Some(base.chain_id.clone()))
            }
            None => {
                let (os, arch, version) = &new.platform;
                let mut c = json!({
                    "architecture": arch,
                    "os": os,
                    "config": {},
                    "rootfs": {"type": "layers", "diff_ids": []},
                    "history": [],
                });
                if !version.is_empty() {
                    c["os.version"] = json!(version);
                }
                let m = json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {},
                    "layers": [],
                });
                (c, m, None)
            }
        };
        let docker = manifest["mediaType"].as_str() == Some(DOCKER_MANIFEST);
        let created = new.created.clone().unwrap_or_else(now_rfc3339);
        if !config["rootfs"]["diff_ids"].is_array() {
            config["rootfs"] = json!({"type": "layers", "diff_ids": []});
        }
        if !config["history"].is_array() {
            config["history"] = json!([]);
        }
        if !manifest["layers"].is_array() {
            manifest["layers"] = json!([]);
        }
        // Snapshots of the new layers, each over the one below.
        let base_diffs = config["rootfs"]["diff_ids"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0);
        let mut parent = if base_diffs == 0 { None } else { base_chain };
        let keep = new
            .names
            .iter()
            .any(|n| self.keeps_setuid_of(&reference::normalize(n).unwrap_or_default()));
        for l in &new.layers {
            let mut entry = json!({"created": created, "created_by": l.created_by});
            if let Some(blob) = &l.blob {
                let chain = match &parent {
                    None => blob.diff_id.clone(),
                    Some(p) => format!(
                        "sha256:{}",
                        hex::encode(Sha256::digest(format!("{p} {}", blob.diff_id).as_bytes()))
                    ),
                };
                let path = self.blob_path(&blob.digest)?;
                self.ensure_snapshot(
                    parent.as_deref(),
                    &chain,
                    &path,
                    blob.compression,
                    &blob.diff_id,
                    keep,
                )?;
                parent = Some(chain);
                push(&mut config["rootfs"]["diff_ids"], json!(blob.diff_id));
                push(
                    &mut manifest["layers"],
                    json!({
                        "mediaType": blob.compression.media_type(docker),
                        "digest": blob.digest,
                        "size": blob.size,
                    }),
                );
            } else {
                entry["empty_layer"] = json!(true);
            }
            push(&mut config["history"], entry);
        }
        if let Some(rc) = new.runtime_config {
            config["config"] = rc;
        }
        config["created"] = json!(created);
        let (config_digest, config_size, config_bytes) = self.put_json_blob(&config)?;
        manifest["config"] = json!({
            "mediaType": if docker { "application/vnd.docker.container.image.v1+json" } else { OCI_CONFIG },
            "digest": config_digest,
            "size": config_size,
        });
        let (manifest_digest, _, _) = self.put_json_blob(&manifest)?;
        let parsed: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| Error::InvalidLayout(format!("the new image's config: {e}")))?;
        let layers: Vec<(String, u64)> = manifest["layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|l| {
                        (
                            l["digest"].as_str().unwrap_or_default().to_string(),
                            l["size"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let platform = offer_of_config(&parsed).to_string();
        let names = new
            .names
            .iter()
            .map(|n| reference::normalize(n))
            .collect::<Result<Vec<_>>>()?;
        self.commit(&Commit {
            names,
            manifest_digest,
            index_digest: None,
            config_digest,
            config_size,
            config: &parsed,
            layers,
            platform,
        })
    }

    /// Writes the stored image `reference` as an OCI image layout in `dir` (made if missing; an
    /// existing layout gains the image): what `skopeo copy oci:DIR` and `ctr image import`
    /// read, for farms without a registry.
    pub fn save_oci_layout(&self, reference: &str, dir: &Path) -> Result<Image> {
        let image = self
            .resolve(reference)?
            .ok_or_else(|| Error::NotFound(reference.to_string()))?;
        let docs = self.documents(&image)?;
        let blobs = dir.join("blobs").join("sha256");
        ensure_dir(&blobs)?;
        let mut digests = vec![
            image.manifest_digest.clone(),
            docs.manifest["config"]["digest"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        ];
        for l in docs.manifest["layers"].as_array().into_iter().flatten() {
            digests.push(l["digest"].as_str().unwrap_or_default().to_string());
        }
        for d in &digests {
            let src = self.blob_path(d)?;
            let dest = blobs.join(sha256_hex(d)?);
            if dest.is_file() {
                continue;
            }
            // A link where the layout is on the store's file system, else a copy.
            if fs::hard_link(&src, &dest).is_err() {
                let tmp = blobs.join(format!(".{}.partial", sha256_hex(d)?));
                fs::copy(&src, &tmp).ctx(|| format!("copy {d} to {}", dir.display()))?;
                fs::rename(&tmp, &dest).ctx(|| format!("write {}", dest.display()))?;
            }
        }
        write_beside(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        let index_path = dir.join("index.json");
        let mut index: Value = match fs::read(&index_path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::InvalidLayout(format!("{}: {e}", index_path.display())))?,
            Err(_) => json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}),
        };
        let name = image
            .repo_tags
            .first()
            .cloned()
            .unwrap_or_else(|| reference.to_string());
        let tag = name.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
        let (os, rest) = image.platform.split_once('/').unwrap_or(("", ""));
        let architecture = rest.split('/').next().unwrap_or_default();
        let mut platform = json!({"os": os, "architecture": architecture});
        if let Some(v) = docs.config["os.version"].as_str() {
            platform["os.version"] = json!(v);
        }
        let entry = json!({
            "mediaType": docs.manifest_media_type,
            "digest": image.manifest_digest,
            "size": docs.manifest_bytes.len(),
            "platform": platform,
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        });
        let manifests = index["manifests"].as_array_mut().ok_or_else(|| {
            Error::InvalidLayout(format!("{} has no manifests list", index_path.display()))
        })?;
        manifests.retain(|m| m["annotations"]["io.containerd.image.name"].as_str() != Some(&name));
        manifests.push(entry);
        let bytes = serde_json::to_vec_pretty(&index)
            .map_err(|e| Error::InvalidLayout(format!("serialize index: {e}")))?;
        write_beside(&index_path, &bytes)?;
        Ok(image)
    }
}

fn push(array: &mut Value, item: Value) {
    if let Some(a) = array.as_array_mut() {
        a.push(item);
    }
}
