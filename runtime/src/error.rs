pub type Result<T> = std::result::Result<T, Error>;

/// Errors of the runtime, each mapping onto one gRPC status code in the server
/// (cri-server/src/cri/status.rs matches them exhaustively). The message is for a person: it names
/// what failed and, where there is one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No pod, container or image has the id or name asked for (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// A pod or container with these metadata exists already (ALREADY_EXISTS): kubelet relies on
    /// it to tell a retry from a new request.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request cannot be served as asked: a bad path, a mount outside the allowed host
    /// paths, an option darwin-cri cannot honour (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The object is not in a state that allows the call: exec into a stopped container, start
    /// of one already started (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The container is not in the state the call needs (FAILED_PRECONDITION): exec, attach or
    /// port-forward into one that is not running, a start of one that is not Created. Its state
    /// comes with the error, for a caller that decides on it.
    #[error("{message}")]
    WrongState {
        /// The container.
        id: String,
        /// The state it is in.
        state: crate::ContainerState,
        /// What a person reads.
        message: String,
    },
    /// A call with a deadline (ExecSync's timeout) ran out of time (DEADLINE_EXCEEDED).
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The image service failed; its own error says how (its code is mapped by its variant).
    #[error(transparent)]
    Image(#[from] image_service::Error),
    /// A file system or system call failed; `context` says what was being done, to which path
    /// (INTERNAL).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// The metadata store (redb) failed (INTERNAL).
    #[error("metadata store: {0}")]
    Store(String),
    /// Anything else that should not happen: a poisoned lock, a record that does not encode
    /// (INTERNAL).
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Error::Store(e.to_string())
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Store(e.to_string())
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Adds what was being done to an I/O error (the workspace's one `IoContext`, in platform).
pub(crate) use platform::IoContext;

impl From<platform::IoError> for Error {
    fn from(e: platform::IoError) -> Self {
        Error::io(e.context, e.source)
    }
}
