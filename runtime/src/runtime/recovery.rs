//! Startup recovery: the store reconciled with the live monitors, stale mounts removed, the
//! mounts of running containers made again.

use super::*;

/// How often a monitor that this server did not start (it survived a restart) is checked.
pub(super) const ADOPTED_MONITOR_POLL: Duration = Duration::from_millis(100);
impl Runtime {
    /// Unmounts what a crash or a dead FUSE daemon left behind: mounts under stopped pods, and
    /// mounts whose bindfs process is gone (every access to them fails). A forced unmount is
    /// the only way to clear the latter.
    pub(super) fn unmount_stale(&self) {
        let stopped: Vec<PathBuf> = self
            .list_pods()
            .into_iter()
            .filter(|p| p.state != PodState::Ready)
            .map(|p| p.dir)
            .collect();
        let pods_dir = self.opts.root.join("pods");
        let mounts = platform::mounts_under(&pods_dir).unwrap_or_default();
        for m in mounts {
            let under_stopped = stopped.iter().any(|d| m.starts_with(d));
            if under_stopped || crate::mounts::is_stale(&m) {
                match platform::unmount(&m) {
                    Ok(()) => tracing::info!(mount = %m.display(), "unmounted a stale mount"),
                    Err(e) => {
                        tracing::warn!(mount = %m.display(), error = %e, "cannot unmount a stale mount")
                    }
                }
            }
        }
    }

    /// Makes again the mounts of a live container that are missing (unmounted as stale).
    pub(super) fn repair_mounts(&self, c: &Container) {
        let live = platform::mounts_under(&c.dir).unwrap_or_default();
        for m in &c.spec.mounts {
            let Ok(target) = resolve_in_root(&c.process.rootfs, Path::new(&m.container_path))
            else {
                continue;
            };
            // Files linked or copied into the root are not mounts.
            if !c.mounted.contains(&target) || live.contains(&target) {
                continue;
            }
            let remounted = self
                .opts
                .mounts
                .resolve_source(&m.host_path, &m.container_path)
                .and_then(|source| {
                    self.opts
                        .mounts
                        .mount(&source, &target, m.readonly)
                        .at("mounting onto", &target)
                        .map_err(Error::from)
                });
            match remounted {
                Ok(_) => tracing::info!(container = c.id, mount = %target.display(), "remounted"),
                Err(e) => {
                    tracing::warn!(container = c.id, mount = %target.display(), error = %e, "cannot remount")
                }
            }
        }
    }

    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        self.unmount_stale();
        // Removals whose deletion a crash cut short: their records are gone already.
        self.trash.empty();
        for p in self.list_pods() {
            if p.state != PodState::Ready {
                continue;
            }
            if let Err(e) = self.host_ports.open(&p.id, &p.spec.port_mappings) {
                tracing::warn!(pod = p.id, error = %e, "cannot serve the pod's host ports again");
            }
            self.cluster_dns
                .add(&p.id, &p.spec.metadata.namespace, p.spec.dns.as_ref());
        }
        self.cluster_dns.sweep();
        for c in self.list_containers() {
            let started = if c.state == ContainerState::Created {
                // The server may have died between starting the monitor and recording it; a
                // monitor that is still starting gets the start timeout to report.
                let deadline = std::time::Instant::now() + self.opts.start_timeout;
                loop {
                    let started = monitor::read_started(&c.dir);
                    if started.is_some()
                        || !monitor::is_running(&c.dir)
                        || std::time::Instant::now() > deadline
                    {
                        break started;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            } else {
                None
            };
            if let Some(s) = started {
                self.update_container(&c.id, |c| mark_running(c, &s))?;
            }
            let Some(c) = self.find_container(&c.id) else {
                continue;
            };
            if c.state != ContainerState::Running {
                continue;
            }
            self.start_dns_proxy(&c);
            let (tx, rx) = watch::channel(false);
            self.exits
                .lock()
                .map_err(|_| Error::Internal("exit table poisoned".into()))?
                .insert(c.id.clone(), rx);
            let rt = Arc::clone(self);
            tokio::spawn(async move {
                while monitor::is_running(&c.dir) {
                    tokio::time::sleep(ADOPTED_MONITOR_POLL).await;
                }
                rt.monitor_exited(&c.id, tx);
            });
        }
        for c in self.list_containers() {
            if matches!(c.state, ContainerState::Running | ContainerState::Created) {
                self.repair_mounts(&c);
            }
        }
        // Directories that no record names are debris of work cut short by a crash.
        let known_pods: HashSet<PathBuf> = self.list_pods().into_iter().map(|p| p.dir).collect();
        let known_containers: HashSet<PathBuf> =
            self.list_containers().into_iter().map(|c| c.dir).collect();
        let pods_dir = self.opts.root.join("pods");
        let mut debris = Vec::new();
        for pod_dir in std::fs::read_dir(&pods_dir)
            .at("listing", &pods_dir)?
            .flatten()
        {
            let path = pod_dir.path();
            if !known_pods.contains(&path) {
                debris.push(path);
                continue;
            }
            if let Ok(entries) = std::fs::read_dir(path.join("containers")) {
                debris.extend(
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| !known_containers.contains(p)),
                );
            }
        }
        let known_ids: HashSet<String> = self.list_containers().into_iter().map(|c| c.id).collect();
        for holder in self.images.lease_holders()? {
            if !known_ids.contains(&holder) {
                self.images.release(&holder)?;
            }
        }
        // Prepared layers of images that are gone, and half-made ones.
        // Removed images' layers stay while containers made from them exist.
        let in_use: Vec<String> = self
            .read_containers()
            .values()
            .map(|c| c.image_id.clone())
            .collect();
        let images: Vec<String> = self
            .images
            .list()?
            .into_iter()
            .map(|i| i.id)
            .chain(in_use)
            .map(|id| {
                let d = id.trim_start_matches("sha256:").to_string();
                d[..d.len().min(16)].to_string()
            })
            .collect();
        if let Ok(entries) = std::fs::read_dir(self.opts.root.join("layers")) {
            debris.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.contains(".tmp-") || !images.iter().any(|i| name.starts_with(&format!("{i}-")))
            }));
        }
        for path in debris {
            tracing::info!(path = %path.display(), "removing debris of an unfinished operation");
            if let Err(e) = remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove debris");
            }
        }
        // Half-made roots of the pool go, ready ones of images still here are kept.
        self.pool.recover(self.roots_are_copies());
        // Monitors waiting for the first starts.
        self.monitors.fill();
        Ok(())
    }
}
