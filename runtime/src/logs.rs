//! The CRI log format kubelet reads: `RFC3339Nano stdout|stderr P|F content\n`.
//!
//! A line longer than the configured maximum is split into partial (`P`) records followed by a
//! full (`F`) one; kubelet joins them back. Output that ends without a newline is written as a
//! full record when the stream closes, as containerd does.

use std::fs::File;
use std::io::Write;
use std::path::Path;

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
    /// Opens (appending, creating it and its directory) the log at `path`; `None` discards.
    pub fn open(path: Option<&Path>, max_line: usize) -> std::io::Result<LogWriter> {
        let file = match path {
            Some(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)?,
                )
            }
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
    pub fn reopen(&mut self, path: Option<&Path>) -> std::io::Result<()> {
        let fresh = LogWriter::open(path, self.max_line)?;
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
        let mut w = LogWriter::open(Some(&path), 8).expect("open");
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

    #[test]
    fn reopen_writes_to_a_new_file_at_the_same_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("0.log");
        let mut w = LogWriter::open(Some(&path), 1024).expect("open");
        w.write(Stream::Stdout, b"one\n").expect("w");
        std::fs::rename(&path, dir.path().join("0.log.1")).expect("rotate");
        w.reopen(Some(&path)).expect("reopen");
        w.write(Stream::Stdout, b"two\n").expect("w");
        assert_eq!(
            lines(&dir.path().join("0.log.1")),
            vec![t("stdout", "F", "one")]
        );
        assert_eq!(lines(&path), vec![t("stdout", "F", "two")]);
    }
}
