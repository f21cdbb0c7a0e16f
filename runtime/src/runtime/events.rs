//! GetContainerEvents: subscribers with bounded queues, and the counters of kills and monitor deaths.

use super::*;

impl Runtime {
    /// A new GetContainerEvents subscription. A subscriber that falls `event_buffer` events
    /// behind is dropped (its stream ends) so that it never slows the runtime down.
    pub fn subscribe(&self) -> tokio::sync::mpsc::Receiver<ContainerEvent> {
        let (tx, rx) = tokio::sync::mpsc::channel(self.opts.event_buffer.max(1));
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.push(tx);
        }
        rx
    }

    /// Ends every subscription (the server is shutting down: open streams must end).
    pub fn close_subscribers(&self) {
        if let Ok(mut subs) = self.subscribers.lock() {
            subs.clear();
        }
    }

    /// OOM kills and monitor deaths since the server started.
    pub fn kill_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.oom_kills.load(Relaxed),
            self.monitor_deaths.load(Relaxed),
        )
    }

    pub fn subscriber_count(&self) -> usize {
        self.subscribers.lock().map(|s| s.len()).unwrap_or(0)
    }

    pub(super) fn emit(&self, container_id: &str, pod_id: &str, kind: EventKind) {
        if self.subscriber_count() == 0 {
            return;
        }
        // The statuses as they are now, not when a subscriber reads the event.
        let containers: Vec<Container> = self
            .read_containers()
            .values()
            .filter(|c| c.pod_id == pod_id)
            .cloned()
            .collect();
        let event = ContainerEvent {
            container_id: container_id.to_string(),
            pod_id: pod_id.to_string(),
            kind,
            created_at: now_nanos(),
            pod: self.find_pod(pod_id).map(Arc::new),
            containers: Arc::new(containers),
        };
        let Ok(mut subs) = self.subscribers.lock() else {
            return;
        };
        subs.retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("a container event subscriber fell behind; dropping it");
                false
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        });
    }
}
