//! The build cache: a step's layer kept under a key of what it depends on, in
//! `<work_dir>/cache/<key>` (the layer's digest, DiffID, size and compression).

use image_service::layer::LayerBlob;
use image_service::{Compression, ImageStore};
use sha2::{Digest as _, Sha256};

use super::BuildOptions;

pub(super) fn cache_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

pub(super) fn cached(opts: &BuildOptions, key: &str, store: &ImageStore) -> Option<LayerBlob> {
    if opts.no_cache {
        return None;
    }
    let text = std::fs::read_to_string(opts.work_dir.join("cache").join(key)).ok()?;
    let mut parts = text.split_whitespace();
    let (digest, diff_id, size, compression) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    store.blob_path(digest).ok()?;
    Some(LayerBlob {
        digest: digest.to_string(),
        diff_id: diff_id.to_string(),
        size: size.parse().ok()?,
        compression: Compression::parse(compression)?,
    })
}

pub(super) fn remember(opts: &BuildOptions, key: &str, blob: &LayerBlob) {
    let compression = blob.compression.name();
    // Written whole, then renamed: a reader never sees half an entry.
    let path = opts.work_dir.join("cache").join(key);
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    let entry = format!(
        "{} {} {} {compression}\n",
        blob.digest, blob.diff_id, blob.size
    );
    if std::fs::write(&tmp, entry)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
}
