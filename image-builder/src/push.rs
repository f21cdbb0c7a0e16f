//! Pushing stored images to a registry: the OCI distribution push protocol.
//!
//! For each blob (layers, then the config): a HEAD says whether the repository has it already;
//! a cross-repository mount is asked for where the image came from another repository of the
//! same registry; otherwise an upload session (POST) takes the blob in one PUT, or, past
//! [`PushOptions::chunk_size`], in PATCHed chunks that resume from what the registry says it has
//! after a broken connection. The manifest goes last, by tag. Pushes go to the registry itself,
//! never to a mirror, with the same credentials, CA files and insecure list as pulls; a bearer
//! token is asked for with push scope.
//!
//! Blobs are read from the store a chunk at a time: a layer of any size costs one chunk of
//! memory. Layers are pushed as they are stored, unless another compression is asked for: then
//! each is converted once and kept, so a second push of it sends nothing.

use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde_json::{Value, json};

use image_service::Compression;
use image_service::registry::{Credentials, Registry};
use image_service::{Error, Image, ImageStore, Result, reference};
use platform::IoContext;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Largest index read back from a registry to merge into.
const MAX_INDEX: u64 = 4 << 20;

/// How many times an upload resumes after a broken chunk before it gives up.
const MAX_RESUMES: u32 = 5;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Uploaded.
    Sent,
    /// The repository had it.
    Existed,
    /// Mounted from another repository of the registry.
    Mounted,
}

/// Progress of a push.
#[derive(Debug, Clone)]
pub enum PushEvent {
    /// The blobs to push, with their sizes.
    Started { blobs: Vec<(String, u64)> },
    /// Bytes sent.
    Progress { bytes: u64 },
    BlobDone {
        digest: String,
        outcome: BlobOutcome,
    },
}

type ProgressFn = Arc<dyn Fn(PushEvent) + Send + Sync>;

/// Options of one push.
#[derive(Clone, Default)]
pub struct PushOptions {
    pub credentials: Credentials,
    /// Push layers in this compression (converting those stored otherwise); `None` pushes
    /// them as stored.
    pub compression: Option<Compression>,
    /// Blobs larger than this go in chunks of this size (0: 16 MiB).
    pub chunk_size: usize,
    /// Push the platform manifest alone under the tag, not an index naming it.
    pub manifest_only: bool,
    pub progress: Option<ProgressFn>,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("credentials", &self.credentials)
            .field("compression", &self.compression)
            .field("chunk_size", &self.chunk_size)
            .finish_non_exhaustive()
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `registry/repository:tag`.
    pub name: String,
    pub manifest_digest: String,
    /// The index the tag names (this image's platform merged into what the tag had), unless
    /// the manifest was pushed alone.
    pub index_digest: Option<String>,
    /// Bytes uploaded (blobs the registry had or mounted are not counted).
    pub sent_bytes: u64,
    pub blobs: Vec<(String, BlobOutcome)>,
}

/// Pushes images of a store.
#[derive(Debug, Clone)]
pub struct Pusher {
    store: Arc<ImageStore>,
    registry: Registry,
}

/// The manifest to push and the blobs it names (digest, size), layers first.
struct Prepared {
    manifest: Vec<u8>,
    media_type: String,
    blobs: Vec<(String, u64)>,
    /// The index entry's platform: os, architecture, variant, os.version.
    platform: Value,
}

fn header_value(s: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(s).map_err(|_| Error::Registry(format!("{s:?} is not header text")))
}

async fn error_of(what: &str, resp: reqwest::Response) -> Error {
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            Error::Unauthenticated(format!("{what}: the registry refused ({status}) {body}"))
        }
        _ => Error::Registry(format!("{what}: {status} {body}")),
    }
}

impl Pusher {
    pub fn new(store: Arc<ImageStore>, registry: Registry) -> Pusher {
        Pusher { store, registry }
    }

    /// Pushes the stored image `source` as `dest` (default: its first name).
    pub async fn push(
        &self,
        source: &str,
        dest: Option<&str>,
        opts: PushOptions,
    ) -> Result<Pushed> {
        let image = self
            .store
            .resolve(source)?
            .ok_or_else(|| Error::NotFound(source.to_string()))?;
        let name = match dest {
            Some(d) => reference::normalize(d)?,
            // The name asked for when it is one of the image's, else its first.
            None => reference::normalize(source)
                .ok()
                .filter(|n| image.repo_tags.contains(n))
                .or_else(|| image.repo_tags.first().cloned())
                .ok_or_else(|| {
                    Error::InvalidReference(format!("{source} has no name to push to: give one"))
                })?,
        };
        let parsed = reference::parse(&name)?;
        let host = parsed.registry().to_string();
        let repo = parsed.repository().to_string();
        let target = parsed
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| "latest".to_string());
        let store = Arc::clone(&self.store);
        let (img, compression) = (image.clone(), opts.compression);
        let prepared = tokio::task::spawn_blocking(move || prepare(&store, &img, compression))
            .await
            .map_err(|e| Error::Registry(format!("preparing the push: {e}")))??;
        if let Some(p) = &opts.progress {
            p(PushEvent::Started {
                blobs: prepared.blobs.clone(),
            });
        }
        let ep = self.registry.origin(&host);
        let scope = format!("repository:{repo}:pull,push");
        // Where each blob already is on this registry (images pulled from or pushed to another
        // of its repositories: a base image's layers under an image built on it), for
        // cross-repository mounts.
        let mut mount_sources: std::collections::HashMap<String, String> = Default::default();
        for other in self.store.list()? {
            let Some(from) = other.repo_digests.iter().find_map(|d| {
                let r = reference::parse(d).ok()?;
                (r.registry() == host && r.repository() != repo).then(|| r.repository().to_string())
            }) else {
                continue;
            };
            let Ok(docs) = self.store.documents(&other) else {
                continue;
            };
            let digests = docs.manifest["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain([&docs.manifest["config"]])
                .filter_map(|d| d["digest"].as_str().map(str::to_string));
            for d in digests {
                mount_sources.entry(d).or_insert_with(|| from.clone());
            }
        }
        let chunk = if opts.chunk_size == 0 {
            16 << 20
        } else {
            opts.chunk_size
        };
        let mut sent_bytes = 0;
        let mut outcomes = Vec::new();
        for (digest, size) in &prepared.blobs {
            let (outcome, sent) = self
                .push_blob(
                    &ep,
                    &repo,
                    &scope,
                    digest,
                    *size,
                    mount_sources.get(digest).map(String::as_str),
                    chunk,
                    &opts,
                )
                .await?;
            sent_bytes += sent;
            if let Some(p) = &opts.progress {
                p(PushEvent::BlobDone {
                    digest: digest.clone(),
                    outcome,
                });
            }
            outcomes.push((digest.clone(), outcome));
        }
        let manifest_digest = format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&prepared.manifest))
        );
        // The manifest by digest, then the tag: the manifest itself, or an index naming it with
        // its platform (os.version included, so that pulls choose by macOS version), merged
        // into the index the tag already names: an Intel and an Apple silicon build pushed to
        // one tag make one multi-platform image.
        let reference = if opts.manifest_only {
            target.as_str()
        } else {
            manifest_digest.as_str()
        };
        self.put_manifest(
            &ep,
            &repo,
            reference,
            &prepared.media_type,
            prepared.manifest.clone(),
            &opts.credentials,
            &scope,
        )
        .await?;
        let mut index_digest = None;
        if !opts.manifest_only {
            let entry = json!({
                "mediaType": prepared.media_type,
                "digest": manifest_digest,
                "size": prepared.manifest.len(),
                "platform": prepared.platform,
            });
            let index = self
                .merged_index(&ep, &repo, &target, entry, &opts.credentials, &scope)
                .await?;
            let bytes = serde_json::to_vec(&index)
                .map_err(|e| Error::Registry(format!("serialize index: {e}")))?;
            index_digest = Some(format!(
                "sha256:{}",
                hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes))
            ));
            self.put_manifest(
                &ep,
                &repo,
                &target,
                OCI_INDEX,
                bytes,
                &opts.credentials,
                &scope,
            )
            .await?;
        }
        if manifest_digest == image.manifest_digest {
            self.store
                .add_repo_digest(&image, &format!("{host}/{repo}@{manifest_digest}"))?;
        }
        Ok(Pushed {
            name,
            manifest_digest,
            index_digest,
            sent_bytes,
            blobs: outcomes,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn put_manifest(
        &self,
        ep: &image_service::registry::Endpoint,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: Vec<u8>,
        creds: &Credentials,
        scope: &str,
    ) -> Result<()> {
        let url = format!("{}/v2/{repo}/manifests/{reference}", ep.base);
        let what = format!("PUT manifest {repo}:{reference}");
        self.put(ep, &url, media_type, body, creds, scope, &what)
            .await
    }

    /// PUTs `body` as `content_type`; an error naming `what` unless the registry took it.
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        ep: &image_service::registry::Endpoint,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        creds: &Credentials,
        scope: &str,
        what: &str,
    ) -> Result<()> {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, header_value(content_type)?);
        let resp = self
            .registry
            .request(
                Method::PUT,
                ep,
                url,
                h,
                Some(body.into()),
                creds,
                scope,
                true,
            )
            .await?;
        if !resp.status().is_success() {
            return Err(error_of(what, resp).await);
        }
        Ok(())
    }

    /// The index the tag names with `entry` in it, in place of an entry of the same platform;
    /// a new index when the tag names nothing, or a plain manifest (replaced).
    async fn merged_index(
        &self,
        ep: &image_service::registry::Endpoint,
        repo: &str,
        tag: &str,
        entry: Value,
        creds: &Credentials,
        scope: &str,
    ) -> Result<Value> {
        let url = format!("{}/v2/{repo}/manifests/{tag}", ep.base);
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            header_value(&format!("{OCI_INDEX}, {DOCKER_LIST}"))?,
        );
        let resp = self
            .registry
            .request(Method::GET, ep, &url, h, None, creds, scope, true)
            .await?;
        let mut entries: Vec<Value> = Vec::new();
        if resp.status().is_success() {
            let reply = image_service::registry::Reply { response: resp };
            let body = reply.bytes_limited(MAX_INDEX, "the tag's index").await?;
            let existing: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let is_index = matches!(
                existing["mediaType"].as_str(),
                Some(OCI_INDEX | DOCKER_LIST)
            ) || existing["manifests"].is_array();
            if is_index {
                entries = existing["manifests"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            }
        }
        let same_platform = |e: &Value| {
            let (a, b) = (&e["platform"], &entry["platform"]);
            ["os", "architecture", "variant", "os.version"]
                .iter()
                .all(|k| a[*k] == b[*k])
        };
        entries.retain(|e| !same_platform(e) && e["digest"] != entry["digest"]);
        entries.push(entry);
        Ok(json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": entries,
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn push_blob(
        &self,
        ep: &image_service::registry::Endpoint,
        repo: &str,
        scope: &str,
        digest: &str,
        size: u64,
        mount_from: Option<&str>,
        chunk: usize,
        opts: &PushOptions,
    ) -> Result<(BlobOutcome, u64)> {
        let creds = &opts.credentials;
        let head = format!("{}/v2/{repo}/blobs/{digest}", ep.base);
        let resp = self.bare(Method::HEAD, ep, &head, creds, scope).await?;
        if resp.status().is_success() {
            return Ok((BlobOutcome::Existed, 0));
        }
        let uploads = format!("{}/v2/{repo}/blobs/uploads/", ep.base);
        let (url, scope_here) = match mount_from {
            Some(from) => (
                format!("{uploads}?mount={digest}&from={from}"),
                format!("{scope} repository:{from}:pull"),
            ),
            None => (uploads.clone(), scope.to_string()),
        };
        let resp = self
            .bare(Method::POST, ep, &url, creds, &scope_here)
            .await?;
        if resp.status() == StatusCode::CREATED && mount_from.is_some() {
            return Ok((BlobOutcome::Mounted, 0));
        }
        if resp.status() != StatusCode::ACCEPTED {
            return Err(error_of(&format!("starting the upload of {digest}"), resp).await);
        }
        let mut location = location_of(&ep.base, &resp)?;
        let path = self.store.blob_path(digest)?;
        let mut file = std::fs::File::open(&path).ctx(|| format!("open {}", path.display()))?;
        let progress = |n: u64| {
            if let Some(p) = &opts.progress {
                p(PushEvent::Progress { bytes: n });
            }
        };
        if size <= chunk as u64 {
            let mut body = Vec::with_capacity(size as usize);
            file.read_to_end(&mut body)
                .ctx(|| format!("read {}", path.display()))?;
            let url = with_digest(&location, digest)?;
            let what = format!("uploading {digest}");
            self.put(
                ep,
                &url,
                "application/octet-stream",
                body,
                creds,
                scope,
                &what,
            )
            .await?;
            progress(size);
            return Ok((BlobOutcome::Sent, size));
        }
        // Chunked: each PATCH says where it starts; after a failure the registry says what it
        // has (the upload's status) and the upload goes on from there.
        let mut offset: u64 = 0;
        let mut resumes = 0;
        let mut buf = vec![0u8; chunk];
        while offset < size {
            let len = chunk.min((size - offset) as usize);
            file.seek(SeekFrom::Start(offset))
                .ctx(|| format!("seek {}", path.display()))?;
            file.read_exact(&mut buf[..len])
                .ctx(|| format!("read {}", path.display()))?;
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(
                header::CONTENT_RANGE,
                header_value(&format!("{offset}-{}", offset + len as u64 - 1))?,
            );
            let body = bytes::Bytes::copy_from_slice(&buf[..len]);
            let sent = self
                .registry
                .request(
                    Method::PATCH,
                    ep,
                    &location,
                    h,
                    Some(body),
                    creds,
                    scope,
                    false,
                )
                .await;
            match sent {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    location = location_of(&ep.base, &resp)?;
                    offset += len as u64;
                    progress(len as u64);
                }
                other => {
                    resumes += 1;
                    let why = match other {
                        Ok(resp) => error_of("chunk", resp).await.to_string(),
                        Err(e) => e.to_string(),
                    };
                    if resumes > MAX_RESUMES {
                        return Err(Error::Registry(format!(
                            "uploading {digest}: gave up after {MAX_RESUMES} resumes: {why}"
                        )));
                    }
                    tracing::info!(%digest, offset, error = %why, "upload chunk failed; resuming");
                    match self.upload_status(ep, &location, creds, scope).await {
                        Ok((loc, have)) => {
                            location = loc;
                            if have != offset {
                                progress(have.saturating_sub(offset));
                            }
                            offset = have;
                        }
                        // The registry lost track of the session (a chunk half-written): a
                        // new session from the start.
                        Err(e) => {
                            tracing::info!(%digest, error = %e, "upload session lost; starting again");
                            let what = format!("restarting the upload of {digest}");
                            location = self.start_upload(ep, &uploads, creds, scope, &what).await?;
                            offset = 0;
                        }
                    }
                }
            }
        }
        let url = with_digest(&location, digest)?;
        let resp = self.bare(Method::PUT, ep, &url, creds, scope).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(error_of(&format!("completing the upload of {digest}"), resp).await);
        }
        Ok((BlobOutcome::Sent, size))
    }

    /// A request with no body and no headers of its own (HEAD, POST, PUT to finish, GET of an
    /// upload's status), retried on a broken connection.
    async fn bare(
        &self,
        method: Method,
        ep: &image_service::registry::Endpoint,
        url: &str,
        creds: &Credentials,
        scope: &str,
    ) -> Result<reqwest::Response> {
        self.registry
            .request(method, ep, url, HeaderMap::new(), None, creds, scope, true)
            .await
    }

    /// Opens an upload session (POST); its location.
    async fn start_upload(
        &self,
        ep: &image_service::registry::Endpoint,
        uploads: &str,
        creds: &Credentials,
        scope: &str,
        what: &str,
    ) -> Result<String> {
        let resp = self.bare(Method::POST, ep, uploads, creds, scope).await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(error_of(what, resp).await);
        }
        location_of(&ep.base, &resp)
    }

    /// How much of an upload the registry has: (location, next offset).
    async fn upload_status(
        &self,
        ep: &image_service::registry::Endpoint,
        location: &str,
        creds: &Credentials,
        scope: &str,
    ) -> Result<(String, u64)> {
        let resp = self.bare(Method::GET, ep, location, creds, scope).await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(error_of("the upload's status", resp).await);
        }
        let have = resp
            .headers()
            .get(header::RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.rsplit('-').next())
            .and_then(|end| end.parse::<u64>().ok())
            .map(|end| end + 1)
            .unwrap_or(0);
        let loc = location_of(&ep.base, &resp).unwrap_or_else(|_| location.to_string());
        Ok((loc, have))
    }
}

/// The upload URL a response names, made absolute.
fn location_of(base: &str, resp: &reqwest::Response) -> Result<String> {
    let loc = resp
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Registry("the registry sent no upload location".to_string()))?;
    let base = Url::parse(base).map_err(|e| Error::Registry(format!("{base}: {e}")))?;
    base.join(loc)
        .map(|u| u.to_string())
        .map_err(|e| Error::Registry(format!("upload location {loc:?}: {e}")))
}

fn with_digest(location: &str, digest: &str) -> Result<String> {
    let mut url = Url::parse(location).map_err(|e| Error::Registry(format!("{location}: {e}")))?;
    url.query_pairs_mut().append_pair("digest", digest);
    Ok(url.to_string())
}

/// The manifest and blobs of `image` with its layers in `compression` (converted and kept where
/// they are stored otherwise).
fn prepare(
    store: &ImageStore,
    image: &Image,
    compression: Option<Compression>,
) -> Result<Prepared> {
    let docs = store.documents(image)?;
    let mut manifest = docs.manifest.clone();
    let mut changed = false;
    let mut blobs = Vec::new();
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let mut new_layers = Vec::with_capacity(layers.len());
    for l in layers {
        let digest = l["digest"].as_str().unwrap_or_default().to_string();
        let media = l["mediaType"].as_str().unwrap_or_default().to_string();
        let stored = Compression::from_media_type(&media)?;
        let wanted = compression.filter(|c| *c != stored);
        match wanted {
            None => {
                blobs.push((digest, l["size"].as_u64().unwrap_or(0)));
                new_layers.push(l);
            }
            Some(c) => {
                let (d, size) = store.converted_layer(&digest, stored, c)?;
                blobs.push((d.clone(), size));
                let mut nl = l.clone();
                nl["digest"] = json!(d);
                nl["size"] = json!(size);
                nl["mediaType"] = json!(c.media_type(
                    docs.manifest_media_type == DOCKER_MANIFEST && c.in_docker_manifests()
                ));
                new_layers.push(nl);
                changed = true;
            }
        }
    }
    let mut platform = json!({
        "os": docs.config["os"],
        "architecture": docs.config["architecture"],
    });
    for k in ["variant", "os.version"] {
        if docs.config[k].is_string() {
            platform[k] = docs.config[k].clone();
        }
    }
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    blobs.push((config_digest, docs.config_bytes.len() as u64));
    let mut media_type = docs.manifest_media_type.clone();
    if !changed {
        return Ok(Prepared {
            manifest: docs.manifest_bytes,
            media_type,
            blobs,
            platform,
        });
    }
    // zstd layers exist only in OCI manifests.
    if media_type == DOCKER_MANIFEST && compression.is_some_and(|c| !c.in_docker_manifests()) {
        media_type = OCI_MANIFEST.to_string();
        manifest["mediaType"] = json!(OCI_MANIFEST);
        manifest["config"]["mediaType"] = json!(OCI_CONFIG);
    }
    manifest["layers"] = Value::Array(new_layers);
    let (_, _, bytes) = store.put_json_blob(&manifest)?;
    Ok(Prepared {
        manifest: bytes,
        media_type,
        blobs,
        platform,
    })
}
