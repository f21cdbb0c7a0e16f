//! Image reference normalisation (`busybox` -> `docker.io/library/busybox:latest`).

use oci_spec::distribution::Reference;

use crate::{Error, Result};

/// Parses a reference (`busybox`, `ghcr.io/x/y:1`, `name@sha256:...`, `name:tag@sha256:...`).
pub fn parse(reference: &str) -> Result<Reference> {
    Reference::try_from(reference.trim())
        .map_err(|e| Error::InvalidReference(format!("{reference:?}: {e}")))
}

/// Returns the fully qualified form of a reference: `docker.io/library/busybox:latest`,
/// `ghcr.io/x/y@sha256:...`, `name:tag@sha256:...` (tag and digest both kept).
pub fn normalize(reference: &str) -> Result<String> {
    Ok(parse(reference)?.whole())
}

/// The `registry/repository` part of a (normalized) reference, without tag or digest.
pub fn repository_of(normalized: &str) -> String {
    match parse(normalized) {
        Ok(r) => format!("{}/{}", r.registry(), r.repository()),
        Err(_) => {
            // Best effort: strip a digest, then a tag (a ':' after the last '/').
            let base = normalized.split('@').next().unwrap_or(normalized);
            match base.rfind(':') {
                Some(i) if !base[i..].contains('/') => base[..i].to_string(),
                _ => base.to_string(),
            }
        }
    }
}

/// The tag form `registry/repository:tag` of a reference, if it has a tag.
pub fn tag_ref_of(reference: &Reference) -> Option<String> {
    reference
        .tag()
        .map(|t| format!("{}/{}:{t}", reference.registry(), reference.repository()))
}

/// The digest form `registry/repository@digest` of a reference, if it has a digest.
pub fn digest_ref_of(reference: &Reference) -> Option<String> {
    reference
        .digest()
        .map(|d| format!("{}/{}@{d}", reference.registry(), reference.repository()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D: &str = "sha256:6c3c624b58dbbcd3c0dd82b4c53f04194d1247c6eebdaab7c610cf7d66709b3b";

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize("busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize("busybox:1.36").unwrap(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(normalize("user/app").unwrap(), "docker.io/user/app:latest");
        assert_eq!(
            normalize("index.docker.io/library/busybox").unwrap(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            normalize(&format!("ghcr.io/x/y@{D}")).unwrap(),
            format!("ghcr.io/x/y@{D}")
        );
        assert_eq!(
            normalize(&format!("busybox:1@{D}")).unwrap(),
            format!("docker.io/library/busybox:1@{D}")
        );
        assert_eq!(
            normalize("localhost:5000/app:v1").unwrap(),
            "localhost:5000/app:v1"
        );
        for bad in ["", "UPPER", "a b", "x@sha256:12", "::"] {
            assert!(
                matches!(normalize(bad), Err(Error::InvalidReference(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn repository() {
        assert_eq!(
            repository_of("docker.io/library/busybox:latest"),
            "docker.io/library/busybox"
        );
        assert_eq!(repository_of(&format!("ghcr.io/x/y:1@{D}")), "ghcr.io/x/y");
        assert_eq!(repository_of("localhost:5000/app:v1"), "localhost:5000/app");
        assert_eq!(repository_of("localhost:5000/app"), "localhost:5000/app");
    }
}
