//! Content store, OCI image import, safe layer unpacking and snapshots for darwin-cri.
//!
//! On-disk layout under the store root (`<darwin-cri root>/images`):
//!
//! - `blobs/sha256/<hex>`: verified, content-addressed blobs;
//! - `snapshots/<chainid hex>/`: fully unpacked rootfs per layer ChainID;
//! - `meta/<image id hex>.json`: image records (without names);
//! - `refs/<sha256(name) hex>.json`: one file per tag / repo digest, `{"name", "id"}`;
//! - `ingest/<hex>`: partial blob downloads, resumed by the next pull (kept a day);
//! - `tmp/`: work in progress (snapshot builds, atomic writes);
//! - `gc.lock`: imports hold a shared `flock`, garbage collection an exclusive one.
//!
//! Every file is written atomically (temporary file, fsync, rename) so several
//! processes (the server and the `darwin-cri image import` CLI) can share a store.

pub mod layer;
pub mod reference;
pub mod registry;
pub mod safe_path;
pub mod tree;

mod compression;
mod content;
mod layout;
mod platform;
mod pull;
mod store;
mod unpack;

#[cfg(test)]
mod testutil;

pub use compression::Compression;
pub use platform::Platform;
#[doc(hidden)]
pub use pull::fuzzing;
pub use pull::{PullEvent, PullOptions, Puller};
pub use store::{
    FsUsage, Image, ImageConfig, ImageDocuments, ImageStore, NewImage, NewLayer, StoreHold,
};
pub use tree::{CopyCloner, LinkCloner, NativeCloner, TreeCloner};

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the image service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No image matched the reference.
    #[error("image {0:?} not found")]
    NotFound(String),
    /// The reference cannot be parsed.
    #[error("invalid image reference: {0}")]
    InvalidReference(String),
    /// Malformed layout, manifest, index or config, missing blob, unsupported media type.
    #[error("invalid image layout: {0}")]
    InvalidLayout(String),
    /// Content did not hash to the digest it was announced with.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The announced digest.
        expected: String,
        /// The digest of the content actually read.
        actual: String,
    },
    /// The image has no manifest for the store's platform.
    #[error("no manifest for {wanted} in {reference}; available: {}", available.join(", "))]
    NoMatchingPlatform {
        /// The platform the store wants (e.g. `darwin/arm64`).
        wanted: String,
        /// The image reference.
        reference: String,
        /// Platforms the image offers.
        available: Vec<String>,
    },
    /// A layer entry that would escape the snapshot or is otherwise unsafe.
    #[error("unsafe layer entry: {}: {reason}", entry.display())]
    UnsafeLayerEntry {
        /// The entry's path in the layer.
        entry: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The registry refused the credentials, or needs some and none were given.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// No answer from the registry: connection refused, DNS, TLS handshake, timeout.
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// The registry answered with an error.
    #[error("registry: {0}")]
    Registry(String),
    /// An I/O error, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Adds what was being done to an I/O error (the workspace's one `IoContext`, in platform).
pub(crate) use ::platform::IoContext;

impl From<::platform::IoError> for Error {
    fn from(e: ::platform::IoError) -> Self {
        Error::Io {
            context: e.context,
            source: e.source,
        }
    }
}

/// A random hex name for temporary files and directories.
pub(crate) fn random_name() -> std::io::Result<String> {
    let mut buf = [0u8; 12];
    getrandom::fill(&mut buf).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// Whether `s` is a lowercase hex sha256 (64 chars).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hex part of `sha256:<hex>`, validated.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str> {
    match digest.strip_prefix("sha256:") {
        Some(h) if is_sha256_hex(h) => Ok(h),
        _ => Err(Error::InvalidLayout(format!(
            "unsupported or malformed digest {digest:?} (only sha256 is supported)"
        ))),
    }
}
