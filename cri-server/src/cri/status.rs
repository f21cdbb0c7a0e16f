//! Runtime errors as gRPC statuses, each with a message a person can act on.

use tonic::{Code, Status};

/// The inner crates' errors as the call's status: the one conversion (`detached` and `blocking`
/// in cri/mod.rs apply it to every handler's work).
pub trait IntoStatus {
    fn into_status(self) -> Status;
}

impl IntoStatus for runtime::Error {
    fn into_status(self) -> Status {
        from_runtime(self)
    }
}

impl IntoStatus for image_service::Error {
    fn into_status(self) -> Status {
        from_image(&self)
    }
}

impl IntoStatus for Status {
    fn into_status(self) -> Status {
        self
    }
}

pub fn from_runtime(e: runtime::Error) -> Status {
    use runtime::Error as E;
    let code = match &e {
        E::NotFound(_) => Code::NotFound,
        E::AlreadyExists(_) => Code::AlreadyExists,
        E::InvalidArgument(_) => Code::InvalidArgument,
        E::FailedPrecondition(_) | E::WrongState { .. } => Code::FailedPrecondition,
        E::DeadlineExceeded(_) => Code::DeadlineExceeded,
        E::Image(ie) => return from_image(ie),
        E::Io { source, .. } if out_of_space(source) => Code::ResourceExhausted,
        E::Io { .. } | E::Store(_) | E::Internal(_) => Code::Internal,
    };
    Status::new(code, e.to_string())
}

/// A full disk (or quota): the one I/O failure the caller can act on.
fn out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == nix::libc::ENOSPC || c == nix::libc::EDQUOT)
}

pub fn from_image(e: &image_service::Error) -> Status {
    use image_service::Error as E;
    let code = match e {
        E::Io { source, .. } if out_of_space(source) => Code::ResourceExhausted,
        E::NotFound(_) => Code::NotFound,
        E::InvalidReference(_) => Code::InvalidArgument,
        E::NoMatchingPlatform { .. } => Code::NotFound,
        E::Unauthenticated(_) => Code::Unauthenticated,
        E::Registry(_) | E::Unreachable(_) => Code::Unavailable,
        E::DigestMismatch { .. } => Code::DataLoss,
        E::UnsafeLayerEntry { .. } | E::InvalidLayout(_) => Code::InvalidArgument,
        E::Io { .. } => Code::Internal,
    };
    Status::new(code, e.to_string())
}

pub fn required(field: &str) -> Status {
    Status::invalid_argument(format!("{field} is required"))
}
