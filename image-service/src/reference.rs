//! Image references: parsing by the distribution grammar and docker's normalisation
//! (`busybox` -> `docker.io/library/busybox:latest`).
//!
//! Written by hand rather than with oci-spec's `Reference`: that one compiles one large regular
//! expression on first use, which a heap profile of the server showed holding about 7 MB for
//! the life of the process (and more per thread that matched with it): a third of the idle
//! server's memory, for a grammar this small.

use crate::{Error, Result};

/// The registry docker names short references with, and its older alias.
const DOCKER_HUB: &str = "docker.io";
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The longest repository name (registry included) the distribution spec allows.
const NAME_MAX: usize = 255;

/// A parsed, normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

impl Reference {
    /// The registry host (and port): `docker.io`, `ghcr.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository within it: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference has one (`latest` when it has neither tag nor digest).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:<hex>`), if the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// The whole normalised reference: `registry/repository[:tag][@digest]`.
    pub fn whole(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.whole())
    }
}

/// Parses a reference (`busybox`, `ghcr.io/x/y:1`, `name@sha256:...`, `name:tag@sha256:...`).
pub fn parse(reference: &str) -> Result<Reference> {
    parse_reference(reference.trim())
        .map_err(|why| Error::InvalidReference(format!("{reference:?}: {why}")))
}

fn parse_reference(s: &str) -> std::result::Result<Reference, String> {
    if s.is_empty() {
        return Err("empty reference".into());
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, d)) => (rest, Some(check_digest(d)?)),
        None => (s, None),
    };
    // A tag is what follows the last ':' after the last '/' (a ':' before it is a port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(check_tag(&rest[i + 1..])?)),
        _ => (rest, None),
    };
    let (registry, repository) = split_registry(name)?;
    for component in repository.split('/') {
        check_path_component(component)?;
    }
    if registry.len() + 1 + repository.len() > NAME_MAX {
        return Err(format!("the name is longer than {NAME_MAX} characters"));
    }
    let tag = match (tag, &digest) {
        (None, None) => Some("latest".to_string()),
        (t, _) => t.map(str::to_string),
    };
    Ok(Reference {
        registry,
        repository,
        tag,
        digest,
    })
}

/// docker's rule: the first component names a registry when it has a '.' or ':' or is
/// `localhost`; otherwise the image is on Docker Hub, under `library/` when it has no `/`.
fn split_registry(name: &str) -> std::result::Result<(String, String), String> {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            check_registry(first)?;
            (first.to_string(), rest.to_string())
        }
        _ => (DOCKER_HUB.to_string(), name.to_string()),
    };
    let registry = if registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB.to_string()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    Ok((registry, repository))
}

/// `host[:port]`: DNS labels of letters, digits and inner hyphens, an IPv4 address, or an IPv6
/// address in brackets.
fn check_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = || Err(format!("invalid registry {registry:?}"));
    let (host, port) = if let Some(rest) = registry.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return bad();
        };
        if v6.is_empty()
            || !v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return bad();
        }
        match after {
            "" => (None, None),
            p => match p.strip_prefix(':') {
                Some(port) => (None, Some(port)),
                None => return bad(),
            },
        }
    } else {
        match registry.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        }
    };
    if let Some(port) = port
        && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad();
    }
    if let Some(host) = host {
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if host.is_empty() || !host.split('.').all(label_ok) {
            return bad();
        }
    }
    Ok(())
}

/// A path component: lowercase letters and digits, separated by one `.`, one or two `_`, or
/// any number of `-`.
fn check_path_component(c: &str) -> std::result::Result<(), String> {
    let bad = || Err(format!("invalid repository name component {c:?}"));
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return bad();
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return bad();
        }
    }
    Ok(())
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn check_tag(tag: &str) -> std::result::Result<&str, String> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let b = tag.as_bytes();
    if b.is_empty()
        || b.len() > 128
        || !word(b[0])
        || !b.iter().all(|&x| word(x) || x == b'.' || x == b'-')
    {
        return Err(format!("invalid tag {tag:?}"));
    }
    Ok(tag)
}

/// `algorithm:hex`: sha256 with 64 lowercase hex digits, sha512 with 128; another registered
/// or unregistered algorithm with at least 32 hex digits.
fn check_digest(digest: &str) -> std::result::Result<String, String> {
    let bad = || Err(format!("invalid digest {digest:?}"));
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return bad();
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.as_bytes()[0].is_ascii_alphabetic()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'.' | b'-' | b'_'));
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = algorithm_ok
        && match algorithm {
            "sha256" => encoded.len() == 64 && lower_hex(encoded),
            "sha512" => encoded.len() == 128 && lower_hex(encoded),
            _ => encoded.len() >= 32 && encoded.bytes().all(|b| b.is_ascii_hexdigit()),
        };
    if !ok {
        return bad();
    }
    Ok(digest.to_string())
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
        assert_eq!(
            normalize("[::1]:5000/app").unwrap(),
            "[::1]:5000/app:latest"
        );
        assert_eq!(
            normalize("registry.example.com/a/b-c/d__e.f:v1.2_3").unwrap(),
            "registry.example.com/a/b-c/d__e.f:v1.2_3"
        );
        let p = parse(&format!("localhost/app:1@{D}")).unwrap();
        assert_eq!(
            (p.registry(), p.repository(), p.tag(), p.digest()),
            ("localhost", "app", Some("1"), Some(D))
        );
        let p = parse(&format!("app@{D}")).unwrap();
        assert_eq!((p.repository(), p.tag()), ("library/app", None));
        for bad in [
            "",
            "UPPER",
            "a b",
            "x@sha256:12",
            "::",
            "app:",
            "app:-x",
            "/app",
            "app/",
            "a//b",
            "a___b",
            "a..b",
            "-a",
            "registry.io:port/app",
            "bad_host.io/app",
            &format!("x@sha256:{}", D[7..].to_uppercase()),
            &format!("a:{}", "t".repeat(129)),
            &format!("r.io/{}", "a".repeat(260)),
        ] {
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
