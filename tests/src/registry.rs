//! Registries for the pull tests: Debian's docker-registry on a free loopback port
//! (optionally with htpasswd auth), fixture images pushed with skopeo from layouts built
//! here, and a proxy in front of it that adds what a real registry will not do on
//! request: a bearer-token flow, corrupted blobs, throttled bodies.

use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use crate::free_port;
use sha2::{Digest, Sha256};

/// `docker-registry` serving plain HTTP on 127.0.0.1.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    pub dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    creds: Option<(String, String)>,
}

impl TestRegistry {
    pub fn start() -> anyhow::Result<TestRegistry> {
        Self::start_inner(None)
    }

    /// With htpasswd (bcrypt) basic auth for `user`/`password`.
    pub fn start_with_basic_auth(user: &str, password: &str) -> anyhow::Result<TestRegistry> {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    fn start_inner(creds: Option<(String, String)>) -> anyhow::Result<TestRegistry> {
        let bin = Path::new("/usr/bin/docker-registry");
        if !bin.exists() {
            bail!("docker-registry is not installed (apt-get install docker-registry)");
        }
        let dir = tempfile::Builder::new()
            .prefix("darwin-cri-registry")
            .tempdir()?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = &creds {
            let out = Command::new("htpasswd")
                .args(["-Bbn", u, p])
                .output()
                .context("htpasswd is not installed (apt-get install apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed");
            }
            std::fs::write(dir.path().join("htpasswd"), &out.stdout)?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        std::fs::write(dir.path().join("config.yml"), config)?;
        let log = std::fs::File::create(dir.path().join("registry.log"))?;
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut reg = TestRegistry {
            child,
            dir,
            addr,
            creds,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if http_status(&reg.addr, "/v2/").is_ok() {
                return Ok(reg);
            }
            if let Ok(Some(st)) = reg.child.try_wait() {
                bail!("docker-registry exited with {st}: {}", reg.log());
            }
            if Instant::now() > deadline {
                bail!("docker-registry did not answer: {}", reg.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Pushes the OCI layout at `layout` as `repo:tag` (all manifests of an index).
    pub fn push(&self, layout: &Path, repo_tag: &str) -> anyhow::Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--all",
            "--dest-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.addr));
        let out = cmd
            .output()
            .context("skopeo is not installed (apt-get install skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy to {repo_tag} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills `data` as real binaries compress: 4 KiB blocks of xorshift noise (from `state`)
/// alternating with blocks of repeated `text`.
pub fn fill_binary_like(data: &mut [u8], state: &mut u64, text: &[u8]) {
    for (i, chunk) in data.chunks_mut(4096).enumerate() {
        if i % 2 == 0 {
            for byte in chunk.iter_mut() {
                *state ^= *state << 13;
                *state ^= *state >> 7;
                *state ^= *state << 17;
                *byte = *state as u8;
            }
        } else {
            for (j, byte) in chunk.iter_mut().enumerate() {
                *byte = text[j % text.len()];
            }
        }
    }
}

/// A layer of `files` files of `file_mb` MB each: half random, half repeated text, so
/// gzip works about as hard as on real binaries.
pub fn big_layer(seed: u64, files: usize, file_mb: usize) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut x = seed | 1;
    for f in 0..files {
        let mut data = vec![0u8; file_mb << 20];
        fill_binary_like(&mut data, &mut x, b"darwin-cri pull benchmark ");
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append_data(&mut h, format!("layer{seed}/file{f}"), data.as_slice())
            .expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// The pull benchmarks' image: five gzip layers of about `total_mb` MB compressed in all, as an
/// OCI layout at `dir` for the host's architecture.
#[derive(Debug)]
pub struct BigImage {
    pub layout: Layout,
    /// Every blob's bytes: what a pull downloads.
    pub compressed_bytes: u64,
    pub unpacked_mb: usize,
}

pub fn big_image(dir: &Path, total_mb: usize) -> anyhow::Result<BigImage> {
    let mut layout = Layout::new(dir)?;
    // Uncompressed sizes chosen so the compressed image is about total_mb.
    let per_layer_mb = (total_mb * 2 / 5).max(2);
    let layers: Vec<Vec<u8>> = (1..=5).map(|s| big_layer(s, per_layer_mb / 2, 2)).collect();
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    layout.image("linux", arch, None, &layers, Compression::Gzip)?;
    layout.finish()?;
    let compressed_bytes = std::fs::read_dir(layout.dir.join("blobs/sha256"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    Ok(BigImage {
        layout,
        compressed_bytes,
        unpacked_mb: 5 * per_layer_mb,
    })
}

/// Counts and hashes what passes through to `inner`.
struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// An image shaped like an Xcode install: `files` files of about `total_mb` MB in all (nine in
/// ten of 4 KiB, the rest large; binary-like data that gzip halves) under
/// /Applications/Xcode.app/Contents/Developer, 100 to a directory, in five gzip layers, the
/// first of which also holds busybox (so that its containers run `sleep`). The layers are
/// streamed to the layout, never held in memory.
pub fn xcode_like_image(dir: &Path, files: usize, total_mb: usize) -> anyhow::Result<BigImage> {
    const LAYERS: usize = 5;
    const SMALL: usize = 4096;
    let mut layout = Layout::new(dir)?;
    let large_count = files.div_ceil(10).max(1);
    let small_total = (files - large_count) * SMALL;
    let large = ((total_mb << 20).saturating_sub(small_total) / large_count).max(SMALL);
    let mut data = vec![0u8; large];
    let mut state = 0x853c_49e6_748f_ea9bu64;
    let (mut descs, mut diff_ids, mut compressed_bytes) = (Vec::new(), Vec::new(), 0u64);
    let busybox = crate::busybox_layer()?;
    let header = |kind: tar::EntryType, mode: u32, size: usize| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(size as u64);
        h
    };
    for layer in 0..LAYERS {
        let tmp = dir.join(format!("layer{layer}.partial"));
        let file = std::fs::File::create(&tmp)?;
        let blob = HashWriter {
            inner: std::io::BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            len: 0,
        };
        let gz = flate2::write::GzEncoder::new(blob, flate2::Compression::fast());
        let mut tar = tar::Builder::new(HashWriter {
            inner: gz,
            hasher: Sha256::new(),
            len: 0,
        });
        if layer == 0 {
            let mut base = tar::Archive::new(busybox.as_slice());
            for entry in base.entries()? {
                let mut entry = entry?;
                let h = entry.header().clone();
                let mut body = Vec::new();
                entry.read_to_end(&mut body)?;
                tar.append(&h, body.as_slice())?;
            }
        }
        let top = format!("Applications/Xcode.app/Contents/Developer/L{layer}");
        let mut path = String::new();
        for part in top.split('/') {
            if !path.is_empty() {
                path.push('/');
            }
            path.push_str(part);
            let mut h = header(tar::EntryType::Directory, 0o755, 0);
            tar.append_data(&mut h, &path, std::io::empty())?;
        }
        let first = layer * files / LAYERS;
        let last = (layer + 1) * files / LAYERS;
        for i in first..last {
            let local = i - first;
            if local.is_multiple_of(100) {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, format!("{top}/d{}", local / 100), std::io::empty())?;
            }
            let size = if i.is_multiple_of(10) { large } else { SMALL };
            fill_binary_like(&mut data[..size], &mut state, b"Xcode-sized benchmark ");
            let mode = if i.is_multiple_of(20) { 0o755 } else { 0o644 };
            let mut h = header(tar::EntryType::Regular, mode, size);
            tar.append_data(
                &mut h,
                format!("{top}/d{}/f{i}", local / 100),
                &data[..size],
            )?;
        }
        let outer = tar.into_inner()?;
        diff_ids.push(format!("sha256:{}", hex::encode(outer.hasher.finalize())));
        let blob = outer.inner.finish()?;
        let digest = format!("sha256:{}", hex::encode(blob.hasher.clone().finalize()));
        let len = blob.len;
        blob.inner
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
        std::fs::rename(
            &tmp,
            dir.join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )?;
        compressed_bytes += len;
        descs.push(json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": digest,
            "size": len,
        }));
    }
    let arch = if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    };
    layout.image_of("linux", arch, None, descs, diff_ids)?;
    layout.finish()?;
    Ok(BigImage {
        layout,
        compressed_bytes,
        unpacked_mb: (small_total + large * large_count) >> 20,
    })
}

/// The status code of a plain HTTP/1.0 GET.
pub fn http_status(addr: &str, path: &str) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf)?;
    let line = String::from_utf8_lossy(&buf[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")
}

/// A tar layer from (path, contents) pairs; directories end with `/`.
pub fn tar_layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
        }
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append_data(&mut h, path, *data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// Layer compressions the builder writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Builds OCI layouts: images (one manifest each) gathered into `index.json`.
#[derive(Debug)]
pub struct Layout {
    pub dir: PathBuf,
    manifests: Vec<Value>,
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl Layout {
    pub fn new(dir: &Path) -> anyhow::Result<Layout> {
        std::fs::create_dir_all(dir.join("blobs/sha256"))?;
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
        Ok(Layout {
            dir: dir.to_path_buf(),
            manifests: Vec::new(),
        })
    }

    pub fn blob(&self, data: &[u8]) -> anyhow::Result<String> {
        let d = digest_of(data);
        std::fs::write(
            self.dir
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            data,
        )?;
        Ok(d)
    }

    /// Adds an image for `os/arch` (with an optional os.version) made of `layers`
    /// (uncompressed tars); returns the manifest digest.
    pub fn image(
        &mut self,
        os: &str,
        arch: &str,
        os_version: Option<&str>,
        layers: &[Vec<u8>],
        compression: Compression,
    ) -> anyhow::Result<String> {
        let mut diff_ids = Vec::new();
        let mut descs = Vec::new();
        for tar in layers {
            diff_ids.push(digest_of(tar));
            let (data, media_type) = match compression {
                Compression::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
                Compression::Gzip => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    gz.write_all(tar)?;
                    (gz.finish()?, "application/vnd.oci.image.layer.v1.tar+gzip")
                }
                Compression::Zstd => (
                    zstd::encode_all(tar.as_slice(), 3)?,
                    "application/vnd.oci.image.layer.v1.tar+zstd",
                ),
            };
            let d = self.blob(&data)?;
            descs.push(json!({"mediaType": media_type, "digest": d, "size": data.len()}));
        }
        self.image_of(os, arch, os_version, descs, diff_ids)
    }

    /// Adds an image whose layer blobs are in the layout already (`descs`, with their
    /// `diff_ids`); returns the manifest digest.
    pub fn image_of(
        &mut self,
        os: &str,
        arch: &str,
        os_version: Option<&str>,
        descs: Vec<Value>,
        diff_ids: Vec<String>,
    ) -> anyhow::Result<String> {
        let mut config = json!({
            "architecture": arch, "os": os,
            "config": {"Cmd": ["sh"], "User": "1000"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        });
        if let Some(v) = os_version {
            config["os.version"] = json!(v);
        }
        let config = serde_json::to_vec(&config)?;
        let cd = self.blob(&config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
            "layers": descs
        }))?;
        let md = self.blob(&manifest)?;
        let mut platform = json!({"os": os, "architecture": arch});
        if let Some(v) = os_version {
            platform["os.version"] = json!(v);
        }
        self.manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(), "platform": platform
        }));
        Ok(md)
    }

    /// Writes `index.json`: with one image, pointing straight at its manifest; with
    /// several, at a nested image index (what skopeo pushes as a multi-platform image).
    /// Returns the digest a registry will serve for the tag.
    pub fn finish(&self) -> anyhow::Result<String> {
        let top = if self.manifests.len() == 1 {
            self.manifests[0].clone()
        } else {
            let index = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": self.manifests
            }))?;
            let d = self.blob(&index)?;
            json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": d, "size": index.len()})
        };
        let digest = top["digest"].as_str().unwrap_or_default().to_string();
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [top]}))?,
        )?;
        Ok(digest)
    }
}

/// What the proxy does to traffic.
#[derive(Debug, Default)]
pub struct ProxyMode {
    /// Require a bearer token obtained from `/token` with these basic credentials.
    pub bearer: Option<(String, String)>,
    /// Flip one byte in every blob body.
    pub corrupt_blobs: AtomicBool,
    /// Blob bodies at this many bytes per second (0: full speed).
    pub throttle: AtomicU64,
    /// The upload chunk (PATCH, counted from 1) that is lost on the way: the registry never
    /// sees it and its client gets a 502, as after a broken connection; 0: none.
    pub break_patch: AtomicUsize,
    /// PATCH requests seen.
    pub patches: AtomicUsize,
    /// This many of the next blob bodies end halfway (the rest never comes), as a dropped
    /// connection does.
    pub cut_blobs: AtomicUsize,
    /// Range headers are not passed on: the registry answers every resume with the whole blob.
    pub ignore_range: AtomicBool,
}

/// A recording, meddling HTTP proxy in front of a registry.
#[derive(Debug)]
pub struct Proxy {
    pub addr: String,
    pub mode: Arc<ProxyMode>,
    /// Requests seen (method, path, Range header).
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A request the proxy saw: method, path and query, Range header.
pub type Seen = (String, String, Option<String>);

const TOKEN: &str = "test-token-0123456789";

impl Proxy {
    pub async fn start(upstream: &str, mode: ProxyMode) -> anyhow::Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let mode = Arc::new(mode);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let ctx = Arc::new(ProxyCtx {
            upstream: upstream.to_string(),
            self_addr: addr.clone(),
            mode: Arc::clone(&mode),
            seen: Arc::clone(&seen),
            hits: Arc::clone(&hits),
            client,
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = Arc::clone(&ctx);
                        async move { Ok::<_, Infallible>(ctx.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Proxy {
            addr,
            mode,
            seen,
            hits,
            task,
        })
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr.parse().expect("proxy address")
    }
}

type ProxyBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

struct ProxyCtx {
    upstream: String,
    self_addr: String,
    mode: Arc<ProxyMode>,
    seen: Arc<Mutex<Vec<Seen>>>,
    hits: Arc<AtomicUsize>,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

fn full(status: StatusCode, headers: &[(&str, String)], body: Vec<u8>) -> Response<ProxyBody> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body)).boxed())
        .expect("response")
}

impl ProxyCtx {
    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<ProxyBody> {
        self.hits.fetch_add(1, Ordering::Relaxed);
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let range = req
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.seen.lock().expect("seen").push((
            req.method().to_string(),
            path.clone(),
            range.clone(),
        ));
        if let Some((user, pass)) = &self.mode.bearer {
            if path.starts_with("/token") {
                let expected = format!(
                    "Basic {}",
                    base64_encode(format!("{user}:{pass}").as_bytes())
                );
                if auth.as_deref() != Some(expected.as_str()) {
                    return full(StatusCode::UNAUTHORIZED, &[], b"{\"errors\":[]}".to_vec());
                }
                return full(
                    StatusCode::OK,
                    &[("content-type", "application/json".into())],
                    json!({"token": TOKEN, "expires_in": 300})
                        .to_string()
                        .into_bytes(),
                );
            }
            if auth.as_deref() != Some(&format!("Bearer {TOKEN}")) {
                let challenge = format!(
                    "Bearer realm=\"http://{}/token\",service=\"test-registry\",scope=\"repository:x:pull\"",
                    self.self_addr
                );
                return full(
                    StatusCode::UNAUTHORIZED,
                    &[("www-authenticate", challenge)],
                    b"{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}".to_vec(),
                );
            }
        }
        if req.method() == hyper::Method::PATCH {
            let n = self.mode.patches.fetch_add(1, Ordering::Relaxed) + 1;
            if n == self.mode.break_patch.load(Ordering::Relaxed) {
                return full(StatusCode::BAD_GATEWAY, &[], Vec::new());
            }
        }
        let mut up = Request::builder()
            .method(req.method())
            .uri(format!("http://{}{path}", self.upstream));
        for name in ["accept", "range", "content-type", "content-range"] {
            if name == "range" && self.mode.ignore_range.load(Ordering::Relaxed) {
                continue;
            }
            if let Some(v) = req.headers().get(name) {
                up = up.header(name, v);
            }
        }
        // Pushes send bodies: passed on whole.
        let Ok(request_body) = req.into_body().collect().await else {
            return full(StatusCode::BAD_GATEWAY, &[], Vec::new());
        };
        let Ok(up) = up.body(Full::new(request_body.to_bytes())) else {
            return full(StatusCode::BAD_GATEWAY, &[], Vec::new());
        };
        let resp = match self.client.request(up).await {
            Ok(r) => r,
            Err(_) => return full(StatusCode::BAD_GATEWAY, &[], Vec::new()),
        };
        let status = resp.status();
        let mut headers = Vec::new();
        for name in [
            "content-type",
            "docker-content-digest",
            "content-range",
            "location",
            "range",
            "docker-upload-uuid",
        ] {
            if let Some(v) = resp.headers().get(name).and_then(|v| v.to_str().ok()) {
                // Upload locations name the registry: the client is to keep coming here.
                headers.push((name, v.replace(&self.upstream, &self.self_addr)));
            }
        }
        let Ok(body) = resp.into_body().collect().await else {
            return full(StatusCode::BAD_GATEWAY, &[], Vec::new());
        };
        let mut body = body.to_bytes().to_vec();
        let is_blob = path.contains("/blobs/sha256:") && status.is_success();
        if is_blob && self.mode.corrupt_blobs.load(Ordering::Relaxed) && !body.is_empty() {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        if is_blob
            && body.len() > 1024
            && self
                .mode
                .cut_blobs
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        {
            body.truncate(body.len() / 2);
        }
        let rate = self.mode.throttle.load(Ordering::Relaxed);
        if !is_blob || rate == 0 {
            return full(status, &headers, body);
        }
        // A throttled body: 10 slices per second.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let slice = ((rate / 10) as usize).max(1);
        tokio::spawn(async move {
            for chunk in body.chunks(slice) {
                if tx
                    .send(Ok(Frame::data(Bytes::copy_from_slice(chunk))))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let mut r = Response::builder().status(status);
        for (k, v) in &headers {
            r = r.header(*k, v);
        }
        r.body(StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)).boxed())
            .expect("response")
    }
}

/// Standard base64 with padding (for basic-auth headers and kubelet's `auth` field).
pub fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every blob in `<root>/images/blobs/sha256` hashes to its name; nothing in `tmp/`.
pub fn verify_store(root: &Path) -> anyhow::Result<usize> {
    let blobs = root.join("images/blobs/sha256");
    let mut n = 0;
    for e in std::fs::read_dir(&blobs)? {
        let e = e?;
        let data = std::fs::read(e.path())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if hex::encode(Sha256::digest(&data)) != name {
            bail!("blob {name} does not match its content");
        }
        n += 1;
    }
    let tmp: Vec<_> = std::fs::read_dir(root.join("images/tmp"))?.collect();
    if !tmp.is_empty() {
        bail!("{} leftovers in images/tmp", tmp.len());
    }
    Ok(n)
}
