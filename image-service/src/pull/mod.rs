//! Pulling images from registries into the store.
//!
//! A pull resolves the reference on the first endpoint that answers (mirrors in order,
//! then the origin), picks the node's platform from an index, and downloads layers in
//! parallel; each layer is unpacked while it downloads, as soon as its parent's snapshot is
//! there (reading the bytes that have landed, and finishing only once the blob is verified).
//! Blobs stream through a verifying writer into
//! `ingest/<hex>`, renamed into `blobs/sha256/` only once size and digest match; a
//! dropped connection keeps the partial file and the download resumes with a `Range`
//! request (in the same pull, or the next one after a crash). Concurrent pulls in one
//! process share each blob download and each snapshot build.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use sha2::{Digest as _, Sha256};
use tokio::sync::{OwnedMutexGuard, Semaphore};
use tokio::task::JoinHandle;

use crate::content::{MAX_JSON_SIZE, create_tmp_file, verify_bytes, write_atomic};
use crate::layout::{CONFIG_TYPES, INDEX_TYPES, MANIFEST_TYPES};
use crate::platform::{Offer, choose};
use crate::registry::{Credentials, Endpoint, Registry, describe};
use crate::store::{Commit, ImageStore, checked_chain_ids, offer_of_config, offer_of_descriptor};
use crate::{Compression, Error, Image, IoContext, Platform, Result, reference, sha256_hex};

mod download;

/// What a pull reports as it goes (for progress bars and metrics).
#[derive(Debug, Clone)]
pub enum PullEvent {
    /// The manifest is known: its digest and the layers (digest, compressed size).
    Resolved {
        /// Manifest digest.
        manifest: String,
        /// Layers in order.
        layers: Vec<(String, u64)>,
    },
    /// `bytes` more bytes of blob `digest` arrived.
    Progress {
        /// Blob digest.
        digest: String,
        /// Bytes since the last event.
        bytes: u64,
    },
    /// Blob `digest` is in the store (downloaded or already present).
    BlobDone {
        /// Blob digest.
        digest: String,
        /// Whether it had to be downloaded.
        downloaded: bool,
    },
    /// The layer's snapshot is built (or was already).
    Unpacked {
        /// Layer digest.
        digest: String,
    },
}

/// Receives [`PullEvent`]s.
pub type Progress = Arc<dyn Fn(PullEvent) + Send + Sync>;

/// How one pull is made.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// Credentials for the image's registry (kubelet's AuthConfig).
    pub credentials: Credentials,
    /// Overrides the store's platform.
    pub platform: Option<Platform>,
    /// Progress receiver.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PullOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullOptions")
            .field("credentials", &self.credentials)
            .field("platform", &self.platform)
            .finish_non_exhaustive()
    }
}

/// Async mutexes by key (blob digest, ChainID).
#[derive(Debug, Default)]
struct KeyedLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if map.len() > 256 {
                map.retain(|_, m| Arc::strong_count(m) > 1);
            }
            map.entry(key.to_string()).or_default().clone()
        };
        m.lock_owned().await
    }
}

/// Pulls images into an [`ImageStore`].
#[derive(Debug, Clone)]
pub struct Puller {
    inner: Arc<PullerInner>,
}

#[derive(Debug)]
struct PullerInner {
    store: Arc<ImageStore>,
    registry: Registry,
    downloads: usize,
    blobs: KeyedLocks,
    snapshots: KeyedLocks,
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Where a pull reads from, once resolved.
struct Source<'a> {
    ep: Endpoint,
    repo: String,
    creds: &'a Credentials,
}

fn emit(progress: &Option<Progress>, e: PullEvent) {
    if let Some(p) = progress {
        p(e);
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            context: "background task".into(),
            source: io::Error::other(e.to_string()),
        })?
}

impl Puller {
    /// A puller for `store` through `registry`, with at most `downloads` blob downloads
    /// at once (per pull).
    pub fn new(store: Arc<ImageStore>, registry: Registry, downloads: usize) -> Puller {
        Puller {
            inner: Arc::new(PullerInner {
                store,
                registry,
                downloads: downloads.max(1),
                blobs: KeyedLocks::default(),
                snapshots: KeyedLocks::default(),
            }),
        }
    }

    /// The store pulled into.
    pub fn store(&self) -> &Arc<ImageStore> {
        &self.inner.store
    }

    /// Pulls `reference` and returns the stored image (its id is the config digest).
    pub async fn pull(&self, reference: &str, opts: PullOptions) -> Result<Image> {
        let parsed = reference::parse(reference)?;
        let normalized = parsed.whole();
        let registry = parsed.registry().to_string();
        let repo = parsed.repository().to_string();
        let target = match (parsed.digest(), parsed.tag()) {
            (Some(d), _) => {
                sha256_hex(d).map_err(|_| {
                    Error::InvalidReference(format!(
                        "{reference:?}: only sha256 digests are supported"
                    ))
                })?;
                d.to_string()
            }
            (None, Some(t)) => t.to_string(),
            (None, None) => "latest".to_string(),
        };
        let wanted = opts
            .platform
            .clone()
            .unwrap_or_else(|| self.inner.store.platform().clone());

        // Garbage collection waits (or is skipped) while any pull holds this.
        let store = Arc::clone(&self.inner.store);
        let _gc_guard = blocking(move || store.lock_shared()).await?;

        // The first endpoint that has the manifest serves the whole pull.
        let mut last_err = None;
        let mut resolved = None;
        for ep in self.inner.registry.endpoints(&registry) {
            let src = Source {
                ep: ep.clone(),
                repo: repo.clone(),
                creds: &opts.credentials,
            };
            match self.fetch_manifest(&src, &target).await {
                Ok(m) => {
                    resolved = Some((src, m));
                    break;
                }
                Err(e) if ep.is_mirror => {
                    tracing::info!(mirror = %ep.host, image = %normalized, error = %e, "mirror failed; trying the next endpoint");
                    last_err = Some(e);
                }
                Err(e) => {
                    last_err = Some(e);
                    break;
                }
            }
        }
        let Some((src, (top_bytes, top_type, top_digest))) = resolved else {
            return Err(last_err.unwrap_or_else(|| Error::Registry("no endpoint".into())));
        };

        // An index resolves to the node's platform (one level of nesting allowed).
        let mut index_digest = None;
        let (mut bytes, mut media_type, mut digest) = (top_bytes, top_type, top_digest);
        let mut chosen_from_index = None;
        for _ in 0..2 {
            if !INDEX_TYPES.contains(&media_type.as_str()) {
                break;
            }
            let index: ImageIndex = parse_json(&bytes, "image index")?;
            if index_digest.is_none() {
                index_digest = Some((digest.clone(), bytes.clone()));
            }
            let entries: Vec<_> = index
                .manifests()
                .iter()
                .filter(|d| {
                    let t = d.media_type().to_string();
                    MANIFEST_TYPES.contains(&t.as_str()) || INDEX_TYPES.contains(&t.as_str())
                })
                .collect();
            let offers: Vec<Offer> = entries
                .iter()
                .map(|d| offer_of_descriptor(d).unwrap_or_default())
                .collect();
            let i = choose(&wanted, &offers).map_err(|available| Error::NoMatchingPlatform {
                wanted: wanted.to_string(),
                reference: normalized.clone(),
                available,
            })?;
            let child = entries[i];
            let child_digest = child.digest().to_string();
            sha256_hex(&child_digest)?;
            let (b, t, d) = self.fetch_manifest(&src, &child_digest).await?;
            if b.len() as u64 != child.size() {
                return Err(Error::InvalidLayout(format!(
                    "manifest {child_digest} has size {}, the index says {}",
                    b.len(),
                    child.size()
                )));
            }
            chosen_from_index = Some(offers[i].to_string());
            (bytes, media_type, digest) = (b, t, d);
        }
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(Error::InvalidLayout(format!(
                "{normalized}: unsupported manifest media type {media_type:?}"
            )));
        }
        let manifest: ImageManifest = parse_json(&bytes, "image manifest")?;
        let config_desc = manifest.config().clone();
        let config_type = config_desc.media_type().to_string();
        if !CONFIG_TYPES.contains(&config_type.as_str()) {
            return Err(Error::InvalidLayout(format!(
                "unsupported config media type {config_type:?}"
            )));
        }
        let config_digest = config_desc.digest().to_string();
        sha256_hex(&config_digest)?;
        if config_desc.size() > MAX_JSON_SIZE {
            return Err(Error::InvalidLayout(format!(
                "image config is larger than {MAX_JSON_SIZE} bytes"
            )));
        }
        let config_bytes = src
            .get_blob_small(&self.inner.registry, &config_digest, config_desc.size())
            .await?;
        let config: ImageConfiguration = parse_json(&config_bytes, "image config")?;
        let offer = offer_of_config(&config);
        if !wanted.matches(&offer.os, &offer.architecture, None) {
            return Err(match &chosen_from_index {
                Some(listed) => Error::InvalidLayout(format!(
                    "manifest {digest} is listed as {listed} but its config says {offer}"
                )),
                None => Error::NoMatchingPlatform {
                    wanted: wanted.to_string(),
                    reference: normalized.clone(),
                    available: vec![offer.to_string()],
                },
            });
        }
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(Error::InvalidLayout(format!(
                "manifest has {} layers but config lists {} diff_ids",
                manifest.layers().len(),
                diff_ids.len()
            )));
        }
        let chains = checked_chain_ids(&diff_ids)?;
        let mut layers = Vec::with_capacity(manifest.layers().len());
        for l in manifest.layers() {
            let d = l.digest().to_string();
            sha256_hex(&d)?;
            layers.push((
                d,
                l.size(),
                Compression::from_media_type(l.media_type().as_ref())?,
            ));
        }
        emit(
            &opts.progress,
            PullEvent::Resolved {
                manifest: digest.clone(),
                layers: layers.iter().map(|l| (l.0.clone(), l.1)).collect(),
            },
        );

        let keep_setuid = self.inner.store.keeps_setuid_of(reference);
        self.fetch_layers(
            &src,
            &layers,
            &chains,
            &diff_ids,
            keep_setuid,
            &opts.progress,
        )
        .await?;

        // Small blobs last: an image's manifest in the store means it is complete.
        let store = Arc::clone(&self.inner.store);
        let mut small = vec![
            (config_digest.clone(), config_bytes),
            (digest.clone(), bytes),
        ];
        if let Some((d, b)) = &index_digest {
            small.push((d.clone(), b.clone()));
        }
        let names = {
            let repo_name = format!("{registry}/{repo}");
            let mut n = Vec::new();
            if let Some(t) = parsed.tag() {
                n.push(format!("{repo_name}:{t}"));
            } else if parsed.digest().is_none() {
                n.push(format!("{repo_name}:latest"));
            }
            let top = index_digest
                .as_ref()
                .map(|(d, _)| d.clone())
                .unwrap_or(digest.clone());
            n.push(format!("{repo_name}@{top}"));
            n
        };
        let platform = chosen_from_index.unwrap_or_else(|| offer.to_string());
        let layer_list: Vec<(String, u64)> = layers.iter().map(|l| (l.0.clone(), l.1)).collect();
        let index_d = index_digest.map(|(d, _)| d);
        let config_size = config_desc.size();
        blocking(move || {
            for (d, b) in &small {
                let dest = store.blobs_dir().join(sha256_hex(d)?);
                if !dest.is_file() {
                    write_atomic(&store.tmp_dir(), &dest, b)?;
                }
            }
            store.commit(&Commit {
                names,
                manifest_digest: digest,
                index_digest: index_d,
                config_digest,
                config_size,
                config: &config,
                layers: layer_list,
                platform,
            })
        })
        .await
    }

    /// GETs a manifest by tag or digest: (bytes, media type, digest). A digest
    /// reference must match what arrives.
    async fn fetch_manifest(
        &self,
        src: &Source<'_>,
        target: &str,
    ) -> Result<(Vec<u8>, String, String)> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(MANIFEST_ACCEPT));
        let reply = self
            .inner
            .registry
            .get(
                &src.ep,
                &src.repo,
                &format!("manifests/{target}"),
                h,
                src.creds,
            )
            .await?;
        let content_type = reply
            .header("content-type")
            .map(|c| c.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let bytes = reply.bytes_limited(MAX_JSON_SIZE, "manifest").await?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        if target.starts_with("sha256:") && digest != target {
            return Err(Error::DigestMismatch {
                expected: target.to_string(),
                actual: digest,
            });
        }
        let media_type = media_type_of(&bytes, &content_type)
            .map_err(|e| Error::InvalidLayout(format!("{}: {e}", src.repo)))?;
        Ok((bytes, media_type, digest))
    }

    /// Downloads the layers (at most `downloads` at once) and builds each snapshot as soon as
    /// its parent is there, from the blob's bytes as they arrive.
    ///
    /// Snapshots stay one full tree per ChainID (DESIGN.md: an APFS clone of the parent on
    /// macOS, a hard-linked copy on Linux), so layers apply one after the other; what overlaps
    /// is each layer's download with its own unpacking and with the unpacking of the layers
    /// below it, and (in [`crate::unpack`]) decoding with file creation.
    async fn fetch_layers(
        &self,
        src: &Source<'_>,
        layers: &[(String, u64, Compression)],
        chains: &[String],
        diff_ids: &[String],
        keep_setuid: bool,
        progress: &Option<Progress>,
    ) -> Result<()> {
        let store = &self.inner.store;
        // A snapshot present for the top layer means nothing is to be unpacked; blobs
        // are still completed so the content store holds the whole image.
        let sem = Arc::new(Semaphore::new(self.inner.downloads));
        let mut tasks: Vec<JoinHandle<Result<PathBuf>>> = Vec::with_capacity(layers.len());
        let growing: Vec<Arc<download::Growing>> = layers.iter().map(|_| Arc::default()).collect();
        for ((digest, size, _), growing) in layers.iter().zip(&growing) {
            let this = self.clone();
            let sem = Arc::clone(&sem);
            let growing = Arc::clone(growing);
            let (ep, repo, creds) = (src.ep.clone(), src.repo.clone(), src.creds.clone());
            let (digest, size, progress) = (digest.clone(), *size, progress.clone());
            tasks.push(tokio::spawn(async move {
                // However the task ends (an abort included), the layer's follower stops waiting.
                struct Abandon(Arc<download::Growing>);
                impl Drop for Abandon {
                    fn drop(&mut self) {
                        self.0.abandon();
                    }
                }
                let _abandon = Abandon(Arc::clone(&growing));
                let _permit = sem
                    .acquire_owned()
                    .await
                    .map_err(|_| Error::Registry("closed".into()))?;
                let src = Source {
                    ep,
                    repo,
                    creds: &creds,
                };
                this.fetch_blob(&src, &digest, size, &progress, &growing)
                    .await
            }));
        }
        struct AbortAll(Vec<tokio::task::AbortHandle>);
        impl Drop for AbortAll {
            fn drop(&mut self) {
                for h in &self.0 {
                    h.abort();
                }
            }
        }
        let _abort = AbortAll(tasks.iter().map(|t| t.abort_handle()).collect());
        let mut parent: Option<String> = None;
        for (i, task) in tasks.into_iter().enumerate() {
            let chain = chains[i].clone();
            let _g = self.inner.snapshots.lock(&chain).await;
            let (diff_id, compression) = (diff_ids[i].clone(), layers[i].2);
            let (s, p, c, d) = (
                Arc::clone(store),
                parent.clone(),
                chain.clone(),
                diff_id.clone(),
            );
            let follower = growing[i].follow();
            let applied = blocking(move || {
                s.ensure_snapshot_from(p.as_deref(), &c, follower, compression, &d, keep_setuid)
            })
            .await;
            // The download's own error first: it says more than the follower's.
            let path = task.await.map_err(|e| Error::Io {
                context: "download task".into(),
                source: io::Error::other(e.to_string()),
            })??;
            match applied {
                Ok(()) => {}
                // The download started over under the follower: once more, from the blob.
                Err(_) if growing[i].restarted() => {
                    tracing::info!(layer = %layers[i].0, "the layer's download restarted while it unpacked; unpacking it again from the blob");
                    let (s, p, c) = (Arc::clone(store), parent.clone(), chain.clone());
                    blocking(move || {
                        s.ensure_snapshot(
                            p.as_deref(),
                            &c,
                            &path,
                            compression,
                            &diff_id,
                            keep_setuid,
                        )
                    })
                    .await?;
                }
                Err(e) => return Err(e),
            }
            emit(
                progress,
                PullEvent::Unpacked {
                    digest: layers[i].0.clone(),
                },
            );
            parent = Some(chain);
        }
        Ok(())
    }
}

/// The media type of a manifest document: its own `mediaType` wins over a generic
/// Content-Type; without either, the shape decides (docker v1 schemas are refused).
pub(crate) fn media_type_of(bytes: &[u8], content_type: &str) -> Result<String> {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(rename = "schemaVersion", default)]
        schema_version: u32,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    let peek: Peek = parse_json(bytes, "manifest")?;
    Ok(if !peek.media_type.is_empty() {
        peek.media_type
    } else if INDEX_TYPES.contains(&content_type) || MANIFEST_TYPES.contains(&content_type) {
        content_type.to_string()
    } else if peek.manifests.is_some() {
        INDEX_TYPES[0].to_string()
    } else if peek.schema_version == 2 {
        MANIFEST_TYPES[0].to_string()
    } else {
        return Err(Error::InvalidLayout(format!(
            "schema {} manifests (docker v1) are not supported",
            peek.schema_version
        )));
    })
}

/// Entry points for the fuzz targets (`image-service/fuzz`): the parsing a pull does on
/// untrusted documents, and layer unpacking.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Classifies and parses a manifest or index as a pull does, choosing a platform from
    /// an index and checking every digest and media type of a manifest.
    pub fn manifest_document(data: &[u8]) {
        let Ok(media_type) = media_type_of(data, "") else {
            return;
        };
        if INDEX_TYPES.contains(&media_type.as_str()) {
            let Ok(index) = parse_json::<ImageIndex>(data, "index") else {
                return;
            };
            let offers: Vec<Offer> = index
                .manifests()
                .iter()
                .map(|d| offer_of_descriptor(d).unwrap_or_default())
                .collect();
            let mut wanted = Platform {
                os: "darwin".into(),
                architecture: "arm64".into(),
                variant: None,
                os_version: Some("14.5".into()),
            };
            let _ = choose(&wanted, &offers);
            wanted.os = "linux".into();
            wanted.os_version = None;
            let _ = choose(&wanted, &offers);
        } else if let Ok(m) = parse_json::<ImageManifest>(data, "manifest") {
            let _ = sha256_hex(m.config().digest().as_ref());
            for l in m.layers() {
                let _ = sha256_hex(l.digest().as_ref());
                let _ = Compression::from_media_type(l.media_type().as_ref());
            }
        } else if let Ok(c) = parse_json::<ImageConfiguration>(data, "config") {
            let _ = offer_of_config(&c);
            let _ = checked_chain_ids(c.rootfs().diff_ids());
        }
    }

    /// Unpacks `data` (compression chosen by the first byte) into `root`.
    pub fn layer(root: &std::path::Path, data: &[u8]) -> Result<()> {
        let (first, rest) = data.split_first().unwrap_or((&0, &[]));
        let compression = match first % 3 {
            0 => Compression::None,
            1 => Compression::Gzip,
            _ => Compression::Zstd,
        };
        crate::unpack::apply_layer(root, rest, compression, "sha256:0")
    }
}

/// Parses untrusted JSON; the error names the kind and position, never echoes the document.
fn parse_json<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| {
        let mut msg = e.to_string();
        if msg.len() > 200 {
            let mut cut = 200;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
            msg.push_str("...");
        }
        Error::InvalidLayout(format!("malformed {what}: {msg}"))
    })
}
