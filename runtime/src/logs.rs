//! The CRI log format kubelet reads: `RFC3339Nano stdout|stderr P|F content\n`.
//!
//! A line longer than the configured maximum is split into partial (`P`) records followed by a
//! full (`F`) one; kubelet joins them back. Output that ends without a newline is written as a
//! full record when the stream closes, as containerd does.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

/// The mode of a log file darwin-cri creates: the container's output may hold what only kubelet
/// and its group should read (issue #25), so not world-readable as containerd's 0644.
pub const LOG_FILE_MODE: u32 = 0o640;

/// Opens (appending, creating it and the directories on the way) the log file `path`, which
/// must lie beneath `dir`, the pod's log directory, without following a symlink in `dir`'s own
/// name or anywhere below it: each component is opened beneath the descriptor of the one before
/// (`openat` with `O_NOFOLLOW`), at the first open and at every reopen. The monitor runs as root
/// and a pod with a writable hostPath under kubelet's log root could otherwise swap its log
/// directory, a container's directory or the file itself for a link and have root append to any
/// file of the host (issue #26, 8). `dir`'s parent (kubelet's log root, `/var/log/pods`) is the
/// host's and is resolved as the host has it (on macOS /var is a link to /private/var).
///
/// The file must be a regular file with one link (not a fifo, a device or a hard link to
/// another file); it is created with [`LOG_FILE_MODE`].
pub fn open_log_file(dir: &Path, path: &Path) -> std::io::Result<File> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, what);
    let rel = path.strip_prefix(dir).map_err(|_| {
        invalid(format!(
            "log path {} is not beneath its directory {}",
            path.display(),
            dir.display()
        ))
    })?;
    let mut names = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => names.push(n),
            _ => {
                return Err(invalid(format!(
                    "log path {} leaves its directory {}",
                    path.display(),
                    dir.display()
                )));
            }
        }
    }
    let (Some(file_name), Some(dir_name), Some(parent)) =
        (names.pop(), dir.file_name(), dir.parent())
    else {
        return Err(invalid(format!(
            "log path {} names no file beneath a directory {}",
            path.display(),
            dir.display()
        )));
    };
    let nofollow = |e: Errno, name: &std::ffi::OsStr| -> std::io::Error {
        match e {
            Errno::ELOOP | Errno::ENOTDIR => std::io::Error::other(format!(
                "{}: {:?} on the way to the log {} is a symlink or not a directory; log \
                 paths are never followed through links",
                dir.display(),
                name,
                path.display()
            )),
            e => std::io::Error::from(e),
        }
    };
    let mut cur: OwnedFd = nix::fcntl::open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for name in std::iter::once(dir_name).chain(names) {
        match mkdirat(&cur, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
        cur = openat(
            &cur,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| nofollow(e, name))?;
    }
    // O_NONBLOCK: a fifo put in the file's place fails (ENXIO) instead of blocking the monitor;
    // a regular file ignores it.
    let fd = openat(
        &cur,
        file_name,
        OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_CLOEXEC
            | OFlag::O_NONBLOCK,
        Mode::from_bits_truncate(LOG_FILE_MODE as _),
    )
    .map_err(|e| nofollow(e, file_name))?;
    let st = fstat(fd.as_fd())?;
    if SFlag::from_bits_truncate(st.st_mode as _) & SFlag::S_IFMT != SFlag::S_IFREG
        || st.st_nlink != 1
    {
        return Err(std::io::Error::other(format!(
            "the log {} is not a regular file of its own (a special file or a hard link); \
             not written",
            path.display()
        )));
    }
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND))?;
    Ok(File::from(fd))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Formats one record.
pub fn record(timestamp: &str, stream: Stream, partial: bool, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(timestamp.len() + content.len() + 12);
    out.extend_from_slice(timestamp.as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(if partial { b" P " } else { b" F " });
    out.extend_from_slice(content);
    out.push(b'\n');
    out
}

fn timestamp() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Writes the two output streams of one container into its CRI log file.
#[derive(Debug)]
pub struct LogWriter {
    file: Option<File>,
    max_line: usize,
    pending: [Vec<u8>; 2],
}

impl LogWriter {
    /// Opens (appending, creating it and its directories) the log at `(dir, path)` with
    /// [`open_log_file`]; `None` discards.
    pub fn open(log: Option<(&Path, &Path)>, max_line: usize) -> std::io::Result<LogWriter> {
        let file = match log {
            Some((dir, path)) => Some(open_log_file(dir, path)?),
            None => None,
        };
        Ok(LogWriter {
            file,
            max_line: max_line.max(1),
            pending: [Vec::new(), Vec::new()],
        })
    }

    fn emit(&mut self, stream: Stream, partial: bool, content: &[u8]) -> std::io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(&record(&timestamp(), stream, partial, content))?;
        }
        Ok(())
    }

    /// A writer that keeps nothing (no log path, or a log that cannot be opened).
    pub fn discard(max_line: usize) -> LogWriter {
        LogWriter {
            file: None,
            max_line: max_line.max(1),
            pending: [Vec::new(), Vec::new()],
        }
    }

    /// Adds output read from `stream`; complete lines are written at once.
    pub fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let idx = stream as usize;
        let mut buf = std::mem::take(&mut self.pending[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        loop {
            let rest = &buf[start..];
            // A line of exactly max_line bytes plus its newline is still one full record.
            let window = &rest[..rest.len().min(self.max_line + 1)];
            if let Some(nl) = window.iter().position(|&b| b == b'\n') {
                self.emit(stream, false, &rest[..nl])?;
                start += nl + 1;
            } else if rest.len() > self.max_line {
                self.emit(stream, true, &rest[..self.max_line])?;
                start += self.max_line;
            } else {
                break;
            }
        }
        buf.drain(..start);
        self.pending[idx] = buf;
        Ok(())
    }

    /// The stream closed: what is left becomes a full record.
    pub fn close(&mut self, stream: Stream) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.pending[stream as usize]);
        if !rest.is_empty() {
            self.emit(stream, false, &rest)?;
        }
        Ok(())
    }

    /// Reopens the log at `path` (kubelet renamed the old file when rotating it).
    /// Opened again beneath its directory without following links: a link put in since is
    /// refused as at the first open.
    pub fn reopen(&mut self, log: Option<(&Path, &Path)>) -> std::io::Result<()> {
        let fresh = LogWriter::open(log, self.max_line)?;
        self.file = fresh.file;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<(String, String, String)> {
        std::fs::read_to_string(path)
            .expect("log")
            .lines()
            .map(|l| {
                let mut parts = l.splitn(4, ' ');
                let ts = parts.next().expect("ts");
                assert!(
                    chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
                    "bad timestamp {ts}"
                );
                (
                    parts.next().expect("stream").to_string(),
                    parts.next().expect("tag").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn t(s: &str, tag: &str, c: &str) -> (String, String, String) {
        (s.into(), tag.into(), c.into())
    }

    #[test]
    fn lines_are_split_joined_and_tagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c/0.log");
        let mut w = LogWriter::open(Some((dir.path(), &path)), 8).expect("open");
        w.write(Stream::Stdout, b"hel").expect("w");
        w.write(Stream::Stderr, b"oops\n").expect("w");
        w.write(Stream::Stdout, b"lo\n\nabcdefghijk\n12345678\ntail")
            .expect("w");
        w.close(Stream::Stdout).expect("close");
        w.close(Stream::Stderr).expect("close");
        assert_eq!(
            lines(&path),
            vec![
                t("stderr", "F", "oops"),
                t("stdout", "F", "hello"),
                t("stdout", "F", ""),
                t("stdout", "P", "abcdefgh"),
                t("stdout", "F", "ijk"),
                t("stdout", "F", "12345678"),
                t("stdout", "F", "tail"),
            ]
        );
    }

    /// Issue #26, 8: the log directory, a directory below it or the file itself swapped for a
    /// link made root append to a file elsewhere; and the file was world-readable (#25).
    #[test]
    fn log_paths_are_never_followed_through_links() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let base = tempfile::tempdir().expect("tempdir");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("0.log"), "original").expect("write");
        let pods = base.path().join("pods");
        std::fs::create_dir_all(pods.join("real/c")).expect("mkdir");
        let ok = open_log_file(&pods.join("real"), &pods.join("real/c/0.log")).expect("open");
        drop(ok);
        let mode = std::fs::metadata(pods.join("real/c/0.log"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o007, 0, "not world-readable: {mode:o}");
        symlink(&outside, pods.join("linked")).expect("symlink");
        symlink(&outside, pods.join("real/d")).expect("symlink");
        symlink(outside.join("0.log"), pods.join("real/c/1.log")).expect("symlink");
        std::fs::hard_link(outside.join("0.log"), pods.join("real/c/2.log")).expect("link");
        for (dir, path) in [
            (pods.join("linked"), pods.join("linked/0.log")),
            (pods.join("linked"), pods.join("linked/c/0.log")),
            (pods.join("real"), pods.join("real/d/0.log")),
            (pods.join("real"), pods.join("real/c/1.log")),
            (pods.join("real"), pods.join("real/c/2.log")),
            (pods.join("real"), pods.join("real/../linked/0.log")),
            (pods.join("real"), pods.join("other/0.log")),
            (pods.join("real"), pods.join("real")),
        ] {
            assert!(
                open_log_file(&dir, &path).is_err(),
                "{} in {}",
                path.display(),
                dir.display()
            );
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("0.log")).expect("read"),
            "original"
        );
        assert_eq!(std::fs::read_dir(&outside).expect("ls").count(), 1);
        // A fifo in the file's place is refused, not waited on.
        nix::unistd::mkfifo(&pods.join("real/c/3.log"), Mode::from_bits_truncate(0o600))
            .expect("fifo");
        assert!(open_log_file(&pods.join("real"), &pods.join("real/c/3.log")).is_err());
    }

    #[test]
    fn reopen_writes_to_a_new_file_at_the_same_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(Some((dir.path(), &path)), 1024).expect("open");
        w.write(Stream::Stdout, b"one\n").expect("w");
        std::fs::rename(&path, dir.path().join("0.log.1")).expect("rotate");
        w.reopen(Some((dir.path(), &path))).expect("reopen");
        w.write(Stream::Stdout, b"two\n").expect("w");
        assert_eq!(
            lines(&dir.path().join("0.log.1")),
            vec![t("stdout", "F", "one")]
        );
        assert_eq!(lines(&path), vec![t("stdout", "F", "two")]);
    }
}
