//! ListImages, ImageStatus, PullImage, RemoveImage, ImageFsInfo.

use image_service::Image;
use k8s_cri::v1 as cri;

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
