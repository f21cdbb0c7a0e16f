//! ContainerStats, ListContainerStats, PodSandboxStats, ListPodSandboxStats: the runtime's
//! usage samples as kubelet's CRI stats provider reads them.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use runtime::stats::{Sample, Usage};
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
    usage: &Sample,
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
        .map(|c| {
            // Created after the sample was taken: listed, with no usage yet (as containerd).
            let u = usage.containers.get(&c.id).copied().unwrap_or(Usage {
                timestamp: runtime::now_nanos(),
                ..Default::default()
            });
            container_stats(c, &u, mountpoint)
        })
        .collect()
}

/// The containers of each pod, grouped once per call.
pub fn by_pod(containers: &[Container]) -> HashMap<&str, Vec<&Container>> {
    let mut map: HashMap<&str, Vec<&Container>> = HashMap::new();
    for c in containers {
        map.entry(c.pod_id.as_str()).or_default().push(c);
    }
    map
}

/// A pod's usage is the sum of its containers', plus the CPU its removed containers used.
pub fn pod_stats(
    pod: &Pod,
    mine: &[&Container],
    usage: &Sample,
    mountpoint: &str,
) -> cri::PodSandboxStats {
    let mut total = Usage {
        timestamp: runtime::now_nanos(),
        cpu_ns: usage.removed_cpu_ns.get(&pod.id).copied().unwrap_or(0),
        ..Default::default()
    };
    let mut stats = Vec::new();
    for c in mine {
        let Some(u) = usage.containers.get(&c.id) else {
            continue;
        };
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

/// The cAdvisor metrics ListPodSandboxMetrics reports, so that kubelet's /metrics/cadvisor keeps
/// its meaning on darwin nodes: name, help, type. CRI metric values are unsigned integers, so
/// the seconds of `*_seconds*` metrics are whole seconds.
const METRICS: [(&str, &str, cri::MetricType); 8] = [
    (
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed in seconds.",
        cri::MetricType::Counter,
    ),
    (
        "container_memory_working_set_bytes",
        "Current working set in bytes.",
        cri::MetricType::Gauge,
    ),
    (
        "container_memory_rss",
        "Size of RSS in bytes.",
        cri::MetricType::Gauge,
    ),
    (
        "container_memory_usage_bytes",
        "Current memory usage in bytes, including all memory regardless of when it was accessed.",
        cri::MetricType::Gauge,
    ),
    (
        "container_spec_memory_limit_bytes",
        "Memory limit for the container.",
        cri::MetricType::Gauge,
    ),
    (
        "container_fs_usage_bytes",
        "Number of bytes that are consumed by the container on this filesystem.",
        cri::MetricType::Gauge,
    ),
    (
        "container_processes",
        "Number of processes running inside the container.",
        cri::MetricType::Gauge,
    ),
    (
        "container_start_time_seconds",
        "Start time of the container since unix epoch in seconds.",
        cri::MetricType::Gauge,
    ),
];

/// cAdvisor's labels for container series.
const LABELS: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

pub fn descriptors() -> Vec<cri::MetricDescriptor> {
    METRICS
        .iter()
        .map(|(name, help, _)| cri::MetricDescriptor {
            name: name.to_string(),
            help: help.to_string(),
            label_keys: LABELS.iter().map(|l| l.to_string()).collect(),
        })
        .collect()
}

pub fn pod_metrics(pod: &Pod, mine: &[&Container], usage: &Sample) -> cri::PodSandboxMetrics {
    let m = &pod.spec.metadata;
    let container_metrics = mine
        .iter()
        .filter(|c| c.state == runtime::ContainerState::Running)
        .filter_map(|c| {
            let u = usage.containers.get(&c.id)?;
            let labels = vec![
                c.name.clone(),
                c.id.clone(),
                if c.image_name.is_empty() {
                    c.image_id.clone()
                } else {
                    c.image_name.clone()
                },
                c.id.clone(),
                m.namespace.clone(),
                m.name.clone(),
            ];
            let values = [
                u.cpu_ns / 1_000_000_000,
                u.working_set_bytes,
                u.rss_bytes,
                u.working_set_bytes,
                c.process.limits.memory_bytes.unwrap_or(0),
                u.writable_bytes,
                u.processes,
                (c.started_at / 1_000_000_000).max(0) as u64,
            ];
            let metrics = METRICS
                .iter()
                .zip(values)
                .map(|((name, _, kind), v)| cri::Metric {
                    name: name.to_string(),
                    timestamp: u.timestamp,
                    metric_type: *kind as i32,
                    label_values: labels.clone(),
                    value: value(v),
                })
                .collect();
            Some(cri::ContainerMetrics {
                container_id: c.id.clone(),
                metrics,
            })
        })
        .collect();
    cri::PodSandboxMetrics {
        pod_sandbox_id: pod.id.clone(),
        metrics: vec![],
        container_metrics,
    }
}
