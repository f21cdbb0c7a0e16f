//! Content-addressed blob storage and atomic file writes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::{Error, IoContext, Result, random_name, sha256_hex};

/// Largest JSON document (index, manifest, config) we accept.
pub(crate) const MAX_JSON_SIZE: u64 = 16 << 20;

/// A reader that hashes what passes through it.
#[derive(Debug)]
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// `sha256:<hex>` of everything read so far, and the byte count.
    pub(crate) fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// Creates a new unique temporary file in `tmp_dir`.
pub(crate) fn create_tmp_file(tmp_dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let path = tmp_dir.join(random_name()?);
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Atomically writes `data` to `dest` (temporary file in `tmp_dir`, fsync, rename).
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, data: &[u8]) -> Result<()> {
    let (tmp, mut f) =
        create_tmp_file(tmp_dir).ctx(|| format!("create temp file in {}", tmp_dir.display()))?;
    let res = (|| {
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dest)?;
        if let Some(parent) = dest.parent() {
            // Make the rename durable; not fatal if the directory cannot be synced.
            if let Ok(d) = File::open(parent) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.ctx(|| format!("write {}", dest.display()))?;
    Ok(())
}

/// Copies a blob from `src` into the store at `blobs_dir/<hex>` through a verifying
/// writer: the content must hash to `digest` and be exactly `size` bytes.
/// An existing blob is not rewritten. Returns the blob path.
pub(crate) fn ingest_blob(
    tmp_dir: &Path,
    blobs_dir: &Path,
    src: &Path,
    digest: &str,
    size: u64,
) -> Result<PathBuf> {
    let hex = sha256_hex(digest)?;
    let dest = blobs_dir.join(hex);
    if dest.is_file() {
        return Ok(dest);
    }
    let input = match File::open(src) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::InvalidLayout(format!("missing blob {digest}")));
        }
        Err(e) => {
            return Err(e)
                .ctx(|| format!("open blob {}", src.display()))
                .map_err(Into::into);
        }
    };
    let (tmp, mut out) =
        create_tmp_file(tmp_dir).ctx(|| format!("create temp file in {}", tmp_dir.display()))?;
    let result = (|| {
        // Read at most size+1 bytes so an oversized blob is detected without reading it all.
        let mut reader = HashingReader::new(input.take(size.saturating_add(1)));
        io::copy(&mut reader, &mut out).ctx(|| format!("copy blob {digest}"))?;
        let (actual, count) = reader.finish();
        if count != size {
            return Err(Error::InvalidLayout(format!(
                "blob {digest} has size {}{}, descriptor says {size}",
                count,
                if count > size { "+" } else { "" }
            )));
        }
        if actual != digest {
            return Err(Error::DigestMismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        out.sync_all().ctx(|| format!("fsync blob {digest}"))?;
        fs::rename(&tmp, &dest).ctx(|| format!("store blob {digest}"))?;
        Ok(dest.clone())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a small JSON blob fully, refusing anything larger than [`MAX_JSON_SIZE`].
pub(crate) fn read_small(path: &Path, what: &str) -> Result<Vec<u8>> {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(Error::InvalidLayout(format!("missing {what}")));
        }
        Err(e) => {
            return Err(e)
                .ctx(|| format!("open {}", path.display()))
                .map_err(Into::into);
        }
    };
    let mut buf = Vec::new();
    f.take(MAX_JSON_SIZE + 1)
        .read_to_end(&mut buf)
        .ctx(|| format!("read {}", path.display()))?;
    if buf.len() as u64 > MAX_JSON_SIZE {
        return Err(Error::InvalidLayout(format!(
            "{what} is larger than {MAX_JSON_SIZE} bytes"
        )));
    }
    Ok(buf)
}

/// Verifies that `data` hashes to `digest`.
pub(crate) fn verify_bytes(data: &[u8], digest: &str) -> Result<()> {
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(data)));
    if actual != digest {
        return Err(Error::DigestMismatch {
            expected: digest.to_string(),
            actual,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ingest_verifies() {
        let d = tempfile::tempdir().unwrap();
        let tmp = d.path().join("tmp");
        let blobs = d.path().join("blobs");
        fs::create_dir_all(&tmp).unwrap();
        fs::create_dir_all(&blobs).unwrap();
        let src = d.path().join("src");
        fs::write(&src, b"hello").unwrap();
        let good = format!("sha256:{}", hex::encode(Sha256::digest(b"hello")));
        let bad = format!("sha256:{}", hex::encode(Sha256::digest(b"other")));
        assert!(matches!(
            ingest_blob(&tmp, &blobs, &src, &bad, 5),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(matches!(
            ingest_blob(&tmp, &blobs, &src, &good, 4),
            Err(Error::InvalidLayout(_))
        ));
        assert!(matches!(
            ingest_blob(&tmp, &blobs, &src, "md5:abc", 5),
            Err(Error::InvalidLayout(_))
        ));
        let p = ingest_blob(&tmp, &blobs, &src, &good, 5).unwrap();
        assert_eq!(fs::read(p).unwrap(), b"hello");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "no temp files left");
    }
}
