//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: the runtime's
//! usage samples as kubelet's CRI stats provider reads them.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use runtime::stats::Usage;
use runtime::{Container, Pod};

use super::sandbox::{hash, labels_match};

fn value(v: u64) -> Option<cri::UInt64Value> {
    Some(cri::UInt64Value { value: v })
}

fn cpu(u: &Usage) -> cri::CpuUsage {
    cri::CpuUsage {
        timestamp: u.timestamp,
        usage_core_nano_seconds: value(u.cpu_ns),
        usage_nano_cores: value(u.nano_cores),
    }
}

fn memory(u: &Usage, limit: Option<u64>) -> cri::MemoryUsage {
    cri::MemoryUsage {
        timestamp: u.timestamp,
        working_set_bytes: value(u.working_set_bytes),
        available_bytes: limit.map(|l| cri::UInt64Value {
            value: l.saturating_sub(u.working_set_bytes),
        }),
        usage_bytes: value(u.working_set_bytes),
        rss_bytes: value(u.rss_bytes),
        page_faults: value(u.page_faults),
        major_page_faults: value(u.major_page_faults),
    }
}

pub fn container_stats(c: &Container, u: &Usage, mountpoint: &str) -> cri::ContainerStats {
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: c.id.clone(),
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt: c.attempt,
            }),
            labels: hash(&c.spec.labels),
            annotations: hash(&c.spec.annotations),
        }),
        cpu: Some(cpu(u)),
        memory: Some(memory(u, c.process.limits.memory_bytes)),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: u.timestamp,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: mountpoint.to_string(),
            }),
            used_bytes: value(u.writable_bytes),
            inodes_used: value(u.writable_inodes),
        }),
        swap: None,
    }
}

pub fn list_container_stats(
    containers: &[Container],
    usage: &HashMap<String, Usage>,
    filter: Option<&cri::ContainerStatsFilter>,
    mountpoint: &str,
) -> Vec<cri::ContainerStats> {
    containers
        .iter()
        .filter(|c| match filter {
            None => true,
            Some(f) => {
                (f.id.is_empty() || c.id.starts_with(&f.id))
                    && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                    && labels_match(&c.spec.labels, &f.label_selector)
            }
        })
        .filter_map(|c| usage.get(&c.id).map(|u| container_stats(c, u, mountpoint)))
        .collect()
}

/// A pod's usage is the sum of its containers'.
pub fn pod_stats(
    pod: &Pod,
    containers: &[Container],
    usage: &HashMap<String, Usage>,
    mountpoint: &str,
) -> cri::PodSandboxStats {
    let mine: Vec<&Container> = containers.iter().filter(|c| c.pod_id == pod.id).collect();
    let mut total = Usage {
        timestamp: runtime::now_nanos(),
        ..Default::default()
    };
    let mut stats = Vec::new();
    for c in mine {
        let Some(u) = usage.get(&c.id) else { continue };
        total.timestamp = u.timestamp;
        total.cpu_ns += u.cpu_ns;
        total.nano_cores += u.nano_cores;
        total.working_set_bytes += u.working_set_bytes;
        total.rss_bytes += u.rss_bytes;
        total.page_faults += u.page_faults;
        total.major_page_faults += u.major_page_faults;
        total.processes += u.processes;
        stats.push(container_stats(c, u, mountpoint));
    }
    let m = &pod.spec.metadata;
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: pod.id.clone(),
            metadata: Some(cri::PodSandboxMetadata {
                name: m.name.clone(),
                uid: m.uid.clone(),
                namespace: m.namespace.clone(),
                attempt: m.attempt,
            }),
            labels: hash(&pod.spec.labels),
            annotations: hash(&pod.spec.annotations),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cpu(&total)),
            memory: Some(memory(&total, None)),
            network: None,
            process: Some(cri::ProcessUsage {
                timestamp: total.timestamp,
                process_count: value(total.processes),
            }),
            containers: stats,
        }),
        windows: None,
    }
}
