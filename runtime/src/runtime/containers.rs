//! Containers after creation: lookups, start (the monitor), exit, stop and removal.

use super::*;

/// Records what the monitor reported at start.
pub(super) fn mark_running(c: &mut Container, s: &monitor::Started) {
    c.state = ContainerState::Running;
    c.pid = s.pid;
    c.pid_start_time = s.start_time;
    c.started_at = s.started_at;
    c.monitor_pid = s.monitor_pid;
    c.monitor_start_time = s.monitor_start_time;
    c.monitor_protocol = s.protocol;
}
impl Runtime {
    /// Marks a container busy (starting or being removed) until the guard is dropped; a second
    /// claim meanwhile is refused.
    pub(super) fn claim(&self, id: &str) -> Result<Starting<'_>> {
        let newly = self
            .starting
            .lock()
            .map(|mut s| s.insert(id.to_string()))
            .unwrap_or(false);
        if !newly {
            return Err(Error::FailedPrecondition(format!(
                "container {id} is starting or being removed; retry once that has returned"
            )));
        }
        Ok(Starting {
            set: &self.starting,
            id: id.to_string(),
        })
    }

    pub(super) fn find_container(&self, id: &str) -> Option<Container> {
        let containers = self.read_containers();
        if let Some(c) = containers.get(id) {
            return Some(c.clone());
        }
        let mut found = containers.values().filter(|c| matches_id(&c.id, id));
        match (found.next(), found.next()) {
            (Some(c), None) => Some(c.clone()),
            _ => None,
        }
    }

    pub fn container(&self, id: &str) -> Result<Container> {
        self.find_container(id)
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    pub fn list_containers(&self) -> Vec<Container> {
        self.read_containers().values().cloned().collect()
    }

    /// Every container `f` keeps, mapped under the read lock without copying the containers:
    /// kubelet lists all of them every second.
    pub fn map_containers<T>(&self, f: impl FnMut(&Container) -> Option<T>) -> Vec<T> {
        self.read_containers().values().filter_map(f).collect()
    }

    pub(super) fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container),
    ) -> Result<Option<Container>> {
        self.update_stored(id, f, false)
    }

    /// [`Self::update_container`] for what recovery can find elsewhere after a crash: the store
    /// write does not wait for the disk.
    pub(super) fn update_container_lazily(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container),
    ) -> Result<Option<Container>> {
        self.update_stored(id, f, true)
    }

    fn update_stored(
        &self,
        id: &str,
        f: impl FnOnce(&mut Container),
        lazily: bool,
    ) -> Result<Option<Container>> {
        let updated = {
            let mut containers = self.write_containers();
            containers.get_mut(id).map(|c| {
                f(c);
                c.clone()
            })
        };
        match &updated {
            Some(c) if lazily => self.store.put_container_lazily(c)?,
            Some(c) => self.store.put_container(c)?,
            None => {}
        }
        Ok(updated)
    }

    pub async fn start_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let t0 = std::time::Instant::now();
        let c = self.container(id)?;
        if self
            .find_pod(&c.pod_id)
            .is_none_or(|p| p.state != PodState::Ready)
        {
            return Err(Error::FailedPrecondition(format!(
                "the pod sandbox of container {} is stopped: its containers cannot start",
                c.id
            )));
        }
        let _busy = self.claim(&c.id)?;
        // The state may have changed while this call waited for the guard.
        let c = self.container(&c.id)?;
        if c.state != ContainerState::Created {
            return Err(Error::WrongState {
                message: format!(
                    "container {} is {:?}, not Created: it cannot be started (again)",
                    c.id, c.state
                ),
                id: c.id.clone(),
                state: c.state,
            });
        }
        // Before the process starts: a build may resolve a name as its first act.
        self.start_dns_proxy(&c);
        let mut child = self.monitors.start(&c.dir).await.map_err(|e| {
            self.stop_dns_proxy(&c.id);
            self.note_monitor_start(Some(format!("{}: {e}", self.opts.monitor.exe().display())));
            Error::io(
                format!("starting the monitor {}", self.opts.monitor.exe().display()),
                e,
            )
        })?;
        self.note_monitor_start(None);
        tracing::debug!(container = id, elapsed = ?t0.elapsed(), "monitor spawned");
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let mut reader = tokio::io::BufReader::new(out);
            let _ =
                tokio::time::timeout(self.opts.start_timeout, reader.read_line(&mut line)).await;
        }
        match serde_json::from_str::<Handshake>(line.trim()) {
            Ok(Handshake::Started(s)) => {
                tracing::debug!(container = id, elapsed = ?t0.elapsed(), "monitor reported the start");
                let (tx, rx) = watch::channel(false);
                if let Ok(mut exits) = self.exits.lock() {
                    exits.insert(c.id.clone(), rx);
                }
                // The watcher exists before anything below can fail, so the exit is always
                // recorded; it waits for `recorded` so that it never runs before the start is.
                let (recorded, start_recorded) = tokio::sync::oneshot::channel::<()>();
                let rt = Arc::clone(self);
                let cid = c.id.clone();
                tokio::spawn(async move {
                    let _ = child.wait().await;
                    let _ = start_recorded.await;
                    rt.monitor_exited(&cid, tx);
                });
                // Without waiting for the disk: the monitor's started.json holds the start for
                // a recovery after a crash.
                let update = self.update_container_lazily(&c.id, |c| mark_running(c, &s));
                if let Err(e) = update {
                    // The container runs and the runtime knows it; the store catches up at the
                    // next write, or recovery reads the monitor's started.json after a crash.
                    tracing::error!(container = id, error = %e, "recording the start failed");
                }
                self.emit(&c.id, &c.pod_id, EventKind::Started);
                let _ = recorded.send(());
                Ok(())
            }
            outcome => {
                let message = match outcome {
                    Ok(Handshake::Failed(m)) => m,
                    _ => {
                        let _ = child.start_kill();
                        let log =
                            std::fs::read_to_string(c.dir.join("monitor.log")).unwrap_or_default();
                        format!(
                            "the container monitor did not report a start: {}",
                            log.trim()
                        )
                    }
                };
                let _ = child.wait().await;
                self.stop_dns_proxy(&c.id);
                // A monitor that started the container but reported too late: end the container.
                if let Some(s) = monitor::read_started(&c.dir) {
                    let mut started = c.clone();
                    mark_running(&mut started, &s);
                    Self::kill_tree(&started, Signal::SIGKILL);
                }
                self.update_container(&c.id, |c| {
                    c.state = ContainerState::Exited;
                    c.exit_code = 128;
                    c.reason = "StartError".into();
                    c.message = message.clone();
                    c.finished_at = now_nanos();
                })?;
                Err(Error::FailedPrecondition(format!(
                    "starting container {}: {message}",
                    c.id
                )))
            }
        }
    }

    /// The monitor of container `id` is gone: record how the container ended.
    pub(super) fn monitor_exited(&self, id: &str, tx: watch::Sender<bool>) {
        self.stop_dns_proxy(id);
        let Some(c) = self.find_container(id) else {
            let _ = tx.send(true);
            return;
        };
        let exit = monitor::read_exit(&c.dir);
        let counter = match &exit {
            Some(e) if e.reason.as_deref() == Some("OOMKilled") => Some(&self.oom_kills),
            Some(_) => None,
            None => Some(&self.monitor_deaths),
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let exit_cpu = exit.as_ref().map(|e| e.cpu_ns).unwrap_or(0);
        let (code, finished_at, reason, message) = match exit {
            Some(exit) => (
                exit.exit_code,
                exit.finished_at,
                exit.reason.unwrap_or_else(|| {
                    if exit.exit_code == 0 {
                        "Completed"
                    } else {
                        "Error"
                    }
                    .to_string()
                }),
                exit.message.unwrap_or_default(),
            ),
            None => {
                // The monitor died without recording an exit (killed): end what it supervised.
                Self::kill_tree(&c, Signal::SIGKILL);
                (
                    137,
                    now_nanos(),
                    "Error".to_string(),
                    "the container's monitor died without recording an exit; its processes were killed".to_string(),
                )
            }
        };
        // What ExecSync started in the container does not outlive it.
        for pid in platform::processes_in_root(&c.process.rootfs) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let final_cpu = exit_cpu;
        if let Err(e) = self.update_container(id, |c| {
            c.state = ContainerState::Exited;
            c.final_cpu_ns = c.final_cpu_ns.max(final_cpu);
            c.exit_code = code;
            c.finished_at = finished_at;
            c.reason = reason;
            c.message = message;
        }) {
            tracing::error!(container = id, error = %e, "recording the exit failed");
        }
        if let Ok(mut exits) = self.exits.lock() {
            exits.remove(id);
        }
        self.emit(id, &c.pod_id, EventKind::Stopped);
        let _ = tx.send(true);
    }

    /// Signals every process of the container: its process group and the tree below its main
    /// process (only while that pid still names the container's process, not a later one that
    /// reuses it), the tree below its monitor while the monitor lives, and (where the OS tells)
    /// every process whose root is the container's, which catches those that left both group
    /// and parent (setsid + double fork) and ExecSync's processes.
    pub(super) fn kill_tree(c: &Container, sig: Signal) {
        let mut pids = Vec::new();
        let main_alive = c.pid > 0
            && platform::process_info(c.pid).is_some_and(|p| {
                p.alive && (c.pid_start_time == 0 || p.start_time == c.pid_start_time)
            });
        if main_alive {
            let _ = killpg(Pid::from_raw(c.pid), sig);
            pids.push(c.pid);
            pids.extend(platform::tree(c.pid));
        }
        if c.monitor_pid > 0 && monitor::is_running(&c.dir) {
            pids.extend(platform::tree(c.monitor_pid));
        }
        pids.extend(platform::processes_in_root(&c.process.rootfs));
        for pid in pids {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    /// Stops a running container: its stop signal, then SIGKILL to the whole tree after
    /// `timeout_secs`. A missing or not-running container is success.
    pub async fn stop_container(self: &Arc<Self>, id: &str, timeout_secs: i64) -> Result<()> {
        let Some(c) = self.find_container(id) else {
            return Ok(());
        };
        if c.state != ContainerState::Running {
            return Ok(());
        }
        let rx = self.exits.lock().ok().and_then(|e| e.get(&c.id).cloned());
        let Some(mut rx) = rx else { return Ok(()) };
        if timeout_secs > 0 {
            let _ = kill(Pid::from_raw(c.pid), signal_by_name(&c.process.stop_signal));
            let wait = Duration::from_secs(timeout_secs as u64);
            if matches!(
                tokio::time::timeout(wait, rx.wait_for(|v| *v)).await,
                Ok(Ok(_))
            ) {
                return Ok(());
            }
        }
        Self::kill_tree(&c, Signal::SIGKILL);
        match tokio::time::timeout(self.opts.kill_timeout, rx.wait_for(|v| *v)).await {
            Ok(Ok(_)) => Ok(()),
            // No watcher any more: the monitor's lock says whether anything still runs.
            Ok(Err(_)) if !monitor::is_running(&c.dir) => Ok(()),
            _ => Err(Error::DeadlineExceeded(format!(
                "container {} did not exit within {:?} of SIGKILL",
                c.id, self.opts.kill_timeout
            ))),
        }
    }

    pub async fn remove_container(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(c) = self.find_container(id) else {
            return Ok(());
        };
        // Held for the whole removal: a StartContainer meanwhile is refused, not run in a
        // directory being deleted.
        let _busy = self.claim(&c.id)?;
        if c.state == ContainerState::Running {
            self.stop_container(&c.id, 0).await?;
        }
        // Nothing of it may outlive it, whatever state it is in.
        Self::kill_tree(&c, Signal::SIGKILL);
        self.stop_dns_proxy(&c.id);
        // The record goes first: a crash after it leaves a directory that recovery deletes as
        // debris; the other order would leave a record without its directory.
        self.store.delete_container(&c.id)?;
        self.write_containers().remove(&c.id);
        // Out of the pod's directory now, unmounted and deleted after the reply.
        self.trash.discard(&c.dir).at("removing", &c.dir)?;
        self.images.release(&c.id)?;
        self.emit(&c.id, &c.pod_id, EventKind::Deleted);
        self.release(&container_key(&c.pod_id, &c.name, c.attempt));
        Ok(())
    }
}
