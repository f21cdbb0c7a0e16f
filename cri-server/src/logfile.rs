//! The server's own log file, reopened on SIGHUP so that newsyslog can rotate it.
//!
//! Under launchd, stderr is a file launchd opened once (StandardErrorPath): a rotation renames
//! it and launchd keeps writing into the renamed file forever. With `log.file` set darwin-cri
//! writes the file itself and opens it again by name when newsyslog signals it (the pid file
//! is `<state_dir>/darwin-cri.pid`).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

static CURRENT: OnceLock<Arc<LogFile>> = OnceLock::new();

fn open(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

impl LogFile {
    /// Opens `path` for appending and makes it the file [`Current`] writes to and [`reopen`]
    /// reopens.
    pub fn install(path: &Path) -> std::io::Result<Current> {
        let log = Arc::new(LogFile {
            path: path.to_path_buf(),
            file: Mutex::new(open(path)?),
        });
        let _ = CURRENT.set(log);
        Ok(Current)
    }
}

/// Writes to the installed log file.
#[derive(Debug, Clone, Copy)]
pub struct Current;

/// Opens the log file again by name (after a rotation moved it away). A no-op without one.
pub fn reopen() -> std::io::Result<()> {
    let Some(log) = CURRENT.get() else {
        return Ok(());
    };
    let fresh = open(&log.path)?;
    if let Ok(mut file) = log.file.lock() {
        *file = fresh;
    }
    Ok(())
}

/// One log record's access to the file.
pub struct Locked<'a>(Option<MutexGuard<'a, File>>);

impl Write for Locked<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Current {
    type Writer = Locked<'static>;
    fn make_writer(&'a self) -> Self::Writer {
        Locked(CURRENT.get().and_then(|log| log.file.lock().ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::fmt::MakeWriter;

    #[test]
    fn a_rotated_file_is_replaced_by_a_new_one_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("logs/darwin-cri.log");
        let log = LogFile::install(&path).expect("open");
        log.make_writer().write_all(b"before\n").expect("write");
        std::fs::rename(&path, dir.path().join("logs/darwin-cri.log.0")).expect("rotate");
        log.make_writer().write_all(b"late\n").expect("write");
        reopen().expect("reopen");
        log.make_writer().write_all(b"after\n").expect("write");
        let read = |n: &str| std::fs::read_to_string(dir.path().join("logs").join(n)).expect(n);
        assert_eq!(read("darwin-cri.log.0"), "before\nlate\n");
        assert_eq!(read("darwin-cri.log"), "after\n");
    }
}
