//! ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use image_service::registry::Credentials;
use image_service::{Error, Image, PullEvent, PullOptions, Puller};
use k8s_cri::v1 as cri;
use tonic::{Response, Status};

use super::status::from_image;
use crate::metrics::Metrics;

/// kubelet's AuthConfig as registry credentials.
pub fn credentials(auth: Option<&cri::AuthConfig>) -> Result<Credentials, Status> {
    let Some(a) = auth else {
        return Ok(Credentials::default());
    };
    Credentials::from_cri(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
    )
    .map_err(|e| from_image(&e))
}

/// The label a failed pull is counted under (never the message: it names the image).
fn failure_reason(e: &Error) -> &'static str {
    match e {
        Error::Unauthenticated(_) => "unauthenticated",
        Error::NotFound(_) => "not_found",
        Error::NoMatchingPlatform { .. } => "no_matching_platform",
        Error::InvalidReference(_) => "invalid_reference",
        Error::DigestMismatch { .. } => "digest_mismatch",
        Error::UnsafeLayerEntry { .. } | Error::InvalidLayout(_) => "invalid_image",
        Error::Registry(_) => "registry",
        Error::Unreachable(_) => "unreachable",
        Error::Io { .. } => "io",
    }
}

/// PullImage: fetch from the registry (or its mirrors). When no registry endpoint answers
/// at all but the image is in the store (imported, or pulled before), the stored image
/// answers, so farms cut off from their registry keep running.
pub async fn pull(
    puller: Puller,
    metrics: Option<Arc<Metrics>>,
    reference: String,
    credentials: Credentials,
) -> Result<Response<cri::PullImageResponse>, Status> {
    let started = Instant::now();
    let bytes = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&bytes);
    let opts = PullOptions {
        credentials,
        platform: None,
        progress: Some(Arc::new(move |e| {
            if let PullEvent::Progress { bytes, .. } = e {
                counter.fetch_add(bytes, Ordering::Relaxed);
            }
        })),
    };
    let result = match puller.pull(&reference, opts).await {
        Ok(image) => Ok(image),
        // Only when nothing answered: a registry that refuses or no longer has the image
        // must not be bypassed with a copy pulled earlier under someone else's credentials.
        Err(e @ Error::Unreachable(_)) => {
            let store = Arc::clone(puller.store());
            let r = reference.clone();
            match tokio::task::spawn_blocking(move || store.resolve(&r)).await {
                Ok(Ok(Some(local))) => {
                    tracing::warn!(image = %reference, error = %e, "registry unavailable; using the stored image");
                    Ok(local)
                }
                _ => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let seconds = started.elapsed().as_secs_f64();
    let fetched = bytes.load(Ordering::Relaxed);
    // A pull's buffers and decompressors lived in pool threads' arenas; the server idles at
    // its own size again, not at its largest pull's.
    tokio::task::spawn_blocking(platform::release_free_memory);
    match result {
        Ok(image) => {
            if let Some(m) = &metrics {
                m.record_pull("pulled", true, fetched, seconds);
            }
            tracing::info!(image = %reference, id = %image.id, bytes = fetched, seconds, "pulled");
            Ok(Response::new(cri::PullImageResponse {
                image_ref: image.id,
            }))
        }
        Err(e) => {
            if let Some(m) = &metrics {
                m.record_pull(failure_reason(&e), false, fetched, seconds);
            }
            tracing::warn!(image = %reference, error = %e, "pull failed");
            Err(from_image(&e))
        }
    }
}

/// containerd's reading of the image's configured user: a numeric uid, or a user name.
fn user_of(image: &Image) -> (Option<cri::Int64Value>, String) {
    let user = image.config.user.split(':').next().unwrap_or_default();
    if user.is_empty() {
        return (None, String::new());
    }
    match user.parse::<i64>() {
        Ok(uid) => (Some(cri::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

pub fn image(i: &Image) -> cri::Image {
    let (uid, username) = user_of(i);
    cri::Image {
        id: i.id.clone(),
        repo_tags: i.repo_tags.clone(),
        repo_digests: i.repo_digests.clone(),
        size: i.size,
        uid,
        username,
        spec: Some(cri::ImageSpec {
            image: i.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

pub fn status(i: Option<&Image>, verbose: bool) -> cri::ImageStatusResponse {
    let mut info = std::collections::HashMap::new();
    if let (Some(i), true) = (i, verbose) {
        info.insert(
            "info".into(),
            serde_json::json!({
                "chainID": i.chain_id,
                "manifestDigest": i.manifest_digest,
                "platform": i.platform,
                "config": i.config,
            })
            .to_string(),
        );
    }
    cri::ImageStatusResponse {
        image: i.map(image),
        info,
    }
}

pub fn fs_info(mountpoint: String, usage: image_service::FsUsage) -> cri::ImageFsInfoResponse {
    cri::ImageFsInfoResponse {
        image_filesystems: vec![cri::FilesystemUsage {
            timestamp: runtime::now_nanos(),
            fs_id: Some(cri::FilesystemIdentifier { mountpoint }),
            used_bytes: Some(cri::UInt64Value {
                value: usage.used_bytes,
            }),
            inodes_used: Some(cri::UInt64Value {
                value: usage.inodes_used,
            }),
        }],
        container_filesystems: vec![],
    }
}
