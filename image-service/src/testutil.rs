//! Test helpers: building layer tarballs and OCI layouts programmatically.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub(crate) fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Builds a layer tarball entry by entry.
pub(crate) struct LayerBuilder {
    builder: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    pub(crate) fn new() -> Self {
        LayerBuilder {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h
    }

    /// Sets the name bytes directly (no `..` checks), then appends.
    fn raw(&mut self, mut h: tar::Header, path: &[u8], link: Option<&[u8]>, data: &[u8]) {
        let old = h.as_old_mut();
        assert!(path.len() < 100);
        old.name = [0; 100];
        old.name[..path.len()].copy_from_slice(path);
        if let Some(l) = link {
            assert!(l.len() < 100);
            old.linkname = [0; 100];
            old.linkname[..l.len()].copy_from_slice(l);
        }
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
    }

    pub(crate) fn dir(mut self, path: &str, mode: u32) -> Self {
        let h = Self::header(tar::EntryType::Directory, mode, 0);
        self.raw(h, path.as_bytes(), None, &[]);
        self
    }

    pub(crate) fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.file_owned(path, data, mode, 0, 0)
    }

    pub(crate) fn file_owned(
        mut self,
        path: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        self.raw(h, path.as_bytes(), None, data);
        self
    }

    /// An entry of tar type `kind` (a contiguous file '7', a fifo) owned by root.
    pub(crate) fn entry(
        mut self,
        kind: tar::EntryType,
        path: &str,
        data: &[u8],
        mode: u32,
    ) -> Self {
        let h = Self::header(kind, mode, data.len() as u64);
        self.raw(h, path.as_bytes(), None, data);
        self
    }

    pub(crate) fn symlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.raw(h, path.as_bytes(), Some(target.as_bytes()), &[]);
        self
    }

    pub(crate) fn hardlink(mut self, path: &str, target: &str) -> Self {
        let h = Self::header(tar::EntryType::Link, 0o644, 0);
        self.raw(h, path.as_bytes(), Some(target.as_bytes()), &[]);
        self
    }

    /// A whiteout for `path` (`dir/.wh.name`).
    pub(crate) fn whiteout(self, path: &str) -> Self {
        let p = Path::new(path);
        let name = format!(".wh.{}", p.file_name().unwrap().to_str().unwrap());
        let full = p.parent().unwrap().join(name);
        self.file(full.to_str().unwrap(), &[], 0o644)
    }

    pub(crate) fn opaque(self, dir: &str) -> Self {
        let full = Path::new(dir).join(".wh..wh..opq");
        self.file(full.to_str().unwrap(), &[], 0o644)
    }

    pub(crate) fn build(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// An OCI layout under construction.
pub(crate) struct LayoutBuilder {
    pub dir: PathBuf,
}

pub(crate) struct BuiltImage {
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config_digest: String,
    pub diff_ids: Vec<String>,
    pub size: u64,
}

impl LayoutBuilder {
    pub(crate) fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        LayoutBuilder {
            dir: dir.to_path_buf(),
        }
    }

    pub(crate) fn blob(&self, data: &[u8]) -> String {
        let d = sha(data);
        std::fs::write(self.dir.join("blobs/sha256").join(&d[7..]), data).unwrap();
        d
    }

    /// Adds an image (layers as uncompressed tarballs, gzipped when `gzip`).
    pub(crate) fn image(
        &self,
        layers: &[Vec<u8>],
        gzip_layers: bool,
        os: &str,
        arch: &str,
        config: Value,
    ) -> BuiltImage {
        let mut descs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut size = 0;
        for l in layers {
            diff_ids.push(sha(l));
            let (data, mt) = if gzip_layers {
                (gzip(l), "application/vnd.oci.image.layer.v1.tar+gzip")
            } else {
                (l.clone(), "application/vnd.oci.image.layer.v1.tar")
            };
            size += data.len() as u64;
            descs.push(json!({"mediaType": mt, "digest": self.blob(&data), "size": data.len()}));
        }
        let cfg = json!({
            "architecture": arch, "os": os,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
        size += cfg_bytes.len() as u64;
        let config_digest = self.blob(&cfg_bytes);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": cfg_bytes.len()},
            "layers": descs,
        });
        let mbytes = serde_json::to_vec(&manifest).unwrap();
        BuiltImage {
            manifest_digest: self.blob(&mbytes),
            manifest_size: mbytes.len() as u64,
            config_digest,
            diff_ids,
            size,
        }
    }

    pub(crate) fn manifest_desc(
        img: &BuiltImage,
        platform: Option<(&str, &str)>,
        annotations: Value,
    ) -> Value {
        let mut d = json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": img.manifest_digest, "size": img.manifest_size,
        });
        if let Some((os, arch)) = platform {
            d["platform"] = json!({"os": os, "architecture": arch});
        }
        if !annotations.is_null() {
            d["annotations"] = annotations;
        }
        d
    }

    pub(crate) fn index_json(&self, manifests: Vec<Value>) {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&idx).unwrap(),
        )
        .unwrap();
    }

    /// Writes a nested index blob and returns a descriptor for it.
    pub(crate) fn nested_index(&self, manifests: Vec<Value>, annotations: Value) -> Value {
        let idx = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
        let bytes = serde_json::to_vec(&idx).unwrap();
        let mut d = json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": self.blob(&bytes), "size": bytes.len()});
        if !annotations.is_null() {
            d["annotations"] = annotations;
        }
        d
    }
}
