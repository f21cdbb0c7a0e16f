//! Layer compression: one type for what a stored blob is compressed with (read from its media
//! type), what unpack and conversion decode, and what the builder and push write.

use std::io::{self, Read};

use crate::{Error, Result};

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Compression {
    /// A plain tar (OCI's `tar` media types, Docker's `diff.tar`).
    None,
    /// gzip: what every registry and runtime reads; the builder's default.
    #[default]
    Gzip,
    /// zstd: smaller and faster to unpack; OCI manifests only.
    Zstd,
}

impl Compression {
    /// The compression of a layer media type; other media types are refused.
    pub fn from_media_type(media_type: &str) -> Result<Compression> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.docker.image.rootfs.diff.tar" => Ok(Compression::None),
            "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Compression::Gzip),
            "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
                Ok(Compression::Zstd)
            }
            other => Err(Error::InvalidLayout(format!(
                "unsupported layer media type {other:?}"
            ))),
        }
    }

    /// The layer media type: Docker's where the manifest is a Docker one (which has no zstd),
    /// OCI's otherwise.
    pub fn media_type(self, docker: bool) -> &'static str {
        match (self, docker) {
            (Compression::None, true) => "application/vnd.docker.image.rootfs.diff.tar",
            (Compression::None, false) => "application/vnd.oci.image.layer.v1.tar",
            (Compression::Gzip, true) => "application/vnd.docker.image.rootfs.diff.tar.gzip",
            (Compression::Gzip, false) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (Compression::Zstd, _) => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }

    /// Whether a Docker manifest can name a layer in this compression.
    pub fn in_docker_manifests(self) -> bool {
        self != Compression::Zstd
    }

    /// The name the CLI takes (`--compression`): none, gzip or zstd.
    pub fn parse(name: &str) -> Option<Compression> {
        match name {
            "none" => Some(Compression::None),
            "gzip" => Some(Compression::Gzip),
            "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The name [`Compression::parse`] takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The compression of a stream from its first bytes (gzip's and zstd's magic numbers);
    /// anything else is read as it is.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The uncompressed tar of `blob`. gzip reads every member, as Docker (Go's gzip reader)
    /// does: a layer or an archive may be several gzip streams end to end, which `GzDecoder`
    /// would stop reading after the first.
    pub fn decoder<'a, R: Read + 'a>(self, blob: R) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(blob),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::with_buffer(io::BufReader::with_capacity(
                    128 << 10,
                    blob,
                ))
                .map_err(|source| Error::Io {
                    context: "start a zstd decoder".into(),
                    source,
                })?,
            ),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn media_types_round_trip() {
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for docker in [false, true] {
                assert_eq!(
                    Compression::from_media_type(c.media_type(docker)).unwrap(),
                    c
                );
            }
            assert_eq!(Compression::parse(c.name()), Some(c));
        }
        assert!(Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+xz").is_err());
        assert_eq!(Compression::parse("xz"), None);
        assert_eq!(
            Compression::sniff(&crate::testutil::gzip(b"x")),
            Compression::Gzip
        );
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
    }

    #[test]
    fn gzip_reads_every_member() {
        let a = crate::testutil::gzip(b"first ");
        let b = crate::testutil::gzip(b"second");
        let mut out = String::new();
        Compression::Gzip
            .decoder(&[a, b].concat()[..])
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(out, "first second");
    }
}
