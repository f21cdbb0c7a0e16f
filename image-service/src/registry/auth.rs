//! Registry credentials: what kubelet sends, docker's config.json and credential helpers,
//! and the `WWW-Authenticate` challenge grammar.
//!
//! Secrets never reach `Debug` output, error messages or logs: [`Credentials`] redacts
//! itself, and errors name the registry host, never what was sent to it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// Credentials for one registry, as kubelet's `AuthConfig` carries them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// User name for basic auth or the token endpoint.
    pub username: String,
    /// Password for basic auth or the token endpoint.
    pub password: String,
    /// An OAuth2 refresh token exchanged at the token endpoint (`identity_token`).
    pub identity_token: String,
    /// A bearer token sent to the registry as is (`registry_token`).
    pub registry_token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
        f.debug_struct("Credentials")
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .field("identity_token", &set(&self.identity_token))
            .field("registry_token", &set(&self.registry_token))
            .finish()
    }
}

impl Credentials {
    /// Builds credentials from kubelet's fields; `auth` (base64 `user:password`) fills
    /// username and password when those are empty.
    pub fn from_cri(
        username: &str,
        password: &str,
        auth: &str,
        identity_token: &str,
        registry_token: &str,
    ) -> Result<Credentials> {
        let mut c = Credentials {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: identity_token.to_string(),
            registry_token: registry_token.to_string(),
        };
        if c.username.is_empty() && !auth.is_empty() {
            let (u, p) = decode_auth(auth)?;
            c.username = u;
            c.password = p;
        }
        Ok(c)
    }

    /// Whether nothing is set (anonymous access).
    pub fn is_empty(&self) -> bool {
        self.username.is_empty()
            && self.password.is_empty()
            && self.identity_token.is_empty()
            && self.registry_token.is_empty()
    }

    /// A fingerprint for cache keys: tokens obtained with one pod's credentials are
    /// never used for another's pull.
    pub(crate) fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            &self.username,
            &self.password,
            &self.identity_token,
            &self.registry_token,
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(&h.finalize()[..12])
    }
}

/// Decodes docker's `auth` field (base64 of `user:password`).
fn decode_auth(auth: &str) -> Result<(String, String)> {
    let bad = || Error::InvalidReference("registry auth field is not base64 user:password".into());
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| bad())?;
    let s = String::from_utf8(raw).map_err(|_| bad())?;
    let (u, p) = s.split_once(':').ok_or_else(bad)?;
    Ok((u.to_string(), p.to_string()))
}

/// The part of a `~/.docker/config.json` we read.
#[derive(Debug, Default, Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

#[derive(Default, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default, rename = "identitytoken")]
    identity_token: String,
    #[serde(default, rename = "registrytoken")]
    registry_token: String,
}

impl fmt::Debug for DockerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DockerAuth(<redacted>)")
    }
}

/// Reduces a config.json key (`https://index.docker.io/v1/`, `ghcr.io`) to a host name.
fn auth_key_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.docker.io" => "docker.io".into(),
        _ => host,
    }
}

/// Docker's `config.json` as a fallback source of credentials, read on each lookup so
/// edits apply without a restart.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    path: Option<PathBuf>,
}

impl DockerConfig {
    /// Reads `path`, or nothing when `None`.
    pub fn new(path: Option<PathBuf>) -> DockerConfig {
        DockerConfig { path }
    }

    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`, when it exists.
    pub fn default_path() -> Option<PathBuf> {
        let p = match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => PathBuf::from(d).join("config.json"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
        };
        p.is_file().then_some(p)
    }

    /// Credentials for `host` (`docker.io`, `ghcr.io`, `127.0.0.1:5000`), if any.
    /// A malformed file or a failing helper is logged and treated as "none".
    pub fn lookup(&self, host: &str) -> Option<Credentials> {
        let path = self.path.as_deref()?;
        match lookup_in(path, host) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(path = %path.display(), registry = host, error = %e, "docker config credentials unusable");
                None
            }
        }
    }
}

fn lookup_in(path: &Path, host: &str) -> Result<Option<Credentials>> {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Io {
                context: format!("read {}", path.display()),
                source: e,
            });
        }
    };
    // The error names the position only: serde's message could quote a secret.
    let file: DockerConfigFile = serde_json::from_slice(&data).map_err(|e| {
        Error::InvalidReference(format!(
            "malformed docker config ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })?;
    let host = auth_key_host(host);
    let helper = file
        .cred_helpers
        .iter()
        .find(|(k, _)| auth_key_host(k) == host)
        .map(|(_, v)| v.clone())
        .or_else(|| (!file.creds_store.is_empty()).then(|| file.creds_store.clone()));
    if let Some(helper) = helper {
        match run_helper(&helper, &host) {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => {}
            // A broken helper does not hide the static entries.
            Err(e) => tracing::warn!(registry = %host, error = %e, "credential helper failed"),
        }
    }
    let Some(a) = file
        .auths
        .iter()
        .find(|(k, _)| auth_key_host(k) == host)
        .map(|(_, v)| v)
    else {
        return Ok(None);
    };
    let c = Credentials::from_cri(
        &a.username,
        &a.password,
        &a.auth,
        &a.identity_token,
        &a.registry_token,
    )?;
    Ok((!c.is_empty()).then_some(c))
}

/// Runs `docker-credential-<helper> get` with the server on stdin (docker's protocol).
fn run_helper(helper: &str, host: &str) -> Result<Option<Credentials>> {
    if helper.is_empty()
        || !helper
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::InvalidReference(format!(
            "credential helper name {helper:?} is not valid"
        )));
    }
    let program = format!("docker-credential-{helper}");
    let server = if host == "docker.io" {
        "https://index.docker.io/v1/".to_string()
    } else {
        host.to_string()
    };
    let io_err = |e: std::io::Error| Error::Io {
        context: format!("run {program}"),
        source: e,
    };
    let mut helper = Command::new(&program);
    helper
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    platform::inherit_only_stdio(&mut helper);
    let mut child = helper.spawn().map_err(io_err)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(server.as_bytes()).map_err(io_err)?;
    }
    let out = child.wait_with_output().map_err(io_err)?;
    if !out.status.success() {
        // "credentials not found in native keychain": no credentials, not an error.
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct HelperOut {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let h: HelperOut = serde_json::from_slice(&out.stdout)
        .map_err(|_| Error::InvalidReference(format!("{program} printed malformed output")))?;
    Ok(Some(if h.username == "<token>" {
        Credentials {
            identity_token: h.secret,
            ..Default::default()
        }
    } else {
        Credentials {
            username: h.username,
            password: h.secret,
            ..Default::default()
        }
    }))
}

/// One parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme: `basic` or `bearer`.
    pub scheme: String,
    /// Lower-cased parameter names and their values.
    pub params: BTreeMap<String, String>,
}

/// Parses `Bearer realm="https://auth/token",service="reg",scope="repository:x:pull"`.
/// Only the first challenge is taken; registries send one.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = match header.find(char::is_whitespace) {
        Some(i) => (&header[..i], header[i..].trim_start()),
        None => (header, ""),
    };
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return None;
    }
    let mut params = BTreeMap::new();
    let bytes = rest.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i].is_ascii_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != b'=' && bytes[i] != b',' {
            i += 1;
        }
        let name = rest[start..i].trim().to_ascii_lowercase();
        if i >= bytes.len() || bytes[i] != b'=' {
            if name.is_empty() {
                break;
            }
            // A token68 or a second scheme: stop at what we understood.
            break;
        }
        i += 1;
        let value = if i < bytes.len() && bytes[i] == b'"' {
            i += 1;
            let mut v = Vec::new();
            let mut closed = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' if i + 1 < bytes.len() => {
                        v.push(bytes[i + 1]);
                        i += 2;
                    }
                    b'"' => {
                        i += 1;
                        closed = true;
                        break;
                    }
                    b => {
                        v.push(b);
                        i += 1;
                    }
                }
            }
            if !closed {
                return None;
            }
            String::from_utf8(v).ok()?
        } else {
            let s = i;
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            rest[s..i].trim().to_string()
        };
        if !name.is_empty() {
            params.insert(name, value);
        }
    }
    Some(Challenge {
        scheme: scheme.to_ascii_lowercase(),
        params,
    })
}

/// The `Authorization` value for basic auth.
pub(crate) fn basic_header(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.docker.io/token");
        assert_eq!(c.params["service"], "registry.docker.io");
        assert_eq!(c.params["scope"], "repository:library/busybox:pull");
        let c = parse_challenge(r#"Basic realm="Registry \"Realm\"", charset=UTF-8"#).unwrap();
        assert_eq!(c.scheme, "basic");
        assert_eq!(c.params["realm"], r#"Registry "Realm""#);
        assert_eq!(c.params["charset"], "UTF-8");
        assert_eq!(parse_challenge("Basic").unwrap().params.len(), 0);
        for bad in ["", "Bearer realm=\"unterminated", "B@d x=y"] {
            assert!(parse_challenge(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn credentials_redact_and_decode() {
        let c = Credentials::from_cri("", "", "dXNlcjpzM2NyZXQ6eA==", "", "").unwrap();
        assert_eq!(c.username, "user");
        assert_eq!(c.password, "s3cret:x");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("s3cret") && !dbg.contains("\"user\""),
            "{dbg}"
        );
        assert!(Credentials::from_cri("", "", "%%%", "", "").is_err());
        assert_ne!(
            c.fingerprint(),
            Credentials::default().fingerprint(),
            "fingerprints separate credentials"
        );
    }

    #[test]
    fn docker_config_lookup() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {"https://index.docker.io/v1/": {"auth": "aHViOnB3"},
                          "127.0.0.1:5000": {"username": "u", "password": "p"},
                          "tok.example": {"identitytoken": "refresh"}},
                "credHelpers": {"helped.example": "definitely-missing-helper"}}"#,
        )
        .unwrap();
        let cfg = DockerConfig::new(Some(path.clone()));
        let hub = cfg.lookup("docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "pw")
        );
        assert_eq!(cfg.lookup("127.0.0.1:5000").unwrap().password, "p");
        assert_eq!(cfg.lookup("tok.example").unwrap().identity_token, "refresh");
        assert!(cfg.lookup("ghcr.io").is_none());
        // A missing helper program is an unusable source, not a crash.
        assert!(cfg.lookup("helped.example").is_none());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(cfg.lookup("docker.io").is_none());
        assert!(DockerConfig::new(None).lookup("docker.io").is_none());
    }
}
