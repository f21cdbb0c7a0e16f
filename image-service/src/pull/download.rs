//! Blob downloads: streamed through a verifying writer into `ingest/<hex>`, resumed with a
//! `Range` request after a broken connection, renamed into the store once size and digest match.
//! While a layer downloads, the unpacker reads what has landed through a [`Follower`].

use std::sync::Condvar;

use super::*;

/// A blob as its download goes: which file holds it, how much of it is written, and how the
/// download ended. Shared by the download (which tells) and the unpacker (which follows).
#[derive(Debug, Default)]
pub(super) struct Growing {
    state: Mutex<GrowState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GrowState {
    /// The file being written and how many bytes of it are there.
    file: Option<(PathBuf, u64)>,
    /// The download started over or moved to another file: what a follower read so far may
    /// not be what the blob holds at those offsets, so it stops.
    restarted: bool,
    /// Set when the download is over: the verified blob, or why it failed.
    end: Option<std::result::Result<PathBuf, String>>,
}

impl Growing {
    fn lock(&self) -> std::sync::MutexGuard<'_, GrowState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `len` bytes of the blob are in `path`.
    pub(super) fn wrote(&self, path: &std::path::Path, len: u64) {
        let mut st = self.lock();
        if let Some((p, l)) = &st.file
            && (p != path || len < *l)
        {
            st.restarted = true;
        }
        st.file = Some((path.to_path_buf(), len));
        drop(st);
        self.changed.notify_all();
    }

    /// The download is over: the blob is verified at the path, or it failed.
    pub(super) fn end(&self, outcome: std::result::Result<&std::path::Path, String>) {
        let mut st = self.lock();
        match outcome {
            Ok(path) => {
                // Renamed into the store (or there already): the same bytes, at the new place.
                let len = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                st.file = Some((path.to_path_buf(), len));
                st.end = Some(Ok(path.to_path_buf()));
            }
            Err(why) => st.end = Some(Err(why)),
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Ends a download that stopped without saying how (its task was cancelled): followers
    /// must not wait for bytes that will never come.
    pub(super) fn abandon(&self) {
        let mut st = self.lock();
        if st.end.is_none() {
            st.end = Some(Err("the download was cancelled".into()));
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Whether a follower may have read bytes the blob does not hold (it then failed, and the
    /// layer is applied again from the stored blob).
    pub(super) fn restarted(&self) -> bool {
        self.lock().restarted
    }

    pub(super) fn follow(self: &Arc<Self>) -> Follower {
        Follower {
            growing: Arc::clone(self),
            file: None,
            pos: 0,
        }
    }
}

/// Reads a blob from its first byte while it downloads: waits for bytes not yet written, and
/// ends only once the download has verified the whole blob.
pub(super) struct Follower {
    growing: Arc<Growing>,
    file: Option<File>,
    pos: u64,
}

impl Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            let (path, len) = {
                let mut st = self.growing.lock();
                loop {
                    if st.restarted {
                        return Err(io::Error::other("the download started over"));
                    }
                    if let Some(Err(why)) = &st.end {
                        return Err(io::Error::other(why.clone()));
                    }
                    match &st.file {
                        Some((path, len)) if *len > self.pos => break (path.clone(), *len),
                        _ if matches!(st.end, Some(Ok(_))) => return Ok(0),
                        _ => {
                            st = self
                                .growing
                                .changed
                                .wait(st)
                                .unwrap_or_else(|e| e.into_inner());
                        }
                    }
                }
            };
            if self.file.is_none() {
                match File::open(&path) {
                    Ok(f) => self.file = Some(f),
                    // Renamed into the store meanwhile: the state says where, next time round.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some(file) = &self.file else { continue };
            let want = buf.len().min((len - self.pos) as usize);
            let n = file.read_at(&mut buf[..want], self.pos)?;
            if n == 0 {
                // Written bytes that are not there: the file was cut short, i.e. started over.
                return Err(io::Error::other("the download started over"));
            }
            self.pos += n as u64;
            return Ok(n);
        }
    }
}

pub(super) enum DownloadEnd {
    Complete(Partial),
    Broken(String),
}

/// A download in progress: the file (locked against other processes), its hash state
/// and length. Files of other processes' downloads are not touched: we then write a
/// private temporary file instead.
pub(super) struct Partial {
    file: PartialFile,
    path: PathBuf,
    hasher: Sha256,
    len: u64,
    /// Whether the file is the resumable `ingest/<hex>` (kept on failure).
    resumable: bool,
    /// Renamed into the blob store.
    published: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        // A private download dies with its attempt; a resumable one waits for the next.
        if !self.resumable && !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

pub(super) enum PartialFile {
    Locked(Flock<File>),
    Private(File),
}

impl PartialFile {
    pub(super) fn file(&mut self) -> &mut File {
        match self {
            PartialFile::Locked(f) => f,
            PartialFile::Private(f) => f,
        }
    }
}

impl Partial {
    pub(super) fn open(path: &std::path::Path, tmp_dir: &std::path::Path) -> Result<Partial> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx(|| format!("open {}", path.display()))?;
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                let mut p = Partial {
                    file: PartialFile::Locked(locked),
                    path: path.to_path_buf(),
                    hasher: Sha256::new(),
                    len: 0,
                    resumable: true,
                    published: false,
                };
                // Hash what an earlier attempt left.
                let file = p.file.file();
                file.rewind().ctx(|| format!("read {}", path.display()))?;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = file
                        .read(&mut buf)
                        .ctx(|| format!("read {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    p.hasher.update(&buf[..n]);
                    p.len += n as u64;
                }
                Ok(p)
            }
            Err(_) => {
                let (tmp, f) = create_tmp_file(tmp_dir)
                    .ctx(|| format!("create temp file in {}", tmp_dir.display()))?;
                Ok(Partial {
                    file: PartialFile::Private(f),
                    path: tmp,
                    hasher: Sha256::new(),
                    len: 0,
                    resumable: false,
                    published: false,
                })
            }
        }
    }

    pub(super) fn reset(mut self) -> Result<Partial> {
        let f = self.file.file();
        f.set_len(0)
            .ctx(|| format!("truncate {}", self.path.display()))?;
        f.rewind()
            .ctx(|| format!("truncate {}", self.path.display()))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(self)
    }

    pub(super) fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.file().write_all(chunk)?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        Ok(())
    }

    /// Ends the attempt: a resumable file stays for the next one, a private one goes.
    pub(super) fn keep(self) {}

    /// Verifies size and digest, then publishes at `dest`. On a mismatch the file is
    /// discarded.
    pub(super) fn finish(mut self, digest: &str, size: u64, dest: &std::path::Path) -> Result<()> {
        let actual = format!("sha256:{}", hex::encode(self.hasher.clone().finalize()));
        let verdict = if self.len != size {
            Err(Error::InvalidLayout(format!(
                "blob {digest} has size {}, descriptor says {size}",
                self.len
            )))
        } else if actual != digest {
            Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual,
            })
        } else {
            Ok(())
        };
        if let Err(e) = verdict {
            let _ = fs::remove_file(&self.path);
            return Err(e);
        }
        self.file
            .file()
            .sync_all()
            .ctx(|| format!("fsync blob {digest}"))?;
        fs::rename(&self.path, dest).ctx(|| format!("store blob {digest}"))?;
        self.published = true;
        Ok(())
    }
}

impl Source<'_> {
    /// A small blob (config) read fully and verified.
    pub(super) async fn get_blob_small(
        &self,
        registry: &Registry,
        digest: &str,
        size: u64,
    ) -> Result<Vec<u8>> {
        let reply = registry
            .get(
                &self.ep,
                &self.repo,
                &format!("blobs/{digest}"),
                HeaderMap::new(),
                self.creds,
            )
            .await?;
        let bytes = reply.bytes_limited(size, "image config").await?;
        if bytes.len() as u64 != size {
            return Err(Error::InvalidLayout(format!(
                "blob {digest} has size {}, descriptor says {size}",
                bytes.len()
            )));
        }
        verify_bytes(&bytes, digest)?;
        Ok(bytes)
    }
}

impl Puller {
    /// Brings blob `digest` into the store (shared with concurrent pulls), resuming a
    /// partial download, retrying broken connections. Returns the blob's path.
    pub(super) async fn fetch_blob(
        &self,
        src: &Source<'_>,
        digest: &str,
        size: u64,
        progress: &Option<Progress>,
        growing: &Arc<Growing>,
    ) -> Result<PathBuf> {
        let fetched = self
            .fetch_blob_once(src, digest, size, progress, growing)
            .await;
        growing.end(match &fetched {
            Ok(path) => Ok(path),
            Err(e) => Err(e.to_string()),
        });
        fetched
    }

    async fn fetch_blob_once(
        &self,
        src: &Source<'_>,
        digest: &str,
        size: u64,
        progress: &Option<Progress>,
        growing: &Arc<Growing>,
    ) -> Result<PathBuf> {
        let _g = self.inner.blobs.lock(digest).await;
        let store = &self.inner.store;
        let dest = store.blobs_dir().join(sha256_hex(digest)?);
        if dest.is_file() {
            emit(
                progress,
                PullEvent::BlobDone {
                    digest: digest.into(),
                    downloaded: false,
                },
            );
            return Ok(dest);
        }
        let partial_path = store.root().join("ingest").join(sha256_hex(digest)?);
        let attempts = 4u32;
        let mut delay = Duration::from_millis(250);
        let mut restarted = false;
        for attempt in 1..=attempts {
            let (pp, tmp_dir) = (partial_path.clone(), store.tmp_dir());
            let partial = blocking(move || Partial::open(&pp, &tmp_dir)).await?;
            growing.wrote(&partial.path, partial.len);
            match self
                .download_into(src, digest, size, partial, progress, growing)
                .await
            {
                Ok(DownloadEnd::Complete(partial)) => {
                    let (dest2, digest2) = (dest.clone(), digest.to_string());
                    let outcome = blocking(move || partial.finish(&digest2, size, &dest2)).await;
                    match outcome {
                        Ok(()) => {
                            emit(
                                progress,
                                PullEvent::BlobDone {
                                    digest: digest.into(),
                                    downloaded: true,
                                },
                            );
                            return Ok(dest);
                        }
                        // Resumed data that does not verify: once more from zero.
                        Err(Error::DigestMismatch { .. }) if !restarted => {
                            restarted = true;
                            tracing::warn!(%digest, "resumed blob failed verification; downloading again");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(DownloadEnd::Broken(why)) if attempt < attempts => {
                    tracing::info!(%digest, attempt, error = %why, "blob download broke; resuming");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Ok(DownloadEnd::Broken(why)) => return Err(Error::Registry(why)),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Registry(format!(
            "blob {digest}: download did not complete"
        )))
    }

    pub(super) async fn download_into(
        &self,
        src: &Source<'_>,
        digest: &str,
        size: u64,
        mut partial: Partial,
        progress: &Option<Progress>,
        growing: &Arc<Growing>,
    ) -> Result<DownloadEnd> {
        if partial.len > size {
            partial = blocking(move || partial.reset()).await?;
            growing.wrote(&partial.path, 0);
        }
        if partial.len == size {
            return Ok(DownloadEnd::Complete(partial));
        }
        let mut h = HeaderMap::new();
        if partial.len > 0 {
            let range = HeaderValue::from_str(&format!("bytes={}-", partial.len))
                .map_err(|_| Error::Registry("range header".into()))?;
            h.insert(header::RANGE, range);
        }
        let ranged = partial.len > 0;
        let reply = match self
            .inner
            .registry
            .get(&src.ep, &src.repo, &format!("blobs/{digest}"), h, src.creds)
            .await
        {
            Ok(r) => r,
            // A registry that refuses the range (416, ...): start over without one.
            Err(Error::Registry(why)) if ranged => {
                let path = partial.path.clone();
                blocking(move || partial.reset().map(Partial::keep)).await?;
                growing.wrote(&path, 0);
                return Ok(DownloadEnd::Broken(why));
            }
            Err(e) => return Err(e),
        };
        let mut response = reply.response;
        let status = response.status();
        let resumed = status == StatusCode::PARTIAL_CONTENT
            && response
                .headers()
                .get(header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {}-", partial.len)));
        if status == StatusCode::PARTIAL_CONTENT && !resumed {
            // Some other range than asked for: unusable; the next attempt starts over.
            let path = partial.path.clone();
            blocking(move || partial.reset().map(Partial::keep)).await?;
            growing.wrote(&path, 0);
            return Ok(DownloadEnd::Broken(format!(
                "blob {digest}: the registry answered another range than requested"
            )));
        }
        if !resumed && partial.len > 0 {
            partial = blocking(move || partial.reset()).await?;
            growing.wrote(&partial.path, 0);
        }
        if let Some(p) = progress
            && partial.len > 0
        {
            p(PullEvent::Progress {
                digest: digest.into(),
                bytes: partial.len,
            });
        }
        // A blocking writer hashes and writes; this task only moves chunks.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(32);
        let limit = size;
        let d = digest.to_string();
        let follow = Arc::clone(growing);
        let writer = tokio::task::spawn_blocking(move || -> Result<Partial> {
            while let Some(chunk) = rx.blocking_recv() {
                partial
                    .write(&chunk)
                    .ctx(|| format!("write blob {d} to {}", partial.path.display()))?;
                follow.wrote(&partial.path, partial.len);
                if partial.len > limit {
                    let _ = fs::remove_file(&partial.path);
                    return Err(Error::InvalidLayout(format!(
                        "blob {d} is larger than its descriptor says ({limit} bytes)"
                    )));
                }
            }
            Ok(partial)
        });
        let mut broken = None;
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let n = chunk.len() as u64;
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                    emit(
                        progress,
                        PullEvent::Progress {
                            digest: digest.into(),
                            bytes: n,
                        },
                    );
                }
                Ok(None) => break,
                Err(e) => {
                    broken = Some(describe(&e));
                    break;
                }
            }
        }
        drop(tx);
        let partial = writer.await.map_err(|e| Error::Io {
            context: "blob writer".into(),
            source: io::Error::other(e.to_string()),
        })??;
        match broken {
            Some(why) => {
                partial.keep();
                Ok(DownloadEnd::Broken(why))
            }
            None if partial.len < size => {
                let why = format!(
                    "blob {digest}: connection ended after {} of {size} bytes",
                    partial.len
                );
                partial.keep();
                Ok(DownloadEnd::Broken(why))
            }
            None => Ok(DownloadEnd::Complete(partial)),
        }
    }
}
