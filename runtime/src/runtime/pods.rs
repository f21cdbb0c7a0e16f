//! Pod sandboxes: a directory of shared files per pod (hosts, resolv.conf, hostname), run, stop and
//! remove.

use super::*;

/// The pod's termination grace period, which kubelet records on every container.
pub(super) const GRACE_ANNOTATION: &str = "io.kubernetes.pod.terminationGracePeriod";

/// StopPodSandbox gives what still runs at most this long: kubelet has already spent the grace
/// period in StopContainer, and must get an answer within its runtime request timeout.
pub(super) const POD_STOP_GRACE_CAP_SECS: i64 = 30;

pub(super) fn resolv_conf(dns: Option<&DnsConfig>) -> String {
    match dns {
        Some(d) if !(d.servers.is_empty() && d.searches.is_empty() && d.options.is_empty()) => {
            let mut out = String::new();
            if !d.searches.is_empty() {
                out.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for s in &d.servers {
                out.push_str(&format!("nameserver {s}\n"));
            }
            if !d.options.is_empty() {
                out.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            out
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
    }
}
impl Runtime {
    pub fn run_pod(&self, spec: PodSpec) -> Result<String> {
        let m = &spec.metadata;
        if m.name.is_empty() || m.namespace.is_empty() || m.uid.is_empty() {
            return Err(Error::InvalidArgument(
                "pod sandbox metadata needs a name, a namespace and a uid".into(),
            ));
        }
        if !spec.runtime_handler.is_empty()
            && !self.opts.runtime_handlers.contains(&spec.runtime_handler)
        {
            return Err(Error::InvalidArgument(format!(
                "runtime handler {:?} is not served here; handlers: \"\" (default), {}",
                spec.runtime_handler,
                self.opts.runtime_handlers.join(", ")
            )));
        }
        if spec.network == NetworkMode::Pod && self.opts.strict_pod_network {
            return Err(Error::InvalidArgument(
                "pod asks for its own network namespace, which macOS cannot give; \
                 set hostNetwork: true, or turn off strict_pod_network to run it on the host's network"
                    .into(),
            ));
        }
        let key = pod_key(m);
        self.reserve(key.clone(), "pod sandbox")?;
        let id = new_id();
        let dir = self.opts.root.join("pods").join(&id);
        if let Err(e) = self.host_ports.open(&id, &spec.port_mappings) {
            self.release(&key);
            return Err(e);
        }
        let dns = spec.dns.clone();
        let namespace = spec.metadata.namespace.clone();
        let result = self.make_pod_dir(&dir, &spec).and_then(|()| {
            let pod = Pod {
                id: id.clone(),
                spec,
                state: PodState::Ready,
                created_at: now_nanos(),
                dir: dir.clone(),
            };
            self.store.put_pod(&pod)?;
            self.write_pods().insert(id.clone(), pod);
            Ok(())
        });
        if let Err(e) = result {
            self.host_ports.close(&id);
            let _ = remove_tree(&dir);
            self.release(&key);
            return Err(e);
        }
        self.cluster_dns.add(&id, &namespace, dns.as_ref());
        Ok(id)
    }

    pub(super) fn make_pod_dir(&self, dir: &Path, spec: &PodSpec) -> Result<()> {
        std::fs::create_dir_all(dir.join("containers")).at("creating", dir)?;
        let hostname = if spec.hostname.is_empty() {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into())
        } else {
            spec.hostname.clone()
        };
        let hosts = format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{}\t{hostname}\n",
            self.node_ip
        );
        for (name, content) in [
            ("hostname", format!("{hostname}\n")),
            ("hosts", hosts),
            ("resolv.conf", resolv_conf(spec.dns.as_ref())),
        ] {
            std::fs::write(dir.join(name), content).at("writing", &dir.join(name))?;
        }
        Ok(())
    }

    pub(super) fn find_pod(&self, id: &str) -> Option<Pod> {
        let pods = self.read_pods();
        if let Some(p) = pods.get(id) {
            return Some(p.clone());
        }
        let mut found = pods.values().filter(|p| matches_id(&p.id, id));
        match (found.next(), found.next()) {
            (Some(p), None) => Some(p.clone()),
            _ => None,
        }
    }

    pub fn pod(&self, id: &str) -> Result<Pod> {
        self.find_pod(id)
            .ok_or_else(|| Error::NotFound(format!("pod sandbox {id:?} not found")))
    }

    pub fn list_pods(&self) -> Vec<Pod> {
        self.read_pods().values().cloned().collect()
    }

    /// The TCP ports a process of pod `pod_id` listens on: port-forward reaches only these
    /// (issue #26, 15). Every pod shares the host's network, so a forward to any other port
    /// would reach a service of the host (or of another pod) on its loopback. A process of the
    /// pod is one of a running container's monitor's tree (the container's processes, exec'd
    /// ones, and orphans the monitor reaps on Linux) or one whose root is the container's root
    /// (orphans reparented to launchd on macOS).
    pub fn pod_listening_ports(&self, pod_id: &str) -> Result<Vec<u16>> {
        let pod = self.pod(pod_id)?;
        let mut pids = Vec::new();
        for c in self
            .read_containers()
            .values()
            .filter(|c| c.pod_id == pod.id && c.state == ContainerState::Running)
        {
            if c.monitor_pid > 0 {
                pids.extend(platform::tree(c.monitor_pid));
            }
            if c.pid > 0 {
                pids.extend(platform::tree(c.pid));
            }
            pids.extend(platform::processes_in_root(&c.process.rootfs));
        }
        pids.sort_unstable();
        pids.dedup();
        platform::listening_tcp_ports(&pids)
            .map_err(|e| Error::io("reading the pod's listening sockets", e))
    }

    pub(super) fn pod_container_ids(&self, pod_id: &str) -> Vec<String> {
        self.read_containers()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .map(|c| c.id.clone())
            .collect()
    }

    pub async fn stop_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(pod) = self.find_pod(id) else {
            return Ok(());
        };
        // kubelet stops containers with their grace period before it stops the pod; what still
        // runs gets the grace period kubelet recorded on it (else none), all at once, so the
        // whole stop takes the longest grace period, not their sum.
        let mut stops = tokio::task::JoinSet::new();
        for cid in self.pod_container_ids(&pod.id) {
            let grace = self
                .find_container(&cid)
                .and_then(|c| {
                    c.spec
                        .annotations
                        .get(GRACE_ANNOTATION)
                        .and_then(|g| g.parse::<i64>().ok())
                })
                .unwrap_or(0)
                .clamp(0, POD_STOP_GRACE_CAP_SECS);
            let rt = Arc::clone(self);
            stops.spawn(async move { rt.stop_container(&cid, grace).await });
        }
        let mut first_error = None;
        while let Some(done) = stops.join_next().await {
            let result = done
                .map_err(|e| Error::Internal(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        // Nothing runs in the pod any more: its host ports and cluster domains go.
        self.host_ports.close(&pod.id);
        self.cluster_dns.remove(&pod.id);
        // Nothing of a stopped pod stays mounted: container roots and kubelet's volumes.
        let dir = pod.dir.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            for m in platform::mounts_under(&dir)? {
                platform::unmount(&m)?;
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .at("unmounting below", &pod.dir)?;
        let updated = {
            let mut pods = self.write_pods();
            match pods.get_mut(&pod.id) {
                Some(p) if p.state != PodState::NotReady => {
                    p.state = PodState::NotReady;
                    Some(p.clone())
                }
                _ => None,
            }
        };
        if let Some(p) = updated {
            self.store.put_pod(&p)?;
        }
        Ok(())
    }

    pub async fn remove_pod(self: &Arc<Self>, id: &str) -> Result<()> {
        let Some(pod) = self.find_pod(id) else {
            return Ok(());
        };
        for cid in self.pod_container_ids(&pod.id) {
            self.remove_container(&cid).await?;
        }
        // kubelet may remove a pod it never stopped.
        self.host_ports.close(&pod.id);
        self.cluster_dns.remove(&pod.id);
        self.store.delete_pod(&pod.id)?;
        self.write_pods().remove(&pod.id);
        self.trash.discard(&pod.dir).at("removing", &pod.dir)?;
        self.sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forget_pod(&pod.id);
        self.release(&pod_key(&pod.spec.metadata));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_from_dns_config() {
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".to_string()],
            searches: vec![
                "ns.svc.cluster.local".to_string(),
                "svc.cluster.local".to_string(),
            ],
            options: vec!["ndots:5".to_string()],
        };
        assert_eq!(
            resolv_conf(Some(&dns)),
            "search ns.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
