//! Safe application of (untrusted) OCI layer tarballs onto a snapshot directory.
//!
//! The stream is processed entry by entry: compressed file -> decoder -> DiffID hasher
//! -> tar reader. Decoding and hashing (most of a layer's CPU: inflate and SHA-256) run on a
//! thread of their own, handing the tar reader bounded chunks, so that a layer's unpacking uses
//! two cores: one decodes while the other creates files. Every entry is created through [`resolve_parent_in_root`], so symlinks
//! in parent components resolve inside the snapshot and the final component is never
//! followed; regular files are opened with `O_CREAT|O_EXCL|O_NOFOLLOW`.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use filetime::FileTime;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tar::EntryType;

use crate::content::HashingReader;
use crate::safe_path::{clean_relative, resolve_in_root, resolve_parent_in_root};
use crate::tree::lchown_quiet;
use crate::{Compression, Error, IoContext, Result};

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_WHITEOUT: &[u8] = b".wh..wh..opq";

#[derive(Debug)]
struct DirAttrs {
    rel: PathBuf,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: u64,
}

/// Applies the layer read from `layer` to `root` and verifies that the uncompressed
/// stream hashes to `expected_diff_id`. On error the caller must discard `root`. Regular files
/// lose their setuid and setgid bits: an image must not bring a way to gain privileges.
pub(crate) fn apply_layer<R: Read + Send>(
    root: &Path,
    layer: R,
    compression: Compression,
    expected_diff_id: &str,
) -> Result<()> {
    apply_layer_with(root, layer, compression, expected_diff_id, false)
}

/// [`apply_layer`], keeping setuid and setgid bits with `keep_setuid` (the operator's
/// `image.keep_setuid` names the image).
pub(crate) fn apply_layer_with<R: Read + Send>(
    root: &Path,
    layer: R,
    compression: Compression,
    expected_diff_id: &str,
    keep_setuid: bool,
) -> Result<()> {
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<io::Result<Vec<u8>>>(DECODED_CHUNKS);
        // Read chunks go back to the decoder, to be filled again (not allocated and zeroed).
        let (give_back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(DECODED_CHUNKS + 2);
        let decoder = scope.spawn(move || decode_layer(layer, compression, tx, spare));
        let applied = apply_decoded(root, ChunkReader::new(rx, give_back), keep_setuid);
        // The decoder ends once the tar side has read to the end, or has stopped reading (its
        // channel is closed then).
        let diff_id = decoder.join().map_err(|_| Error::Io {
            context: "layer decoder".into(),
            source: io::Error::other("the decoding thread panicked"),
        })?;
        let state = applied?;
        let actual = diff_id?;
        if actual != expected_diff_id {
            return Err(Error::DigestMismatch {
                expected: expected_diff_id.to_string(),
                actual,
            });
        }
        state.finish_dirs()
    })
}

/// Chunks of decoded layer in flight between the decoder and the tar reader.
const DECODED_CHUNKS: usize = 8;
/// The size of one: large enough that the channel costs nothing beside inflate.
const DECODED_CHUNK: usize = 256 << 10;

/// Decodes `layer`, hashing what it decodes, into `tx`; returns the DiffID (`sha256:<hex>`) of
/// the whole decoded stream. A decoding error is also sent, so that the tar side stops with it.
fn decode_layer<R: Read>(
    layer: R,
    compression: Compression,
    tx: std::sync::mpsc::SyncSender<io::Result<Vec<u8>>>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<String> {
    let decoded = compression.decoder(layer)?;
    let mut hashing = HashingReader::new(decoded);
    loop {
        let mut chunk = match spare.try_recv() {
            Ok(mut used) => {
                used.resize(DECODED_CHUNK, 0);
                used
            }
            Err(_) => vec![0u8; DECODED_CHUNK],
        };
        let mut filled = 0;
        // Whole chunks (the decoders return a few KiB at a time): fewer hand-overs.
        while filled < chunk.len() {
            match hashing.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let kind = e.kind();
                    let text = e.to_string();
                    let _ = tx.send(Err(io::Error::new(kind, text)));
                    return Err(Error::Io {
                        context: "decode layer".into(),
                        source: e,
                    });
                }
            }
        }
        if filled == 0 {
            break;
        }
        chunk.truncate(filled);
        if tx.send(Ok(chunk)).is_err() {
            // The tar side stopped (an unsafe entry, a full disk): its error is the one told.
            break;
        }
    }
    Ok(hashing.finish().0)
}

/// Reads the decoded layer from the decoder's chunks.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    give_back: std::sync::mpsc::SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    fn new(
        rx: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
        give_back: std::sync::mpsc::SyncSender<Vec<u8>>,
    ) -> Self {
        ChunkReader {
            rx,
            give_back,
            chunk: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let used = std::mem::replace(&mut self.chunk, chunk);
                    if used.capacity() >= DECODED_CHUNK {
                        // Full (the decoder has enough spares): dropped.
                        let _ = self.give_back.try_send(used);
                    }
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                // The decoder is done: the end of the stream.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Creates the entries of the decoded tar stream under `root`, reading it to its end (the
/// DiffID covers the padding after the archive's last block too).
fn apply_decoded<'a>(
    root: &'a Path,
    decoded: ChunkReader,
    keep_setuid: bool,
) -> Result<LayerState<'a>> {
    let mut archive = tar::Archive::new(decoded);
    let mut state = LayerState {
        root,
        dirs: Vec::new(),
        created: HashSet::new(),
        keep_setuid,
    };
    for entry in archive.entries().ctx(|| "read layer".to_string())? {
        let mut entry = entry.ctx(|| "read layer entry".to_string())?;
        state.apply_entry(&mut entry)?;
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).ctx(|| "read layer trailer".to_string())?;
    Ok(state)
}

struct LayerState<'a> {
    root: &'a Path,
    dirs: Vec<DirAttrs>,
    /// Paths created by this layer: whiteouts only remove lower-layer content.
    created: HashSet<PathBuf>,
    keep_setuid: bool,
}

fn unsafe_entry(rel: &Path, why: impl std::fmt::Display) -> Error {
    Error::UnsafeLayerEntry {
        entry: rel.to_path_buf(),
        reason: why.to_string(),
    }
}

/// Removes whatever is at `path` (never following it), recursively for directories.
fn remove_existing(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn fchown_quiet(file: &File, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::fchown(file, Some(uid), Some(gid)) {
        Err(e)
            if e.raw_os_error() == Some(nix::libc::EPERM) && !nix::unistd::geteuid().is_root() =>
        {
            Ok(())
        }
        other => other,
    }
}

impl LayerState<'_> {
    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw = entry.path_bytes().into_owned();
        let trailing_slash = raw.ends_with(b"/");
        let raw_path = PathBuf::from(OsString::from_vec(raw));
        if escapes(&raw_path) {
            return Err(unsafe_entry(
                &raw_path,
                "absolute path or one that climbs out of the layer",
            ));
        }
        let rel = clean_relative(&raw_path);
        let name = match rel.file_name() {
            Some(n) => n.to_os_string(),
            None => {
                tracing::debug!(path = %raw_path.display(), "skipping layer entry for the root");
                return Ok(());
            }
        };
        let header = entry.header();
        let mut kind = header.entry_type();
        if kind == EntryType::Regular && trailing_slash {
            kind = EntryType::Directory;
        }
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();

        if let Some(stripped) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX) {
            if name.as_bytes() == OPAQUE_WHITEOUT {
                return self.opaque(&parent_rel);
            }
            if stripped.starts_with(WHITEOUT_PREFIX) || stripped.is_empty() {
                tracing::debug!(path = %rel.display(), "skipping whiteout metadata entry");
                return Ok(());
            }
            return self.whiteout(&parent_rel.join(OsStr::from_bytes(stripped)));
        }

        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            tracing::debug!(path = %rel.display(), "ignoring extended header entry");
            return Ok(());
        }

        let mut mode = header
            .mode()
            .map_err(|e| Error::InvalidLayout(format!("{}: bad mode: {e}", rel.display())))?
            & 0o7777;
        // Setuid and setgid are cleared on every entry that becomes a file, whatever its tar type:
        // a contiguous file ('7', Continuous) is written as a regular file like '0' (issue #26:
        // a type-7 setuid-root file kept 4755), and so is a regular entry's old-tar name with a
        // trailing slash made a directory below. Hard links take the bits of their target, which
        // was cleared when it was unpacked. Directories keep setgid, as containerd and every tar
        // do: it only makes new entries inherit the directory's group (and new subdirectories
        // the bit), which gives no process a privilege; their setuid bit is cleared (Linux
        // ignores it; BSDs with SUIDDIR would give new files the directory's owner).
        let clear = match kind {
            EntryType::Directory => 0o4000,
            _ => 0o6000,
        };
        if !self.keep_setuid && mode & clear != 0 {
            tracing::debug!(path = %rel.display(), mode = format!("{mode:o}"), kind = ?kind, "setuid/setgid bits cleared");
            mode &= !clear;
        }
        let uid = id_field(header.uid(), &rel)?;
        let gid = id_field(header.gid(), &rel)?;
        let mtime = header.mtime().unwrap_or(0);
        let ft = FileTime::from_unix_time(i64::try_from(mtime).unwrap_or(0), 0);

        let (parent, fname) = resolve_parent_in_root(self.root, &rel)
            .map_err(|e| unsafe_entry(&rel, format!("cannot resolve: {e}")))?;
        match fs::symlink_metadata(&parent) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidLayout(format!(
                    "layer entry {}: parent is not a directory",
                    rel.display()
                )));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&parent).ctx(|| format!("create {}", parent.display()))?;
            }
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("stat {}", parent.display()))
                    .map_err(Into::into);
            }
        }
        let target = parent.join(&fname);
        let ctx = |what: &str| format!("layer entry {} ({what})", rel.display());

        match kind {
            EntryType::Directory => {
                let existing_dir = fs::symlink_metadata(&target)
                    .map(|m| m.is_dir())
                    .unwrap_or(false);
                if !existing_dir {
                    remove_existing(&target).ctx(|| ctx("remove existing"))?;
                    fs::create_dir(&target).ctx(|| ctx("mkdir"))?;
                }
                self.dirs.push(DirAttrs {
                    rel: rel.clone(),
                    mode,
                    uid,
                    gid,
                    mtime,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                remove_existing(&target).ctx(|| ctx("remove existing"))?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(OFlag::O_NOFOLLOW.bits())
                    .open(&target)
                    .ctx(|| ctx("create"))?;
                io::copy(entry, &mut file).ctx(|| ctx("write"))?;
                // chown before chmod: chown clears setuid/setgid.
                fchown_quiet(&file, uid, gid).ctx(|| ctx("chown"))?;
                file.set_permissions(fs::Permissions::from_mode(mode))
                    .ctx(|| ctx("chmod"))?;
                filetime::set_file_handle_times(&file, Some(ft), Some(ft))
                    .ctx(|| ctx("set times"))?;
            }
            EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::InvalidLayout(ctx("symlink without target")))?
                    .into_owned();
                remove_existing(&target).ctx(|| ctx("remove existing"))?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &target)
                    .ctx(|| ctx("symlink"))?;
                lchown_quiet(&target, uid, gid).ctx(|| ctx("chown"))?;
                filetime::set_symlink_file_times(&target, ft, ft).ctx(|| ctx("set times"))?;
            }
            EntryType::Link => {
                let link = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::InvalidLayout(ctx("hard link without target")))?
                    .into_owned();
                let link_rel = clean_relative(Path::new(OsStr::from_bytes(&link)));
                let source = resolve_in_root(self.root, &link_rel)
                    .map_err(|e| unsafe_entry(&rel, format!("hard link target: {e}")))?;
                let is_file = fs::symlink_metadata(&source)
                    .map(|m| m.file_type().is_file())
                    .unwrap_or(false);
                if link_rel.as_os_str().is_empty() || !is_file || !source.starts_with(self.root) {
                    return Err(unsafe_entry(
                        &rel,
                        format!(
                            "hard link target {:?} is not a regular file inside the layer",
                            OsStr::from_bytes(&link)
                        ),
                    ));
                }
                if source != target {
                    remove_existing(&target).ctx(|| ctx("remove existing"))?;
                    match fs::hard_link(&source, &target) {
                        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => {
                            crate::tree::TreeCloner::clone_tree(
                                &crate::tree::CopyCloner,
                                &source,
                                &target,
                            )
                            .ctx(|| ctx("copy hard link"))?;
                        }
                        other => other.ctx(|| ctx("hard link"))?,
                    }
                }
            }
            EntryType::Char | EntryType::Block => {
                // A device node from an image would give a container's root the host device it
                // names (1,1 is /dev/mem on Linux, 7,0 a loop device): never made. The runtime
                // gives every root its own minimal /dev with the host's own numbers.
                tracing::warn!(
                    path = %rel.display(),
                    major = header.device_major().ok().flatten().unwrap_or(0),
                    minor = header.device_minor().ok().flatten().unwrap_or(0),
                    "the layer carries a device node: not created"
                );
                return Ok(());
            }
            EntryType::Fifo => {
                remove_existing(&target).ctx(|| ctx("remove existing"))?;
                let perm = Mode::from_bits_truncate((mode & 0o777) as _);
                let res = nix::unistd::mkfifo(&target, perm);
                match res {
                    Ok(()) => {
                        lchown_quiet(&target, uid, gid).ctx(|| ctx("chown"))?;
                        fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                            .ctx(|| ctx("chmod"))?;
                        filetime::set_symlink_file_times(&target, ft, ft)
                            .ctx(|| ctx("set times"))?;
                    }
                    Err(e) => {
                        tracing::warn!(path = %rel.display(), error = %e, "cannot create special file; skipped");
                        return Ok(());
                    }
                }
            }
            other => {
                tracing::warn!(path = %rel.display(), kind = ?other, "skipping unsupported layer entry type");
                return Ok(());
            }
        }
        self.created.insert(rel);
        Ok(())
    }

    /// `.wh.<name>`: removes `<name>` from lower layers.
    fn whiteout(&mut self, rel: &Path) -> Result<()> {
        if self.created.contains(rel) {
            return Ok(());
        }
        let (parent, name) = match resolve_parent_in_root(self.root, rel) {
            Ok(v) => v,
            Err(e) => return Err(unsafe_entry(rel, format!("whiteout: {e}"))),
        };
        let target = parent.join(name);
        remove_existing(&target).ctx(|| format!("whiteout {}", rel.display()))?;
        Ok(())
    }

    /// `.wh..wh..opq` in D: removes every lower-layer child of D, keeping D.
    fn opaque(&mut self, dir_rel: &Path) -> Result<()> {
        let dir = resolve_in_root(self.root, dir_rel)
            .map_err(|e| unsafe_entry(dir_rel, format!("opaque whiteout: {e}")))?;
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(()),
        }
        for child in fs::read_dir(&dir).ctx(|| format!("read {}", dir.display()))? {
            let child = child.ctx(|| format!("read {}", dir.display()))?;
            if self.created.contains(&dir_rel.join(child.file_name())) {
                continue;
            }
            remove_existing(&child.path())
                .ctx(|| format!("opaque whiteout in {}", dir_rel.display()))?;
        }
        Ok(())
    }

    /// Sets directory attributes once all children exist (children change mtimes).
    fn finish_dirs(self) -> Result<()> {
        for d in &self.dirs {
            let Ok((parent, name)) = resolve_parent_in_root(self.root, &d.rel) else {
                continue;
            };
            let path = parent.join(name);
            let is_dir = fs::symlink_metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            if !is_dir {
                continue; // removed or replaced later in the layer
            }
            let ctx = || format!("set attributes of {}", d.rel.display());
            let dir = OpenOptions::new()
                .read(true)
                .custom_flags((OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW).bits())
                .open(&path)
                .ctx(ctx)?;
            fchown_quiet(&dir, d.uid, d.gid).ctx(ctx)?;
            dir.set_permissions(fs::Permissions::from_mode(d.mode))
                .ctx(ctx)?;
            let ft = FileTime::from_unix_time(i64::try_from(d.mtime).unwrap_or(0), 0);
            filetime::set_file_handle_times(&dir, Some(ft), Some(ft)).ctx(ctx)?;
        }
        Ok(())
    }
}

/// Whether an entry name is absolute or its `..` climb above the layer's root.
fn escapes(path: &Path) -> bool {
    let mut depth = 0usize;
    for c in path.components() {
        match c {
            std::path::Component::RootDir | std::path::Component::Prefix(_) => return true,
            std::path::Component::ParentDir => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            std::path::Component::Normal(_) => depth += 1,
            std::path::Component::CurDir => {}
        }
    }
    false
}

fn id_field(v: io::Result<u64>, rel: &Path) -> Result<u32> {
    let v = v.map_err(|e| Error::InvalidLayout(format!("{}: bad uid/gid: {e}", rel.display())))?;
    u32::try_from(v)
        .map_err(|_| Error::InvalidLayout(format!("{}: uid/gid {v} out of range", rel.display())))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil::{LayerBuilder, gzip, sha};
    use std::os::unix::fs::MetadataExt;

    struct Env {
        _tmp: tempfile::TempDir,
        base: PathBuf,
        root: PathBuf,
        outside: PathBuf,
    }

    /// `<tmp>/a/b/root` is the snapshot; `<tmp>/outside` must never be touched.
    fn env() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().to_path_buf();
        let root = base.join("a/b/root");
        let outside = base.join("outside");
        fs::create_dir_all(&root).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("target"), b"original").unwrap();
        Env {
            _tmp: tmp,
            base,
            root,
            outside,
        }
    }

    fn apply(root: &Path, tar: &[u8]) -> Result<()> {
        apply_layer(root, tar, Compression::None, &sha(tar))
    }

    fn assert_outside_untouched(e: &Env) {
        let names: Vec<_> = fs::read_dir(&e.outside)
            .unwrap()
            .map(|d| d.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsString::from("target")]);
        assert_eq!(fs::read(e.outside.join("target")).unwrap(), b"original");
        for p in ["evil", "a/evil", "a/b/evil", "x", "a/x", "a/b/x", "pwned"] {
            assert!(!e.base.join(p).exists(), "{p} written outside the root");
        }
    }

    #[test]
    fn basic_layer_with_metadata() {
        let e = env();
        let tar = LayerBuilder::new()
            .dir("bin/", 0o755)
            .file("bin/busybox", b"binary", 0o4755)
            .symlink("bin/sh", "busybox")
            .hardlink("bin/ls", "bin/busybox")
            .file_owned("home/user/f", b"x", 0o600, 1000, 1001)
            .dir("tmp/", 0o1777)
            .dir("home/", 0o750)
            .build();
        apply_layer(
            &e.root,
            gzip(&tar).as_slice(),
            Compression::Gzip,
            &sha(&tar),
        )
        .unwrap();
        let bb = fs::symlink_metadata(e.root.join("bin/busybox")).unwrap();
        assert_eq!(bb.mode() & 0o7777, 0o755, "setuid bit cleared");
        assert_eq!(bb.mtime(), 1_600_000_000);
        assert_eq!(
            fs::read_link(e.root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::symlink_metadata(e.root.join("bin/ls")).unwrap().ino(),
            bb.ino()
        );
        let f = fs::symlink_metadata(e.root.join("home/user/f")).unwrap();
        assert_eq!((f.uid(), f.gid(), f.mode() & 0o7777), (1000, 1001, 0o600));
        let t = fs::symlink_metadata(e.root.join("tmp")).unwrap();
        assert_eq!(t.mode() & 0o7777, 0o1777);
        let h = fs::symlink_metadata(e.root.join("home")).unwrap();
        assert_eq!(h.mode() & 0o7777, 0o750);
        // directory mtimes are set after their children were created
        assert_eq!(h.mtime(), 1_600_000_000);
        assert_eq!(
            fs::symlink_metadata(e.root.join("bin")).unwrap().mtime(),
            1_600_000_000
        );
    }

    #[test]
    fn whiteouts_and_opaque_dirs() {
        let e = env();
        let l1 = LayerBuilder::new()
            .file("etc/keep", b"k", 0o644)
            .file("etc/gone", b"g", 0o644)
            .dir("etc/gonedir/", 0o755)
            .file("etc/gonedir/inner", b"i", 0o644)
            .file("var/cache/old1", b"1", 0o644)
            .dir("var/cache/olddir/", 0o755)
            .file("var/cache/olddir/f", b"f", 0o644)
            .build();
        apply(&e.root, &l1).unwrap();
        let l2 = LayerBuilder::new()
            .whiteout("etc/gone")
            .whiteout("etc/gonedir")
            .whiteout("etc/never-existed")
            .dir("var/cache/", 0o700)
            .file("var/cache/new", b"n", 0o644)
            .opaque("var/cache")
            .build();
        apply(&e.root, &l2).unwrap();
        assert!(e.root.join("etc/keep").exists());
        assert!(!e.root.join("etc/gone").exists());
        assert!(!e.root.join("etc/gonedir").exists());
        assert!(
            !e.root.join("etc/.wh.gone").exists(),
            "whiteouts are not materialised"
        );
        let mut cache: Vec<_> = fs::read_dir(e.root.join("var/cache"))
            .unwrap()
            .map(|d| d.unwrap().file_name().into_string().unwrap())
            .collect();
        cache.sort();
        assert_eq!(cache, vec!["new"], "opaque keeps this layer's entries only");
        let m = fs::symlink_metadata(e.root.join("var/cache")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o700);
    }

    #[test]
    fn degenerate_whiteouts_do_not_remove_parents() {
        let e = env();
        let l1 = LayerBuilder::new().file("d/f", b"f", 0o644).build();
        apply(&e.root, &l1).unwrap();
        for name in ["d/.wh..", "d/.wh...", "d/.wh."] {
            let l2 = LayerBuilder::new().file(name, b"", 0o644).build();
            let _ = apply(&e.root, &l2); // an error or a no-op, never a removal
            assert_eq!(fs::read(e.root.join("d/f")).unwrap(), b"f", "{name}");
        }
        let l3 = LayerBuilder::new().file(".wh.d", b"", 0o644).build();
        apply(&e.root, &l3).unwrap();
        assert!(!e.root.join("d").exists());
        assert!(e.root.exists());
    }

    #[test]
    fn escaping_and_absolute_paths_are_refused() {
        for name in [
            "../../evil",
            "/abs/../../../x",
            "./a/../../../../pwned",
            "/etc/evil",
        ] {
            let e = env();
            let tar = LayerBuilder::new().file(name, b"evil", 0o644).build();
            let err = apply(&e.root, &tar).unwrap_err();
            assert!(
                matches!(err, Error::UnsafeLayerEntry { .. }),
                "{name}: {err}"
            );
            assert_outside_untouched(&e);
        }
        // Inner ".." that stays inside is ordinary.
        let e = env();
        let tar = LayerBuilder::new().file("./a/b/../c", b"ok", 0o644).build();
        apply(&e.root, &tar).unwrap();
        assert_eq!(fs::read(e.root.join("a/c")).unwrap(), b"ok");
    }

    #[test]
    fn symlinked_parents_resolve_inside() {
        let e = env();
        let outside = e.outside.to_str().unwrap();
        let tar = LayerBuilder::new()
            .symlink("escape", outside)
            .file("escape/pwned", b"evil", 0o644)
            .dir("escape/subdir/", 0o777)
            .symlink("link", "../../..")
            .file("link/x", b"evil", 0o644)
            .symlink("rel", "../../../outside")
            .file("rel/target", b"evil", 0o644)
            .build();
        apply(&e.root, &tar).unwrap();
        assert_outside_untouched(&e);
        let inside = e.root.join(outside.trim_start_matches('/'));
        assert_eq!(fs::read(inside.join("pwned")).unwrap(), b"evil");
        assert!(inside.join("subdir").is_dir());
        assert_eq!(fs::read(e.root.join("x")).unwrap(), b"evil");
        assert_eq!(fs::read(e.root.join("outside/target")).unwrap(), b"evil");
        // the links themselves are kept as written
        assert_eq!(
            fs::read_link(e.root.join("escape")).unwrap(),
            Path::new(outside)
        );
    }

    /// A directory that a later entry turns into a symlink is resolved again for the files
    /// that follow (inside the root): nothing is written through the link.
    #[test]
    fn a_directory_replaced_by_a_symlink_is_resolved_again() {
        let e = env();
        let outside = e.outside.to_str().unwrap();
        let tar = LayerBuilder::new()
            .dir("a/", 0o755)
            .file("a/one", b"1", 0o644)
            .file("a/two", b"2", 0o644)
            .symlink("a", outside)
            .file("a/three", b"evil", 0o644)
            .dir("b/", 0o755)
            .file("b/one", b"1", 0o644)
            .symlink("b", "../../..")
            .file("b/two", b"evil", 0o644)
            .build();
        apply(&e.root, &tar).unwrap();
        assert_outside_untouched(&e);
        let inside = e.root.join(outside.trim_start_matches('/'));
        assert_eq!(fs::read(inside.join("three")).unwrap(), b"evil");
        assert_eq!(fs::read(e.root.join("two")).unwrap(), b"evil");
        assert_eq!(fs::read_link(e.root.join("a")).unwrap(), Path::new(outside));
    }

    #[test]
    fn file_replaces_symlink_instead_of_writing_through() {
        let e = env();
        let target = e.outside.join("target");
        let l1 = LayerBuilder::new()
            .symlink("victim", target.to_str().unwrap())
            .symlink("victimdir", e.outside.to_str().unwrap())
            .build();
        apply(&e.root, &l1).unwrap();
        let l2 = LayerBuilder::new()
            .file("victim", b"new", 0o644)
            .dir("victimdir/", 0o700)
            .build();
        apply(&e.root, &l2).unwrap();
        assert_outside_untouched(&e);
        let m = fs::symlink_metadata(e.root.join("victim")).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(fs::read(e.root.join("victim")).unwrap(), b"new");
        let d = fs::symlink_metadata(e.root.join("victimdir")).unwrap();
        assert!(d.is_dir());
        assert_eq!(d.mode() & 0o7777, 0o700);
        assert_eq!(
            fs::metadata(&e.outside).unwrap().mode() & 0o7777,
            fs::metadata(&e.base).unwrap().mode() & 0o7777,
            "outside dir permissions untouched"
        );
    }

    #[test]
    fn hard_links_must_target_files_inside() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "/etc/passwd",
                LayerBuilder::new().hardlink("h", "/etc/passwd").build(),
            ),
            (
                "../../x",
                LayerBuilder::new().hardlink("h", "../../x").build(),
            ),
            (
                "symlink to outside",
                LayerBuilder::new()
                    .symlink("sl", "/etc/passwd")
                    .hardlink("h", "sl")
                    .build(),
            ),
            (
                "directory",
                LayerBuilder::new()
                    .dir("d/", 0o755)
                    .hardlink("h", "d")
                    .build(),
            ),
        ];
        for (what, tar) in cases {
            let e = env();
            fs::write(e.base.join("a/x"), b"outside").unwrap();
            let err = apply(&e.root, &tar).unwrap_err();
            assert!(
                matches!(err, Error::UnsafeLayerEntry { .. }),
                "{what}: {err}"
            );
            assert!(!e.root.join("h").exists(), "{what}");
            assert_eq!(fs::read(e.base.join("a/x")).unwrap(), b"outside");
            assert_eq!(fs::symlink_metadata(e.base.join("a/x")).unwrap().nlink(), 1);
        }
        // inside targets (also through an absolute path) are fine
        let e = env();
        let tar = LayerBuilder::new()
            .file("etc/passwd", b"root", 0o644)
            .hardlink("h", "/etc/passwd")
            .build();
        apply(&e.root, &tar).unwrap();
        assert_eq!(fs::symlink_metadata(e.root.join("h")).unwrap().nlink(), 2);
    }

    #[test]
    fn zstd_layers_unpack() {
        let e = env();
        let tar = LayerBuilder::new()
            .file("etc/zz", b"zstd body", 0o644)
            .build();
        let compressed = zstd::encode_all(tar.as_slice(), 3).unwrap();
        apply_layer(
            &e.root,
            compressed.as_slice(),
            Compression::Zstd,
            &sha(&tar),
        )
        .unwrap();
        assert_eq!(fs::read(e.root.join("etc/zz")).unwrap(), b"zstd body");
        let err = apply_layer(
            &e.root,
            gzip(&tar).as_slice(),
            Compression::Zstd,
            &sha(&tar),
        );
        assert!(err.is_err(), "gzip data is not zstd");
    }

    #[test]
    fn diff_id_mismatch() {
        let e = env();
        let tar = LayerBuilder::new().file("f", b"data", 0o644).build();
        let err =
            apply_layer(&e.root, tar.as_slice(), Compression::None, &sha(b"other")).unwrap_err();
        match err {
            Error::DigestMismatch { expected, actual } => {
                assert_eq!(expected, sha(b"other"));
                assert_eq!(actual, sha(&tar));
            }
            other => panic!("unexpected {other}"),
        }
        // corrupt gzip is an error, not a panic
        let mut gz = gzip(&tar);
        let n = gz.len();
        gz[n / 2] ^= 0xff;
        assert!(apply_layer(&e.root, gz.as_slice(), Compression::Gzip, &sha(&tar)).is_err());
    }

    #[test]
    fn fifos_are_made_and_device_nodes_never() {
        let e = env();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Fifo);
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "dev/fifo", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(EntryType::Char);
        h.set_mode(0o666);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_device_major(1).unwrap();
        h.set_device_minor(3).unwrap();
        b.append_data(&mut h, "dev/null", io::empty()).unwrap();
        for (kind, name, major, minor) in [
            (EntryType::Char, "dev/mem", 1, 1),
            (EntryType::Block, "dev/loop0", 7, 0),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(kind);
            h.set_mode(0o666);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_size(0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            b.append_data(&mut h, name, io::empty()).unwrap();
        }
        let tar = b.into_inner().unwrap();
        apply(&e.root, &tar).unwrap();
        use std::os::unix::fs::FileTypeExt;
        assert!(
            fs::symlink_metadata(e.root.join("dev/fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        for name in ["dev/null", "dev/mem", "dev/loop0"] {
            assert!(
                fs::symlink_metadata(e.root.join(name)).is_err(),
                "{name}: a device node from a layer is never created"
            );
        }
    }

    #[test]
    fn setuid_bits_are_cleared_unless_kept() {
        let tar = LayerBuilder::new()
            .file("bin/su", b"x", 0o4755)
            .file("bin/wall", b"x", 0o2755)
            .file("bin/open", b"x", 0o4777)
            .dir("shared/", 0o2775)
            // Issue #26, 2: a contiguous file (tar type '7') is a regular file to every reader.
            .entry(EntryType::Continuous, "bin/contiguous", b"x", 0o4755)
            .entry(EntryType::Continuous, "bin/contiguous-g", b"x", 0o6711)
            .entry(EntryType::Fifo, "run/fifo", b"", 0o4660)
            .dir("suid-dir/", 0o4755)
            .build();
        let e = env();
        apply_layer(&e.root, tar.as_slice(), Compression::None, &sha(&tar)).unwrap();
        let mode =
            |root: &Path, p: &str| fs::symlink_metadata(root.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode(&e.root, "bin/su"), 0o755);
        assert_eq!(mode(&e.root, "bin/wall"), 0o755);
        assert_eq!(mode(&e.root, "bin/open"), 0o777);
        assert_eq!(
            mode(&e.root, "bin/contiguous"),
            0o755,
            "type 7 setuid cleared"
        );
        assert_eq!(
            mode(&e.root, "bin/contiguous-g"),
            0o711,
            "type 7 setgid cleared"
        );
        assert_eq!(mode(&e.root, "run/fifo"), 0o660);
        assert_eq!(
            mode(&e.root, "suid-dir"),
            0o755,
            "a directory's setuid is cleared"
        );
        assert_eq!(
            mode(&e.root, "shared"),
            0o2775,
            "directories keep setgid (group inheritance)"
        );
        let kept = env();
        apply_layer_with(
            &kept.root,
            tar.as_slice(),
            Compression::None,
            &sha(&tar),
            true,
        )
        .unwrap();
        assert_eq!(mode(&kept.root, "bin/su"), 0o4755);
        assert_eq!(mode(&kept.root, "bin/open"), 0o4777);
    }
}
