//! Resources: the shared statistics sample and UpdateContainerResources.

use super::*;

impl Runtime {
    /// Usage of every container, from a sample at most `stats_interval` old. Concurrent callers
    /// wait for one sample instead of each walking the process table.
    pub async fn usage(self: &Arc<Self>) -> Arc<crate::stats::Sample> {
        let _gate = self.sample_gate.lock().await;
        let containers = self.list_containers();
        let fresh = self
            .sampler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .fresh(self.opts.stats_interval, &containers);
        if let Some(fresh) = fresh {
            return fresh;
        }
        let sampler = Arc::clone(&self.sampler);
        // The sampler's state is only touched inside the blocking task, which runs to its end
        // even if this caller goes away: a cancelled call cannot lose the CPU history.
        let sampled = tokio::task::spawn_blocking(move || {
            sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .sample(&containers)
        })
        .await;
        match sampled {
            Ok(sample) => sample,
            Err(_) => self
                .sampler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last(),
        }
    }

    /// New limits for a container (from kubelet's Linux resources, or from re-read annotations
    /// when `resources` is `None`), applied at once if it runs. The new limits are recorded only
    /// once the monitor has applied them.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: Option<&crate::limits::LinuxResources>,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        let c = self.container(id)?;
        if c.state == ContainerState::Exited {
            return Err(Error::FailedPrecondition(format!(
                "container {} has exited",
                c.id
            )));
        }
        let limits = match resources {
            Some(r) => {
                let mut limits = c.process.limits;
                crate::limits::apply_linux(&mut limits, r)?;
                limits
            }
            None if annotations.is_empty() => return Ok(()),
            None => {
                let pod = self.pod(&c.pod_id)?;
                crate::limits::resolve(&c.name, None, annotations, &pod.spec.annotations)?
            }
        };
        let path = c.dir.join(monitor::PROCESS_FILE);
        let write = |limits: crate::limits::Limits| -> Result<()> {
            let mut process = c.process.clone();
            process.limits = limits;
            let bytes =
                serde_json::to_vec_pretty(&process).map_err(|e| Error::Internal(e.to_string()))?;
            Ok(write_atomic(&path, &bytes).at("writing", &path)?)
        };
        write(limits)?;
        if c.state == ContainerState::Running
            && let Err(e) = self.monitor_command(&c, "limits").await
        {
            let _ = write(c.process.limits);
            return Err(e);
        }
        self.update_container(&c.id, |c| {
            c.process.limits = limits;
            if let Some(r) = resources {
                c.spec.linux_resources = Some(*r);
            }
        })?;
        Ok(())
    }
}
