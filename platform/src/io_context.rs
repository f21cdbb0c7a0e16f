//! An I/O error with what was being done: the one `IoContext` of the workspace. Each crate's
//! error type turns an [`IoError`] into its own `Io` variant (`From<IoError>`), so that `?` after
//! `.ctx(...)` or `.at(...)` lands in the caller's error type.

use std::fmt;
use std::io;
use std::path::Path;

/// An I/O error and what was being done when it happened.
#[derive(Debug)]
pub struct IoError {
    /// What was being done, to which path.
    pub context: String,
    /// The underlying error.
    pub source: io::Error,
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for IoError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Adds what was being done to an I/O error: `ctx` with a context made on failure only, `at`
/// for "what path".
pub trait IoContext<T> {
    /// The error with `context()` (called only on failure).
    fn ctx<C: FnOnce() -> String>(self, context: C) -> Result<T, IoError>;
    /// The error with "`what` `path`".
    fn at(self, what: &str, path: &Path) -> Result<T, IoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx<C: FnOnce() -> String>(self, context: C) -> Result<T, IoError> {
        self.map_err(|source| IoError {
            context: context(),
            source,
        })
    }

    fn at(self, what: &str, path: &Path) -> Result<T, IoError> {
        self.ctx(|| format!("{what} {}", path.display()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn context_and_path_are_in_the_message() {
        let e = Err::<(), _>(io::Error::from(io::ErrorKind::NotFound))
            .at("open", Path::new("/x/y"))
            .unwrap_err();
        assert_eq!(e.context, "open /x/y");
        assert!(e.to_string().starts_with("open /x/y: "), "{e}");
        let e = Err::<(), _>(io::Error::other("boom"))
            .ctx(|| "sync".into())
            .unwrap_err();
        assert_eq!(e.to_string(), "sync: boom");
    }
}
