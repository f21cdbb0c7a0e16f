//! Monitors started ahead: a few `darwin-cri-monitor --wait` processes that the server keeps
//! waiting, so that StartContainer hands one its bundle (one line on its stdin) instead of
//! forking, executing and loading a monitor on the call's path. After each hand-over another is
//! started, off that path. Where none waits (a burst of starts, or none kept), a monitor is
//! started for the bundle as before.
//!
//! A waiting monitor is the server's child until it is handed a bundle (it then leaves the
//! server's session, as every monitor does); the end of its stdin (the server stopped) ends it.

use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::process::Child;

use super::MonitorProgram;

/// The waiting monitors of one server.
#[derive(Debug)]
pub struct Waiting {
    program: MonitorProgram,
    /// How many to keep waiting; 0: none (each start starts its monitor).
    keep: usize,
    idle: Arc<Mutex<Vec<Child>>>,
}

impl Waiting {
    pub fn new(program: MonitorProgram, keep: usize) -> Waiting {
        Waiting {
            program,
            keep,
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The pids of the monitors waiting now.
    pub fn pids(&self) -> Vec<u32> {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Child::id)
            .collect()
    }

    /// Starts monitors until `keep` wait (from a blocking thread: spawning forks). Needs the
    /// async runtime's context.
    pub fn fill(&self) {
        if self.keep == 0 {
            return;
        }
        let (program, keep, idle) = (self.program.clone(), self.keep, Arc::clone(&self.idle));
        tokio::task::spawn_blocking(move || {
            loop {
                let missing = {
                    let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
                    idle.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                    keep.saturating_sub(idle.len())
                };
                if missing == 0 {
                    return;
                }
                match spawn_waiting(&program) {
                    Ok(child) => idle.lock().unwrap_or_else(|p| p.into_inner()).push(child),
                    Err(e) => {
                        tracing::warn!(error = %e, monitor = %program.exe().display(), "cannot start a monitor ahead");
                        return;
                    }
                }
            }
        });
    }

    /// A monitor for `bundle`, its handshake to come on its stdout: a waiting one handed the
    /// bundle, else one started for it (its stderr in the bundle's `monitor.log`).
    pub async fn start(&self, bundle: &Path) -> std::io::Result<Child> {
        let handed = if self.keep > 0 && !bundle.as_os_str().as_encoded_bytes().contains(&b'\n') {
            self.hand_over(bundle).await
        } else {
            None
        };
        if self.keep > 0 {
            self.fill();
        }
        match handed {
            Some(child) => Ok(child),
            None => self.spawn_for(bundle),
        }
    }

    /// Hands `bundle` to a waiting monitor; `None` when none took it.
    async fn hand_over(&self, bundle: &Path) -> Option<Child> {
        loop {
            let mut child = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if !matches!(child.try_wait(), Ok(None)) {
                continue;
            }
            let Some(mut stdin) = child.stdin.take() else {
                let _ = child.start_kill();
                continue;
            };
            let mut line = bundle.as_os_str().as_encoded_bytes().to_vec();
            line.push(b'\n');
            match stdin.write_all(&line).await {
                // Closed after the line: the monitor reads nothing more from the server.
                Ok(()) => return Some(child),
                Err(e) => {
                    tracing::debug!(error = %e, "a waiting monitor did not take its bundle");
                    let _ = child.start_kill();
                }
            }
        }
    }

    fn spawn_for(&self, bundle: &Path) -> std::io::Result<Child> {
        let log = std::fs::File::create(bundle.join("monitor.log"))?;
        let mut cmd = tokio::process::Command::from(self.program.command(bundle));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        platform::inherit_only_stdio(cmd.as_std_mut());
        cmd.spawn()
    }
}

fn spawn_waiting(program: &MonitorProgram) -> std::io::Result<Child> {
    let mut cmd = tokio::process::Command::from(program.waiting_command());
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    platform::inherit_only_stdio(cmd.as_std_mut());
    cmd.spawn()
}
