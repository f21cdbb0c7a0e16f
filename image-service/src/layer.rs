//! Making layers: a set of changes to a tree written as one compressed tar blob, hashed once on
//! the way to disk (the DiffID over the tar, the digest over the compressed bytes), so a layer of
//! any size is streamed, never held in memory.
//!
//! Changes are OCI's: an added or changed entry is written as it is in the source tree; a
//! deletion is a `.wh.<name>` whiteout; a directory whose lower content is hidden is marked with
//! `.wh..wh..opq`. Entries are written in the order given; callers sort them, and with
//! [`TarOptions::fixed_mtime`] the same files give the same bytes (reproducible images).
//! Extended attributes are not carried (file capabilities would be a privilege the unpacker
//! strips anyway); sockets are left out, as containerd does.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::content::create_tmp_file;
use crate::{Compression, IoContext, Result};

/// A layer blob written into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// `sha256:` of the compressed blob.
    pub digest: String,
    /// `sha256:` of the uncompressed tar.
    pub diff_id: String,
    /// Compressed size.
    pub size: u64,
    pub compression: Compression,
}

/// One change of a tree, by its path relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The entry as it is in the source tree (a directory's entry only, not its content).
    Add(PathBuf),
    /// The entry is gone.
    Delete(PathBuf),
    /// The directory's lower content is hidden (its entry and content are added separately).
    Opaque(PathBuf),
}

/// How entries are written.
#[derive(Debug, Clone, Copy, Default)]
pub struct TarOptions {
    /// Every entry's mtime, instead of the file's: the same files give the same layer.
    pub fixed_mtime: Option<u64>,
    /// Every entry's owner, instead of the file's (COPY --chown).
    pub owner: Option<(u32, u32)>,
}

/// A writer that hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.count)
    }
}

enum Encoder {
    None(Hashing<File>),
    Gzip(flate2::write::GzEncoder<Hashing<File>>),
    Zstd(zstd::Encoder<'static, Hashing<File>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
            Encoder::Zstd(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
            Encoder::Zstd(e) => e.flush(),
        }
    }
}

impl Encoder {
    /// A compressor writing into `file` and hashing what it writes. A fixed gzip header (no
    /// name, mtime 0): the same tar gives the same blob.
    fn new(file: File, compression: Compression) -> Result<Encoder> {
        let hashed = Hashing::new(file);
        Ok(match compression {
            Compression::None => Encoder::None(hashed),
            Compression::Gzip => Encoder::Gzip(
                flate2::GzBuilder::new().write(hashed, flate2::Compression::default()),
            ),
            Compression::Zstd => {
                Encoder::Zstd(zstd::Encoder::new(hashed, 3).ctx(|| "start zstd".to_string())?)
            }
        })
    }

    fn finish(self) -> io::Result<Hashing<File>> {
        match self {
            Encoder::None(e) => Ok(e),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Zstd(e) => e.finish(),
        }
    }
}

/// The tar stream of a layer being written.
pub struct LayerWriter {
    tar: tar::Builder<Hashing<Encoder>>,
    tmp: PathBuf,
    compression: Compression,
    /// First path written of each multiply-linked inode: later ones become hard links.
    links: HashMap<(u64, u64), PathBuf>,
    opts: TarOptions,
}

impl std::fmt::Debug for LayerWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerWriter")
            .field("tmp", &self.tmp)
            .finish_non_exhaustive()
    }
}

impl LayerWriter {
    /// A new layer in a temporary file of `tmp_dir`.
    pub fn new(tmp_dir: &Path, compression: Compression, opts: TarOptions) -> Result<Self> {
        let (tmp, file) = create_tmp_file(tmp_dir)
            .ctx(|| format!("create a layer file in {}", tmp_dir.display()))?;
        let encoder = Encoder::new(file, compression)?;
        let mut tar = tar::Builder::new(Hashing::new(encoder));
        tar.mode(tar::HeaderMode::Complete);
        tar.follow_symlinks(false);
        Ok(LayerWriter {
            tar,
            tmp,
            compression,
            links: HashMap::new(),
            opts,
        })
    }

    /// Writes the changes of `root` (a tree, the paths relative to it).
    pub fn changes(&mut self, root: &Path, changes: &[Change]) -> Result<()> {
        for c in changes {
            match c {
                Change::Add(rel) => self.add(&root.join(rel), rel)?,
                Change::Delete(rel) => {
                    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
                    let Some(name) = name else { continue };
                    let wh = rel.with_file_name(format!(".wh.{name}"));
                    self.marker(&wh)?;
                }
                Change::Opaque(rel) => self.marker(&rel.join(".wh..wh..opq"))?,
            }
        }
        Ok(())
    }

    /// Writes the file system entry at `src` as `dest` (relative), a directory's entry only.
    pub fn add(&mut self, src: &Path, dest: &Path) -> Result<()> {
        self.add_with(src, dest, self.opts.owner)
    }

    /// [`Self::add`] with this owner whatever the options say.
    pub fn add_owned(&mut self, src: &Path, dest: &Path, owner: (u32, u32)) -> Result<()> {
        self.add_with(src, dest, Some(owner))
    }

    fn add_with(&mut self, src: &Path, dest: &Path, owner: Option<(u32, u32)>) -> Result<()> {
        let meta = fs::symlink_metadata(src).ctx(|| format!("stat {}", src.display()))?;
        let ft = meta.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let mut header = tar::Header::new_gnu();
        header.set_metadata_in_mode(&meta, tar::HeaderMode::Complete);
        if let Some(t) = self.opts.fixed_mtime {
            header.set_mtime(t);
        }
        if let Some((uid, gid)) = owner {
            header.set_uid(uid.into());
            header.set_gid(gid.into());
        }
        let err = |e: io::Error| crate::Error::Io {
            context: format!("write {} into the layer", dest.display()),
            source: e,
        };
        if ft.is_dir() {
            header.set_size(0);
            return self
                .tar
                .append_data(&mut header, dest, io::empty())
                .map_err(err);
        }
        if !ft.is_symlink() && meta.nlink() > 1 {
            let key = (meta.dev(), meta.ino());
            if let Some(first) = self.links.get(&key).cloned() {
                header.set_entry_type(tar::EntryType::Link);
                header.set_size(0);
                return self.tar.append_link(&mut header, dest, first).map_err(err);
            }
            self.links.insert(key, dest.to_path_buf());
        }
        if ft.is_symlink() {
            let target = fs::read_link(src).ctx(|| format!("readlink {}", src.display()))?;
            header.set_size(0);
            return self.tar.append_link(&mut header, dest, target).map_err(err);
        }
        if ft.is_file() {
            let f = File::open(src).ctx(|| format!("open {}", src.display()))?;
            return self.tar.append_data(&mut header, dest, f).map_err(err);
        }
        // FIFOs and device nodes: the header says all (the unpacker makes no device nodes).
        header.set_size(0);
        self.tar
            .append_data(&mut header, dest, io::empty())
            .map_err(err)
    }

    /// Writes a whole tree below `src` as `dest`, sorted by name.
    pub fn add_tree(&mut self, src: &Path, dest: &Path) -> Result<()> {
        self.add(src, dest)?;
        let meta = fs::symlink_metadata(src).ctx(|| format!("stat {}", src.display()))?;
        if !meta.is_dir() {
            return Ok(());
        }
        for name in sorted_names(src)? {
            self.add_tree(&src.join(&name), &dest.join(&name))?;
        }
        Ok(())
    }

    /// Writes one entry of another tar (ADD of a local archive) below `dest_dir`: its path is
    /// cleaned as if below `/` (a leading `..` goes nowhere), hard links are kept inside the
    /// layer.
    pub fn append_tar_entry<R: io::Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        dest_dir: &Path,
    ) -> Result<()> {
        let path = entry
            .path()
            .ctx(|| "an entry path of the archive".to_string())?
            .into_owned();
        let rel = crate::safe_path::clean_relative(&path);
        let dest = if rel.as_os_str().is_empty() {
            dest_dir.to_path_buf()
        } else {
            dest_dir.join(&rel)
        };
        let mut header = entry.header().clone();
        // Archives made by hand may leave numeric fields blank: read as 0, as tar does.
        if header.uid().is_err() {
            header.set_uid(0);
        }
        if header.gid().is_err() {
            header.set_gid(0);
        }
        if header.mtime().is_err() {
            header.set_mtime(0);
        }
        if let Some(t) = self.opts.fixed_mtime {
            header.set_mtime(t);
        }
        if let Some((uid, gid)) = self.opts.owner {
            header.set_uid(uid.into());
            header.set_gid(gid.into());
        }
        let kind = header.entry_type();
        if kind.is_dir() && dest.components().all(|c| c == std::path::Component::CurDir) {
            // The archive's own top directory (`./`) added at the layer's root: the root is the
            // image's, as Docker keeps it; there is no path to write it under.
            return Ok(());
        }
        let err = |e: io::Error| crate::Error::Io {
            context: format!("write {} into the layer", dest.display()),
            source: e,
        };
        if kind.is_hard_link() || kind.is_symlink() {
            let target = entry
                .link_name()
                .ctx(|| "an archive link".to_string())?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            let target = if kind.is_hard_link() {
                dest_dir.join(crate::safe_path::clean_relative(&target))
            } else {
                target
            };
            return self
                .tar
                .append_link(&mut header, &dest, target)
                .map_err(err);
        }
        self.tar.append_data(&mut header, &dest, entry).map_err(err)
    }

    fn marker(&mut self, dest: &Path) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(0);
        header.set_mode(0o644);
        header.set_mtime(self.opts.fixed_mtime.unwrap_or(0));
        self.tar
            .append_data(&mut header, dest, io::empty())
            .ctx(|| format!("write {} into the layer", dest.display()))?;
        Ok(())
    }

    /// Ends the tar, and moves the blob into `blobs_dir` under its digest.
    pub fn finish(self, blobs_dir: &Path) -> Result<LayerBlob> {
        let tmp = self.tmp.clone();
        let result = (|| {
            let (encoder, diff_id, _) = self
                .tar
                .into_inner()
                .ctx(|| "end the tar".to_string())?
                .finish();
            keep_blob(encoder, diff_id, &tmp, blobs_dir, self.compression)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }
}

/// Writes the uncompressed tar read from `tar` as a new blob in `compression` (a layer pushed
/// in another compression than it was pulled in); the DiffID stays what it was.
pub(crate) fn recompress(
    tmp_dir: &Path,
    blobs_dir: &Path,
    mut tar: impl io::Read,
    compression: Compression,
) -> Result<LayerBlob> {
    let (tmp, file) =
        create_tmp_file(tmp_dir).ctx(|| format!("create a layer file in {}", tmp_dir.display()))?;
    let result = (|| {
        let encoder = Encoder::new(file, compression)?;
        let mut diff = Hashing::new(encoder);
        io::copy(&mut tar, &mut diff).ctx(|| "recompress a layer".to_string())?;
        let (encoder, diff_id, _) = diff.finish();
        keep_blob(encoder, diff_id, &tmp, blobs_dir, compression)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Ends the compressed stream, syncs it and moves it into `blobs_dir` under its digest.
fn keep_blob(
    encoder: Encoder,
    diff_id: String,
    tmp: &Path,
    blobs_dir: &Path,
    compression: Compression,
) -> Result<LayerBlob> {
    let (file, digest, size) = encoder
        .finish()
        .ctx(|| "end the compressed stream".to_string())?
        .finish();
    file.sync_all().ctx(|| "sync the layer".to_string())?;
    let dest = blobs_dir.join(crate::sha256_hex(&digest)?);
    fs::rename(tmp, &dest).ctx(|| format!("store layer {digest}"))?;
    Ok(LayerBlob {
        digest,
        diff_id,
        size,
        compression,
    })
}

/// The names in `dir`, sorted bytewise (a stable order for reproducible layers).
pub fn sorted_names(dir: &Path) -> Result<Vec<std::ffi::OsString>> {
    let mut names = fs::read_dir(dir)
        .ctx(|| format!("read {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()
        .ctx(|| format!("read {}", dir.display()))?;
    names.sort();
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_archives_top_directory_added_at_the_root_is_skipped() {
        let mut archive = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_cksum();
        archive.append_data(&mut dir, "./", io::empty()).unwrap();
        let mut file = tar::Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(1);
        file.set_cksum();
        archive.append_data(&mut file, "./a", &b"a"[..]).unwrap();
        let bytes = archive.into_inner().unwrap();

        let tmp = tempfile::tempdir().unwrap();
        let mut w = LayerWriter::new(tmp.path(), Compression::Gzip, TarOptions::default()).unwrap();
        let mut input = tar::Archive::new(&bytes[..]);
        for entry in input.entries().unwrap() {
            w.append_tar_entry(&mut entry.unwrap(), Path::new(""))
                .unwrap();
        }
        let blobs = tmp.path().join("blobs");
        fs::create_dir_all(&blobs).unwrap();
        let blob = w.finish(&blobs).unwrap();
        let data = fs::read(blobs.join(&blob.digest["sha256:".len()..])).unwrap();
        let mut out = tar::Archive::new(flate2::read::MultiGzDecoder::new(&data[..]));
        let names: Vec<String> = out
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a"]);
    }
}
