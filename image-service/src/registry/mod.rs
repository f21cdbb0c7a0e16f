//! An OCI distribution client: endpoints (mirrors, then the origin), authentication
//! (anonymous, basic, bearer tokens with a cache), retries, and size-capped reads.
//!
//! Written on reqwest rather than oci-client because kubelet's credential forms
//! (`identity_token` refresh tokens, `registry_token`), per-registry mirrors tried in
//! order, ranged resumption of blobs and the retry policy below are not in
//! oci-client's API.

mod auth;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use auth::{Challenge, basic_header, parse_challenge};
pub use auth::{Credentials, DockerConfig};

use crate::{Error, Result};

/// Settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// Mirror endpoints tried in order before the origin: `https://mirror:5000`,
    /// `http://10.0.0.5:5000` (plain HTTP is what the URL says), `mirror.example` (HTTPS).
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to the origin. Nothing is plain HTTP unless configured.
    pub insecure: bool,
}

/// Settings of the registry client.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Per registry host (`docker.io`, `ghcr.io`, `127.0.0.1:5000`); `*` applies to hosts
    /// without their own entry.
    pub hosts: BTreeMap<String, HostConfig>,
    /// PEM files of extra certificate authorities, trusted beside the system roots.
    pub ca_files: Vec<PathBuf>,
    /// docker config.json read for credentials kubelet did not send.
    pub docker_config: Option<PathBuf>,
    /// Attempts per request on connection errors and 5xx (4xx are never retried).
    pub attempts: u32,
    /// First retry delay; doubled per attempt.
    pub retry_delay: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            hosts: BTreeMap::new(),
            ca_files: Vec::new(),
            docker_config: DockerConfig::default_path(),
            attempts: 4,
            retry_delay: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Where requests for a repository go: a mirror or the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://registry-1.docker.io`, `http://127.0.0.1:5000`, possibly with a path.
    pub base: String,
    /// Host (and port) for credential lookup and messages.
    pub host: String,
    /// Kubelet's credentials are for the origin; mirrors get docker config ones only.
    pub is_mirror: bool,
}

/// (endpoint base, scope, credential fingerprint).
type TokenKey = (String, String, String);

/// The registry client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    config: RegistryConfig,
    docker: DockerConfig,
    /// `Authorization` values by (endpoint base, scope, credential fingerprint).
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

/// The reply to a successful GET, with the body still to read.
#[derive(Debug)]
pub struct Reply {
    pub response: reqwest::Response,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Reads the whole body, refusing more than `limit` bytes.
    pub async fn bytes_limited(mut self, limit: u64, what: &str) -> Result<Vec<u8>> {
        if self.response.content_length().is_some_and(|l| l > limit) {
            return Err(Error::Registry(format!(
                "{what} is larger than {limit} bytes"
            )));
        }
        let mut out = Vec::new();
        while let Some(chunk) = self
            .response
            .chunk()
            .await
            .map_err(|e| Error::Registry(format!("reading {what}: {}", describe(&e))))?
        {
            if out.len() as u64 + chunk.len() as u64 > limit {
                return Err(Error::Registry(format!(
                    "{what} is larger than {limit} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }
}

/// An error message without the URL's query (which may carry a token after a
/// redirect to blob storage) and without anything from the request headers.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else if e.is_body() || e.is_decode() {
        "connection broke while reading".to_string()
    } else {
        "request failed".to_string()
    };
    if let Some(url) = e.url() {
        msg.push_str(&format!(
            " ({}://{}{})",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ));
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Installs ring as the process's rustls provider (one provider for the whole binary).
pub fn install_crypto_provider() {
    // Err means a provider is installed already: fine either way.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Registry {
    /// Builds the client; CA files that cannot be read are an error (a typo must not
    /// silently fall back to the system roots only).
    pub fn new(config: RegistryConfig) -> Result<Registry> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("darwin-cri/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(config.connect_timeout)
            .read_timeout(config.read_timeout)
            .redirect(reqwest::redirect::Policy::limited(10))
            .no_proxy();
        if let Ok(proxy) = std::env::var("HTTPS_PROXY").or_else(|_| std::env::var("https_proxy"))
            && let Ok(p) = reqwest::Proxy::https(&proxy)
        {
            builder = builder.proxy(p);
        }
        for path in &config.ca_files {
            let pem = std::fs::read(path).map_err(|e| Error::Io {
                context: format!("read CA file {}", path.display()),
                source: e,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| Error::Registry(format!("CA file {}: {e}", path.display())))?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let http = builder
            .build()
            .map_err(|e| Error::Registry(format!("building the HTTP client: {e}")))?;
        let docker = DockerConfig::new(config.docker_config.clone());
        Ok(Registry {
            inner: Arc::new(Inner {
                http,
                config,
                docker,
                tokens: Mutex::new(HashMap::new()),
            }),
        })
    }

    fn host_config(&self, registry: &str) -> HostConfig {
        let hosts = &self.inner.config.hosts;
        hosts
            .get(registry)
            .or_else(|| hosts.get("*"))
            .cloned()
            .unwrap_or_default()
    }

    /// Asks each endpoint of `registry` (its mirrors, then the origin) for `/v2/`: the HTTP
    /// status, or why nothing answered. 200 and 401 both mean a registry is there.
    pub async fn probe(&self, registry: &str) -> Vec<(String, std::result::Result<u16, String>)> {
        let mut out = Vec::new();
        for ep in self.endpoints(registry) {
            let url = format!("{}/v2/", ep.base);
            let answer = self
                .inner
                .http
                .get(&url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| {
                    let mut text = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(s) = source {
                        text.push_str(&format!(": {s}"));
                        source = s.source();
                    }
                    text
                });
            out.push((url, answer));
        }
        out
    }

    /// The endpoints for `registry`: its mirrors in order, then the origin.
    pub(crate) fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let hc = self.host_config(registry);
        let mut out = Vec::new();
        for m in &hc.mirrors {
            let m = m.trim().trim_end_matches('/');
            if m.is_empty() {
                continue;
            }
            let base = if m.starts_with("http://") || m.starts_with("https://") {
                m.to_string()
            } else {
                format!("https://{m}")
            };
            let host = Url::parse(&base)
                .ok()
                .and_then(|u| {
                    u.host_str().map(|h| {
                        format!(
                            "{h}{}",
                            u.port().map(|p| format!(":{p}")).unwrap_or_default()
                        )
                    })
                })
                .unwrap_or_else(|| m.to_string());
            out.push(Endpoint {
                base,
                host,
                is_mirror: true,
            });
        }
        // Docker Hub's API lives on another host than its name.
        let api_host = if registry == "docker.io" {
            "registry-1.docker.io"
        } else {
            registry
        };
        let scheme = if hc.insecure { "http" } else { "https" };
        out.push(Endpoint {
            base: format!("{scheme}://{api_host}"),
            host: registry.to_string(),
            is_mirror: false,
        });
        out
    }

    async fn credentials_for(&self, ep: &Endpoint, given: &Credentials) -> Credentials {
        if !ep.is_mirror && !given.is_empty() {
            return given.clone();
        }
        // Reading config.json and running a credential helper block: off the async workers.
        let (docker, host) = (self.inner.docker.clone(), ep.host.clone());
        tokio::task::spawn_blocking(move || docker.lookup(&host))
            .await
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// GETs `path` (below `/v2/<repo>/`) from `ep`, authenticating as the registry asks.
    /// Non-success statuses map to errors: 401/403 Unauthenticated, 404 NotFound.
    pub(crate) async fn get(
        &self,
        ep: &Endpoint,
        repo: &str,
        path: &str,
        headers: HeaderMap,
        creds: &Credentials,
    ) -> Result<Reply> {
        let url = format!("{}/v2/{repo}/{path}", ep.base);
        let scope = format!("repository:{repo}:pull");
        let resp = self
            .request(Method::GET, ep, &url, headers, None, creds, &scope, true)
            .await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Reply { response: resp });
        }
        let challenged = resp
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge)
            .is_some();
        if status == StatusCode::UNAUTHORIZED && !challenged {
            return Err(Error::Unauthenticated(format!(
                "{} refused access to {repo} and sent no usable challenge",
                ep.host
            )));
        }
        let had_creds = !self.credentials_for(ep, creds).await.is_empty();
        Err(status_error(status, ep, repo, path, had_creds))
    }

    /// The origin endpoint of `registry`: pushes never go to a mirror.
    pub fn origin(&self, registry: &str) -> Endpoint {
        let mut all = self.endpoints(registry);
        all.pop().unwrap_or(Endpoint {
            base: format!("https://{registry}"),
            host: registry.to_string(),
            is_mirror: false,
        })
    }

    /// Sends `method` to `url` (an API URL of `ep`) on behalf of `repo`, authenticating for
    /// `scope` (`repository:R:pull,push`…) as the registry asks; any status comes back to the
    /// caller. The body is sent again on a retry, and retries happen only with `retry`: an
    /// upload chunk that failed half-way is resumed from what the registry has, not repeated.
    #[allow(clippy::too_many_arguments)]
    pub async fn request(
        &self,
        method: Method,
        ep: &Endpoint,
        url: &str,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
        creds: &Credentials,
        scope: &str,
        retry: bool,
    ) -> Result<reqwest::Response> {
        let creds = self.credentials_for(ep, creds).await;
        let key = (ep.base.clone(), scope.to_string(), creds.fingerprint());
        let mut authorization = self.cached_token(&key);
        if authorization.is_none() && !creds.registry_token.is_empty() {
            authorization = Some(format!("Bearer {}", creds.registry_token));
        }
        let mut challenged = false;
        loop {
            let mut h = headers.clone();
            if let Some(a) = &authorization {
                let mut v = HeaderValue::from_str(a)
                    .map_err(|_| Error::Unauthenticated(format!("{}: unusable token", ep.host)))?;
                v.set_sensitive(true);
                h.insert(header::AUTHORIZATION, v);
            }
            let attempts = if retry { self.inner.config.attempts } else { 1 };
            let resp = self
                .send_with(method.clone(), url, h, body.clone(), attempts)
                .await?;
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_challenge);
                let Some(challenge) = challenge else {
                    return Ok(resp);
                };
                let (value, ttl) = self.answer(ep, &challenge, &creds, scope).await?;
                self.store_token(key.clone(), value.clone(), ttl);
                authorization = Some(value);
                continue;
            }
            return Ok(resp);
        }
    }

    /// Sends one request, with up to `attempts` tries on connection errors and 5xx.
    async fn send_with(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Option<bytes::Bytes>,
        attempts: u32,
    ) -> Result<reqwest::Response> {
        let attempts = attempts.max(1);
        let mut delay = self.inner.config.retry_delay;
        let mut last = format!("{} did not answer", host_of(url));
        for attempt in 1..=attempts {
            let mut request = self
                .inner
                .http
                .request(method.clone(), url)
                .headers(headers.clone());
            if let Some(b) = &body {
                request = request.body(b.clone());
            }
            let res = request.send().await;
            match res {
                Ok(r) if r.status().is_server_error() && attempt < attempts => {
                    tracing::debug!(host = %host_of(url), status = %r.status(), "registry error; retrying");
                }
                Ok(r) => return Ok(r),
                Err(e) if e.is_connect() || e.is_timeout() || e.is_request() => {
                    last = describe(&e);
                    if attempt == attempts {
                        break;
                    }
                }
                Err(e) => return Err(Error::Registry(describe(&e))),
            }
            tracing::debug!(attempt, error = %last, "registry request failed; retrying");
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2).min(Duration::from_secs(8));
        }
        Err(Error::Unreachable(last))
    }

    fn cached_token(&self, key: &TokenKey) -> Option<String> {
        let mut t = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
        match t.get(key) {
            Some((v, exp)) if *exp > Instant::now() => Some(v.clone()),
            Some(_) => {
                t.remove(key);
                None
            }
            None => None,
        }
    }

    fn store_token(&self, key: TokenKey, value: String, ttl: Duration) {
        let mut t = self.inner.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if t.len() > 1024 {
            let now = Instant::now();
            t.retain(|_, (_, exp)| *exp > now);
        }
        t.insert(key, (value, Instant::now() + ttl));
    }

    /// Answers a challenge: an `Authorization` value and how long it may be reused.
    async fn answer(
        &self,
        ep: &Endpoint,
        challenge: &Challenge,
        creds: &Credentials,
        default_scope: &str,
    ) -> Result<(String, Duration)> {
        match challenge.scheme.as_str() {
            "basic" => {
                if creds.username.is_empty() && creds.password.is_empty() {
                    return Err(Error::Unauthenticated(format!(
                        "{} requires credentials (basic auth) and none were given",
                        ep.host
                    )));
                }
                Ok((basic_header(creds), Duration::from_secs(3600)))
            }
            "bearer" => self.fetch_token(ep, challenge, creds, default_scope).await,
            other => Err(Error::Unauthenticated(format!(
                "{} asks for unsupported authentication scheme {other:?}",
                ep.host
            ))),
        }
    }

    async fn fetch_token(
        &self,
        ep: &Endpoint,
        challenge: &Challenge,
        creds: &Credentials,
        default_scope: &str,
    ) -> Result<(String, Duration)> {
        let realm = challenge.params.get("realm").cloned().unwrap_or_default();
        // Credentials go to the token service over TLS, unless the registry itself is
        // configured as plain HTTP.
        let plain_ok = ep.base.starts_with("http://");
        let realm_url = Url::parse(&realm)
            .ok()
            .filter(|u| u.scheme() == "https" || (plain_ok && u.scheme() == "http"));
        let Some(realm_url) = realm_url else {
            return Err(Error::Unauthenticated(format!(
                "{} sent a bearer challenge without a usable realm",
                ep.host
            )));
        };
        let service = challenge.params.get("service").cloned().unwrap_or_default();
        let scope = challenge
            .params
            .get("scope")
            .cloned()
            .unwrap_or_else(|| default_scope.to_string());
        let http = &self.inner.http;
        let request = if !creds.identity_token.is_empty() {
            // OAuth2 refresh-token grant (docker's identity tokens).
            http.post(realm_url.clone()).form(&[
                ("grant_type", "refresh_token"),
                ("service", service.as_str()),
                ("scope", scope.as_str()),
                ("client_id", "darwin-cri"),
                ("refresh_token", creds.identity_token.as_str()),
            ])
        } else {
            let mut q: Vec<(&str, &str)> = vec![("scope", scope.as_str())];
            if !service.is_empty() {
                q.push(("service", service.as_str()));
            }
            let mut r = http.get(realm_url.clone()).query(&q);
            if !creds.username.is_empty() || !creds.password.is_empty() {
                let mut v = HeaderValue::from_str(&basic_header(creds)).map_err(|_| {
                    Error::Unauthenticated(format!(
                        "{}: credentials are not valid header text",
                        ep.host
                    ))
                })?;
                v.set_sensitive(true);
                r = r.header(header::AUTHORIZATION, v);
            }
            r
        };
        let resp = request.send().await.map_err(|e| {
            Error::Registry(format!("token endpoint of {}: {}", ep.host, describe(&e)))
        })?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(Error::Unauthenticated(format!(
                "{}: the token service refused {} ({status})",
                ep.host,
                if creds.is_empty() {
                    "anonymous access"
                } else {
                    "the credentials"
                }
            )));
        }
        if !status.is_success() {
            return Err(Error::Registry(format!(
                "token endpoint of {} answered {status}",
                ep.host
            )));
        }
        let body = Reply { response: resp }
            .bytes_limited(1 << 20, "token response")
            .await?;
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenReply = serde_json::from_slice(&body).map_err(|_| {
            Error::Registry(format!("token endpoint of {} sent malformed JSON", ep.host))
        })?;
        let token = if t.token.is_empty() {
            t.access_token
        } else {
            t.token
        };
        if token.is_empty() {
            return Err(Error::Unauthenticated(format!(
                "token endpoint of {} sent no token",
                ep.host
            )));
        }
        // Reuse a token until shortly before it expires (60 s when unspecified).
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(10, 3600).saturating_sub(5));
        Ok((format!("Bearer {token}"), ttl))
    }
}

fn host_of(url: &str) -> String {
    Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

fn status_error(
    status: StatusCode,
    ep: &Endpoint,
    repo: &str,
    path: &str,
    had_creds: bool,
) -> Error {
    let what = path.split('/').next().unwrap_or(path);
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthenticated(format!(
            "{} refused {} to {repo} ({status})",
            ep.host,
            if had_creds {
                "the credentials"
            } else {
                "anonymous access"
            }
        )),
        // A missing manifest is a missing image, named as the reference a user wrote
        // (`image "host/repo:1" not found`); a missing blob that a manifest names is the
        // registry's fault.
        StatusCode::NOT_FOUND => {
            let tail = path.rsplit('/').next().unwrap_or(path);
            if what == "manifests" {
                let sep = if tail.contains(':') { "@" } else { ":" };
                Error::NotFound(format!("{}/{repo}{sep}{tail}", ep.host))
            } else {
                Error::Registry(format!(
                    "{}/{repo}: {what} {tail} is missing (404), though a manifest names it",
                    ep.host
                ))
            }
        }
        StatusCode::TOO_MANY_REQUESTS => {
            Error::Registry(format!("{} is rate-limiting pulls ({status})", ep.host))
        }
        _ => Error::Registry(format!("{} answered {status} for {repo} {what}", ep.host)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_manifest_names_the_reference_once() {
        let ep = Endpoint {
            base: "http://127.0.0.1:5000".into(),
            host: "127.0.0.1:5000".into(),
            is_mirror: false,
        };
        let e = status_error(StatusCode::NOT_FOUND, &ep, "e2e/x", "manifests/1", false);
        assert!(matches!(e, Error::NotFound(_)), "{e:?}");
        assert_eq!(e.to_string(), r#"image "127.0.0.1:5000/e2e/x:1" not found"#);
        let by_digest = status_error(
            StatusCode::NOT_FOUND,
            &ep,
            "x",
            "manifests/sha256:ab",
            false,
        );
        assert_eq!(
            by_digest.to_string(),
            r#"image "127.0.0.1:5000/x@sha256:ab" not found"#
        );
        let blob = status_error(StatusCode::NOT_FOUND, &ep, "x", "blobs/sha256:cd", false);
        assert!(matches!(blob, Error::Registry(_)), "{blob:?}");
        assert!(
            blob.to_string().contains("blobs sha256:cd is missing"),
            "{blob}"
        );
    }

    #[test]
    fn endpoints_mirrors_then_origin() {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "docker.io".to_string(),
            HostConfig {
                mirrors: vec!["mirror.local:5000".into(), "http://10.0.0.5:5001/".into()],
                insecure: false,
            },
        );
        hosts.insert(
            "127.0.0.1:5000".to_string(),
            HostConfig {
                mirrors: vec![],
                insecure: true,
            },
        );
        let r = Registry::new(RegistryConfig {
            hosts,
            docker_config: None,
            ..Default::default()
        })
        .unwrap();
        let eps = r.endpoints("docker.io");
        let bases: Vec<_> = eps.iter().map(|e| e.base.as_str()).collect();
        assert_eq!(
            bases,
            [
                "https://mirror.local:5000",
                "http://10.0.0.5:5001",
                "https://registry-1.docker.io"
            ]
        );
        assert_eq!(eps[1].host, "10.0.0.5:5001");
        assert!(eps[0].is_mirror && !eps[2].is_mirror);
        assert_eq!(
            r.endpoints("127.0.0.1:5000")[0].base,
            "http://127.0.0.1:5000"
        );
        assert_eq!(r.endpoints("ghcr.io")[0].base, "https://ghcr.io");
    }

    #[test]
    fn unreadable_ca_file_is_an_error() {
        let err = Registry::new(RegistryConfig {
            ca_files: vec!["/nonexistent/ca.pem".into()],
            docker_config: None,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
