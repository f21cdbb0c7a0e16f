//! Exec, Attach, PortForward: checked here, then served by the streaming server at the URL
//! each returns.

use k8s_cri::v1 as cri;
use runtime::ContainerState;
use runtime::exec::ExecRequest;
use tonic::Status;

use super::Cri;
use super::status::{from_runtime, required};
use crate::streaming::{Request, UrlError};

fn url_error(e: UrlError) -> Status {
    match e {
        UrlError::Busy => Status::resource_exhausted(e.to_string()),
        UrlError::Random(_) => Status::internal(e.to_string()),
    }
}

/// The stream flags kubelet may ask for: at least one stream, and no stderr beside a TTY (a
/// terminal merges the two).
fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), Status> {
    if tty && stderr {
        return Err(Status::invalid_argument(
            "tty and stderr cannot both be true: a terminal carries both output streams",
        ));
    }
    if !stdin && !stdout && !stderr {
        return Err(Status::invalid_argument(
            "one of stdin, stdout, or stderr must be set",
        ));
    }
    Ok(())
}

impl Cri {
    fn running_container(&self, id: &str) -> Result<runtime::Container, Status> {
        if id.is_empty() {
            return Err(required("container_id"));
        }
        let c = self.runtime.container(id).map_err(from_runtime)?;
        if c.state != ContainerState::Running {
            return Err(Status::failed_precondition(runtime::not_running_message(
                &c,
                "stream to it",
            )));
        }
        Ok(c)
    }

    pub(super) fn exec_url(&self, req: cri::ExecRequest) -> Result<cri::ExecResponse, Status> {
        let c = self.running_container(&req.container_id)?;
        if req.cmd.is_empty() {
            return Err(Status::invalid_argument("cmd is required"));
        }
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        let url = self
            .streaming
            .url_for(Request::Exec {
                container_id: c.id,
                exec: ExecRequest {
                    cmd: req.cmd,
                    tty: req.tty,
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                },
            })
            .map_err(url_error)?;
        Ok(cri::ExecResponse { url })
    }

    pub(super) fn attach_url(
        &self,
        req: cri::AttachRequest,
    ) -> Result<cri::AttachResponse, Status> {
        let c = self.running_container(&req.container_id)?;
        check_streams(req.stdin, req.stdout, req.stderr, req.tty)?;
        if req.stdin && !c.spec.stdin {
            return Err(Status::invalid_argument(format!(
                "container {} was not created with stdin: it has no input to attach to",
                c.id
            )));
        }
        let url = self
            .streaming
            .url_for(Request::Attach {
                container_id: c.id,
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                tty: req.tty,
            })
            .map_err(url_error)?;
        Ok(cri::AttachResponse { url })
    }

    pub(super) fn port_forward_url(
        &self,
        req: cri::PortForwardRequest,
    ) -> Result<cri::PortForwardResponse, Status> {
        if req.pod_sandbox_id.is_empty() {
            return Err(required("pod_sandbox_id"));
        }
        let pod = self
            .runtime
            .pod(&req.pod_sandbox_id)
            .map_err(from_runtime)?;
        if let Some(bad) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(Status::invalid_argument(format!(
                "port {bad} is not a TCP port (1 to 65535)"
            )));
        }
        let url = self
            .streaming
            .url_for(Request::PortForward { pod_id: pod.id })
            .map_err(url_error)?;
        Ok(cri::PortForwardResponse { url })
    }
}
