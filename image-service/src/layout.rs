//! Reading OCI image layout directories (untrusted input).

use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use crate::content::{read_small, verify_bytes};
use crate::{Error, Result, sha256_hex};

pub(crate) const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub(crate) const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

pub(crate) const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
pub(crate) const CONFIG_TYPES: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
const MAX_INDEX_DEPTH: usize = 4;

/// A manifest found in the layout, with the annotations of its top-level descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub desc: Descriptor,
    pub containerd_name: Option<String>,
    pub ref_name: Option<String>,
}

/// A loaded manifest and config.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub manifest: ImageManifest,
    pub config: ImageConfiguration,
}

/// Path of a blob in the layout, validating the digest (no path tricks).
pub(crate) fn blob_path(dir: &Path, digest: &str) -> Result<PathBuf> {
    let hex = sha256_hex(digest)?;
    Ok(dir.join("blobs").join("sha256").join(hex))
}

fn read_blob(dir: &Path, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
    let digest = desc.digest().to_string();
    let data = read_small(&blob_path(dir, &digest)?, &format!("{what} blob {digest}"))?;
    if data.len() as u64 != desc.size() {
        return Err(Error::InvalidLayout(format!(
            "{what} {digest} has size {}, descriptor says {}",
            data.len(),
            desc.size()
        )));
    }
    verify_bytes(&data, &digest)?;
    Ok(data)
}

fn parse<T: serde::de::DeserializeOwned>(data: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::InvalidLayout(format!("malformed {what}: {e}")))
}

/// Reads `index.json` and returns all image manifests it (transitively) lists.
pub(crate) fn read_candidates(dir: &Path) -> Result<Vec<Candidate>> {
    let layout_file = read_small(&dir.join("oci-layout"), "oci-layout file")?;
    let layout: serde_json::Value = parse(&layout_file, "oci-layout file")?;
    if layout
        .get("imageLayoutVersion")
        .and_then(|v| v.as_str())
        .is_none()
    {
        return Err(Error::InvalidLayout(
            "oci-layout file has no imageLayoutVersion".to_string(),
        ));
    }
    let index_bytes = read_small(&dir.join("index.json"), "index.json")?;
    let index: ImageIndex = parse(&index_bytes, "index.json")?;
    let mut out = Vec::new();
    for desc in index.manifests() {
        let annotation = |key: &str| {
            desc.annotations()
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
        };
        let containerd_name = annotation(ANNOTATION_CONTAINERD_NAME);
        let ref_name = annotation(ANNOTATION_REF_NAME);
        collect(dir, desc, &containerd_name, &ref_name, 0, &mut out)?;
    }
    Ok(out)
}

fn collect(
    dir: &Path,
    desc: &Descriptor,
    containerd_name: &Option<String>,
    ref_name: &Option<String>,
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<()> {
    let media_type = desc.media_type().to_string();
    if MANIFEST_TYPES.contains(&media_type.as_str()) {
        out.push(Candidate {
            desc: desc.clone(),
            containerd_name: containerd_name.clone(),
            ref_name: ref_name.clone(),
        });
    } else if INDEX_TYPES.contains(&media_type.as_str()) {
        if depth >= MAX_INDEX_DEPTH {
            return Err(Error::InvalidLayout(
                "image indexes nested too deeply".to_string(),
            ));
        }
        let data = read_blob(dir, desc, "image index")?;
        let index: ImageIndex = parse(&data, "image index")?;
        for child in index.manifests() {
            collect(dir, child, containerd_name, ref_name, depth + 1, out)?;
        }
    } else {
        tracing::debug!(%media_type, digest = %desc.digest(), "ignoring index entry");
    }
    Ok(())
}

/// Loads and verifies the manifest and config of a candidate.
pub(crate) fn load(dir: &Path, cand: &Candidate) -> Result<(Vec<u8>, Loaded)> {
    let manifest_bytes = read_blob(dir, &cand.desc, "manifest")?;
    let manifest: ImageManifest = parse(&manifest_bytes, "image manifest")?;
    let config_desc = manifest.config();
    let config_type = config_desc.media_type().to_string();
    if !CONFIG_TYPES.contains(&config_type.as_str()) {
        return Err(Error::InvalidLayout(format!(
            "unsupported config media type {config_type:?}"
        )));
    }
    let config_bytes = read_blob(dir, config_desc, "image config")?;
    let config: ImageConfiguration = parse(&config_bytes, "image config")?;
    if config.rootfs().diff_ids().len() != manifest.layers().len() {
        return Err(Error::InvalidLayout(format!(
            "manifest has {} layers but config lists {} diff_ids",
            manifest.layers().len(),
            config.rootfs().diff_ids().len()
        )));
    }
    Ok((manifest_bytes, Loaded { manifest, config }))
}
