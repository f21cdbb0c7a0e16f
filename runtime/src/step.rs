//! One process run as a container of this runtime outside any pod: what `image build`'s RUN
//! steps are (the build itself lives in image-builder, above this crate and image-service).
//!
//! A [`StepRoot`] is a container root made as a pod's container's is: cloned from a snapshot
//! (an overlay on Linux, an APFS clone on macOS), the jail layout, /dev, the host's hosts and
//! resolv.conf, /proc and containerd's masked paths on the Linux twin. [`StepRoot::run`] runs a
//! process in it through the same monitor (the `darwin-cri-monitor` binary), with the user
//! resolved from the image, confined as a default-handler pod's container is, on the host's
//! network (with the mDNSResponder relay on macOS), and streams its output.
//! [`StepRoot::changed`] says where the process's changes are and what in the root is the
//! runtime's (image-builder diffs it). Dropping the root unmounts
//! everything below its directory and removes it: a failed step leaves nothing.
//!
//! The directory is the caller's choice (the build's `<root>/builds/<id>`, outside the pods):
//! the CRI never lists a step, and a server starting meanwhile neither adopts nor removes it.

use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use image_service::safe_path::resolve_in_root;

use crate::error::IoContext;
use crate::model::{ChangedRoot, ContainerSpec, Pod, PodMetadata, PodSpec, PodState, ProcessSpec};
use crate::monitor::{self, Handshake};
use crate::user::{self, ResolvedUser, UserRequest};
use crate::{Error, Result};

/// Where and how steps run.
#[derive(Debug, Clone)]
pub struct StepOptions {
    /// What the step's monitor runs: `darwin-cri-monitor` beside `darwin-cri`.
    pub monitor: monitor::MonitorProgram,
    /// Where monitors' control sockets go (short: socket paths are limited).
    pub state_dir: PathBuf,
    /// Copy the root instead of layering it (the Linux stand-in for macOS's clones).
    pub copy_rootfs: bool,
    pub max_log_line: usize,
    /// The host's mDNSResponder socket relayed into the root (macOS).
    pub mdns_socket: Option<PathBuf>,
    /// A short directory on the root's file system for the relay's socket.
    pub sockets_dir: PathBuf,
    pub mach_services: Vec<String>,
    /// Run confined with what the kernel's Landlock has (`runtime.landlock_best_effort`).
    pub landlock_best_effort: bool,
}

/// A step's root, ready to run a process in; gone when dropped.
#[derive(Debug)]
pub struct StepRoot {
    id: String,
    dir: PathBuf,
    lower: PathBuf,
    rootfs: PathBuf,
    layered: bool,
    user: ResolvedUser,
    mounted: Vec<PathBuf>,
    confinement: Option<crate::confinement::Policy>,
}

impl Drop for StepRoot {
    fn drop(&mut self) {
        for m in platform::mounts_under(&self.dir)
            .unwrap_or_default()
            .into_iter()
            .rev()
        {
            let _ = platform::unmount(&m);
        }
        let _ = crate::fsutil::remove_tree(&self.dir);
    }
}

/// What a step's process did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepExit {
    pub exit_code: i32,
}

impl StepRoot {
    /// A root in `dir` (made here) cloned from the snapshot `lower`, for `image_user` (the
    /// image's USER: `name`, `uid`, `name:group`… resolved against the snapshot's /etc).
    pub fn prepare(
        opts: &StepOptions,
        lower: &Path,
        dir: &Path,
        image_user: &str,
    ) -> Result<StepRoot> {
        std::fs::create_dir_all(dir).at("creating", dir)?;
        let id = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let user = user::resolve(
            lower,
            &UserRequest {
                image_user,
                ..Default::default()
            },
        )?;
        let (rootfs, layered) =
            crate::rootfs::clone_rootfs(lower, &[], dir, opts.copy_rootfs, false)
                .at("making the step's root from", lower)?;
        // From here on, a failure drops the root and takes everything with it.
        let mut root = StepRoot {
            id,
            dir: dir.to_path_buf(),
            lower: lower.to_path_buf(),
            rootfs,
            layered,
            user,
            mounted: Vec::new(),
            confinement: None,
        };
        root.lay_out(opts)?;
        Ok(root)
    }

    fn inside(&self, p: &str) -> Result<PathBuf> {
        Ok(resolve_in_root(&self.rootfs, Path::new(p))
            .at("resolving in the step's root", Path::new(p))?)
    }

    fn lay_out(&mut self, opts: &StepOptions) -> Result<()> {
        crate::runtime::prepare_root(&self.rootfs, &self.user)?;
        for file in ["hosts", "resolv.conf"] {
            let target = self.inside(&format!("/etc/{file}"))?;
            let _ = std::fs::remove_file(&target);
            std::fs::copy(Path::new("/etc").join(file), &target).at("writing", &target)?;
        }
        let proc_dir = self.inside("/proc")?;
        std::fs::create_dir_all(&proc_dir).at("creating", &proc_dir)?;
        match platform::mount_proc(&proc_dir) {
            Ok(()) => self.mounted.push(proc_dir),
            Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
            Err(e) => return Err(Error::io("mounting /proc in the step's root", e)),
        }
        let existing = |list: &[&str]| -> Vec<PathBuf> {
            list.iter()
                .filter_map(|p| self.inside(p).ok())
                .filter(|p| std::fs::symlink_metadata(p).is_ok())
                .collect()
        };
        let masked = existing(crate::mounts::DEFAULT_MASKED_PATHS);
        let read_only = existing(crate::mounts::DEFAULT_READONLY_PATHS);
        if platform::HAS_BIND_MOUNTS {
            let made = crate::mounts::mask(&self.dir.join("masked"), &masked, &read_only)?;
            self.mounted.extend(made);
        }
        // Confined as a container of a default-handler pod.
        let pod = Pod {
            id: format!("build-{}", self.id),
            spec: PodSpec {
                metadata: PodMetadata {
                    name: "build".into(),
                    namespace: "build".into(),
                    uid: self.id.clone(),
                    attempt: 0,
                },
                ..Default::default()
            },
            state: PodState::Ready,
            created_at: 0,
            dir: self.dir.clone(),
        };
        self.confinement = crate::confinement::policy(
            &ContainerSpec::default(),
            &pod,
            &self.rootfs,
            &[],
            masked,
            read_only,
            &crate::confinement::PolicyRules {
                mach_services: &opts.mach_services,
                // A step adds no capability.
                allowed_capabilities: &[],
            },
        )?;
        if let Some(c) = self.confinement.as_mut() {
            c.landlock_best_effort = opts.landlock_best_effort;
        }
        Ok(())
    }

    /// The home of the user the step runs as.
    pub fn home(&self) -> &str {
        &self.user.home
    }

    /// Runs `args` with `env` in `cwd` (made if missing) to its end, writing its output to `out`
    /// as it comes.
    pub fn run(
        &self,
        opts: &StepOptions,
        args: Vec<String>,
        mut env: Vec<String>,
        cwd: &str,
        out: &mut dyn Write,
    ) -> Result<StepExit> {
        let cwd = if cwd.is_empty() { "/" } else { cwd };
        std::fs::create_dir_all(self.inside(cwd)?)
            .at("creating the working dir", Path::new(cwd))?;
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", self.user.home));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(crate::runtime::DEFAULT_PATH.to_string());
        }
        let log = self.dir.join("output.log");
        let process = ProcessSpec {
            args,
            env,
            cwd: cwd.to_string(),
            uid: self.user.uid,
            gid: self.user.gid,
            groups: self.user.groups.clone(),
            rootfs: self.rootfs.clone(),
            log_path: Some(log.clone()),
            log_directory: Some(self.dir.clone()),
            max_log_line: opts.max_log_line,
            tty: false,
            stdin: false,
            stdin_once: false,
            stop_signal: String::new(),
            limits: Default::default(),
            limit_interval_ms: 250,
            control_socket: opts
                .state_dir
                .join("m")
                .join(format!("b{}.sock", &self.id[..self.id.len().min(24)])),
            confinement: self.confinement.clone(),
        };
        let bytes =
            serde_json::to_vec_pretty(&process).map_err(|e| Error::Internal(e.to_string()))?;
        crate::fsutil::write_atomic(&self.dir.join(monitor::PROCESS_FILE), &bytes)
            .at("writing", &self.dir)?;
        {
            use std::os::unix::fs::DirBuilderExt;
            // Private, as the server's: monitors bind their sockets there directly.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(opts.state_dir.join("m"))
                .at("creating", &opts.state_dir)?;
        }

        let _relay = dns_relay(opts, &self.rootfs);
        let monitor_log_path = self.dir.join("monitor.log");
        let monitor_log =
            std::fs::File::create(&monitor_log_path).at("creating", &monitor_log_path)?;
        let mut cmd = opts.monitor.command(&self.dir);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(monitor_log));
        platform::inherit_only_stdio(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            Error::io(
                format!("starting the monitor {}", opts.monitor.exe().display()),
                e,
            )
        })?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        match serde_json::from_str::<Handshake>(line.trim()) {
            Ok(Handshake::Started(_)) => {}
            Ok(Handshake::Failed(m)) => {
                let _ = child.wait();
                return Err(Error::FailedPrecondition(format!(
                    "the step could not start: {m}"
                )));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&monitor_log_path).unwrap_or_default();
                return Err(Error::FailedPrecondition(format!(
                    "the step's monitor did not start: {}",
                    log.trim()
                )));
            }
        }
        let mut offset = 0u64;
        loop {
            let finished = child.try_wait().ok().flatten().is_some();
            offset = stream_log(&log, offset, out);
            if finished {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let exit = monitor::read_exit(&self.dir)
            .ok_or_else(|| Error::Internal("the step's monitor left no exit record".into()))?;
        Ok(StepExit {
            exit_code: exit.exit_code,
        })
    }

    /// The tree the step ran on, from which the builder reads the step's changes (against
    /// [`StepRoot::lower`]). The runtime's own: hosts, resolv.conf, /dev, /proc, the
    /// mDNSResponder socket, and the layout entries the image did not have. Unmounts /proc and
    /// the masks first: their content is the host's, not the step's.
    pub fn changed(&mut self) -> ChangedRoot {
        // /proc and the masks first: their content is the host's, not the step's.
        for m in self.mounted.drain(..).rev() {
            let _ = platform::unmount(&m);
        }
        let mut skip_paths: Vec<PathBuf> = Vec::new();
        for p in [
            "/etc/hosts",
            "/etc/resolv.conf",
            "/dev",
            "/proc",
            crate::dns_proxy::MDNS_SOCKET,
        ] {
            if let Ok(host) = self.inside(p)
                && let Ok(rel) = host.strip_prefix(&self.rootfs)
            {
                skip_paths.push(rel.to_path_buf());
            }
        }
        let lower = &self.lower;
        let rootfs = &self.rootfs;
        let mut skip_entries: Vec<PathBuf> = crate::jail::layout_paths(&self.user.home)
            .into_iter()
            .filter_map(|p| {
                let is_link = crate::jail::LINKS.iter().any(|(l, _)| Path::new(l) == p);
                let rel = if is_link {
                    p.strip_prefix("/").ok()?.to_path_buf()
                } else {
                    resolve_in_root(rootfs, &p)
                        .ok()?
                        .strip_prefix(rootfs)
                        .ok()?
                        .to_path_buf()
                };
                std::fs::symlink_metadata(lower.join(&rel))
                    .is_err()
                    .then_some(rel)
            })
            .collect();
        // prepare_root's own /tmp and /etc, where the image had none.
        for r in ["tmp", "etc"] {
            if std::fs::symlink_metadata(lower.join(r)).is_err() {
                skip_entries.push(PathBuf::from(r));
            }
        }
        ChangedRoot {
            rootfs: rootfs.clone(),
            upper: self.layered.then(|| self.dir.join("upper")),
            runtime_paths: skip_paths,
            runtime_entries: skip_entries,
        }
    }

    /// The image's tree the step's root was made from.
    pub fn lower(&self) -> &Path {
        &self.lower
    }
}

/// The host's mDNSResponder relayed into the step's root (macOS), as for a pod's container; it
/// lives on a runtime of its own for as long as the step runs.
fn dns_relay(
    opts: &StepOptions,
    rootfs: &Path,
) -> Option<(tokio::runtime::Runtime, crate::dns_proxy::DnsProxy)> {
    let upstream = opts.mdns_socket.as_ref()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let started = (|| -> std::io::Result<crate::dns_proxy::DnsProxy> {
        // Beneath the root's descriptor, as for a pod's container (issue #26, 9).
        let fd = crate::fsutil::open_dir_in_root(rootfs, Path::new(crate::dns_proxy::ROOT_DIR))?;
        std::fs::create_dir_all(&opts.sockets_dir)?;
        let _guard = rt.enter();
        crate::dns_proxy::DnsProxy::start(upstream, fd, crate::dns_proxy::NAME, &opts.sockets_dir)
    })();
    match started {
        Ok(p) => Some((rt, p)),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS relay in the step's root");
            None
        }
    }
}

/// Writes the messages of the CRI log records written since `offset`; the new offset. Only
/// whole records: a line still being written waits for the next round.
fn stream_log(log: &Path, offset: u64, out: &mut dyn Write) -> u64 {
    let Ok(mut f) = std::fs::File::open(log) else {
        return offset;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return offset;
    };
    for rec in buf[..end].split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(rec);
        let mut parts = text.splitn(4, ' ');
        let (_, _, tag, msg) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
        );
        let _ = out.write_all(msg.as_bytes());
        if tag != Some("P") {
            let _ = out.write_all(b"\n");
        }
    }
    let _ = out.flush();
    offset + end as u64 + 1
}
