//! Platforms, and choosing the manifest of an image index that fits the node.

use std::fmt;

use crate::{Error, Result};

/// An OS/architecture pair an image is built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `darwin`, `linux`, ...
    pub os: String,
    /// `arm64`, `amd64`, ...
    pub architecture: String,
    /// `v8`, `v7`, ...
    pub variant: Option<String>,
    /// OS version (macOS major version on darwin), preferred when matching.
    pub os_version: Option<String>,
}

impl Platform {
    /// The platform of the running host (`macos` is reported as `darwin`), without an OS
    /// version: the caller that knows the host's (the runtime's platform layer) sets it.
    pub fn host() -> Platform {
        Platform {
            os: platform::oci_os().to_string(),
            architecture: platform::oci_arch().to_string(),
            variant: None,
            os_version: None,
        }
    }

    /// Parses `os/arch` or `os/arch/variant`.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let bad =
            || Error::InvalidReference(format!("invalid platform {s:?} (want os/arch[/variant])"));
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
            os_version: None,
        })
    }

    pub(crate) fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == arch
            && match (&self.variant, variant) {
                (Some(w), Some(v)) => w == v,
                _ => true,
            }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// What an index entry (or a config) says it is built for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Offer {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub os_version: Option<String>,
}

impl fmt::Display for Offer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

fn version_parts(v: &str) -> Vec<u64> {
    v.split('.')
        .map(|p| p.trim().parse().unwrap_or(0))
        .collect()
}

/// Picks the offer for `wanted`: among those of its os/arch(/variant), when the wanted
/// platform has an OS version (macOS hosts), the one with the same major version, else
/// the newest not newer than the host, else one without a version; otherwise the first.
/// `Err` lists what is available (deduplicated, in order).
pub(crate) fn choose(
    wanted: &Platform,
    offers: &[Offer],
) -> std::result::Result<usize, Vec<String>> {
    let matching: Vec<usize> = (0..offers.len())
        .filter(|&i| {
            let o = &offers[i];
            wanted.matches(&o.os, &o.architecture, o.variant.as_deref())
        })
        .collect();
    if matching.is_empty() {
        let mut available: Vec<String> = Vec::new();
        for o in offers {
            let s = o.to_string();
            if !available.contains(&s) {
                available.push(s);
            }
        }
        return Err(available);
    }
    let Some(host) = wanted.os_version.as_deref().map(version_parts) else {
        return Ok(matching[0]);
    };
    let versioned = |i: &usize| offers[*i].os_version.as_deref().map(version_parts);
    if let Some(&i) = matching
        .iter()
        .find(|i| versioned(i).is_some_and(|v| v.first() == host.first()))
    {
        return Ok(i);
    }
    let not_newer = matching
        .iter()
        .filter_map(|i| versioned(i).filter(|v| *v <= host).map(|v| (v, *i)))
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    if let Some((_, i)) = not_newer {
        return Ok(i);
    }
    Ok(matching
        .iter()
        .copied()
        .find(|i| offers[*i].os_version.is_none())
        .unwrap_or(matching[0]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn offer(p: &str, v: Option<&str>) -> Offer {
        let parts: Vec<&str> = p.split('/').collect();
        Offer {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|s| s.to_string()),
            os_version: v.map(str::to_string),
        }
    }

    #[test]
    fn darwin_versions_prefer_same_major_then_newest_not_newer() {
        let offers = vec![
            offer("linux/arm64", None),
            offer("darwin/arm64", Some("13.6")),
            offer("darwin/arm64", Some("15.1")),
            offer("darwin/arm64", Some("14.2")),
            offer("darwin/arm64", Some("12.7")),
        ];
        let mut want = Platform::parse("darwin/arm64").unwrap();
        want.os_version = Some("14.5".into());
        assert_eq!(choose(&want, &offers), Ok(3), "same major");
        want.os_version = Some("14.1".into());
        assert_eq!(
            choose(&want, &offers),
            Ok(3),
            "same major, even a newer minor"
        );
        want.os_version = Some("16.0".into());
        assert_eq!(choose(&want, &offers), Ok(2), "newest not newer");
        want.os_version = Some("11.0".into());
        assert_eq!(choose(&want, &offers), Ok(1), "all newer: the first");
        want.os_version = None;
        assert_eq!(choose(&want, &offers), Ok(1));
    }

    #[test]
    fn no_match_lists_available() {
        let offers = vec![
            offer("linux/amd64", None),
            offer("linux/arm64", None),
            offer("linux/amd64", None),
        ];
        let want = Platform::parse("darwin/arm64").unwrap();
        assert_eq!(
            choose(&want, &offers),
            Err(vec!["linux/amd64".to_string(), "linux/arm64".to_string()])
        );
        let want = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(
            choose(&want, &offers),
            Ok(1),
            "variant unset in the offer matches"
        );
    }
}
