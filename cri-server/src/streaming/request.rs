//! What a streaming token stands for: the exec, attach or port-forward request the CRI call
//! registered, waiting for its client.

use runtime::exec::ExecRequest;

/// What a token stands for.
#[derive(Debug, Clone)]
pub enum Request {
    Exec {
        container_id: String,
        exec: ExecRequest,
    },
    Attach {
        container_id: String,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    },
    PortForward {
        pod_id: String,
    },
}

impl Request {
    /// The first segment of the URL path that serves this request.
    pub fn path(&self) -> &'static str {
        match self {
            Request::Exec { .. } => "exec",
            Request::Attach { .. } => "attach",
            Request::PortForward { .. } => "portforward",
        }
    }
}
