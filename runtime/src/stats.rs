//! Container and pod statistics from the process table, for kubelet's CRI stats (a darwin
//! kubelet has no cAdvisor: every pod and container figure comes from here).
//!
//! One sample walks the process table once for every container, and is shared by every caller
//! for `stats_interval`, so ListContainerStats, PodSandboxStats and metrics scrapes cost one
//! walk per interval however often they come. A container's usage is that of its whole process
//! tree: the processes below its monitor (orphans come to it as a subreaper on Linux).
//!
//! CPU is cumulative and monotonic even as processes come and go: a process that exited and
//! was waited for has its CPU time in its parent's children-time, which is counted, up to the
//! monitor's own children-time for the ones it reaped; and a sample never goes below the last.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::model::{Container, ContainerState, now_nanos};
use crate::platform::{self, ProcInfo, ProcUsage};

/// How long a writable-layer size stays valid: walking a big root is not free, and kubelet
/// asks for it every 10 to 15 s.
const DISK_TTL: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub timestamp: i64,
    /// Cumulative CPU time of the container's processes.
    pub cpu_ns: u64,
    /// CPU use over the last sampling interval, in billionths of a core.
    pub nano_cores: u64,
    /// Memory the tree holds, shared pages divided (PSS / physical footprint): the working set.
    pub working_set_bytes: u64,
    /// Sum of the processes' resident sets.
    pub rss_bytes: u64,
    pub page_faults: u64,
    pub major_page_faults: u64,
    pub processes: u64,
    /// The writable layer: the overlay upper directory, or the whole copied root.
    pub writable_bytes: u64,
    pub writable_inodes: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Sampler {
    taken: Option<Instant>,
    usage: std::sync::Arc<HashMap<String, Usage>>,
    disk: HashMap<String, (Instant, u64, u64)>,
}

/// Bytes (allocated blocks) and inodes below `dir`, not following symlinks or crossing mounts.
fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let (mut bytes, mut inodes) = (top.blocks() * 512, 1);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            bytes += m.blocks() * 512;
            inodes += 1;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

impl Sampler {
    pub fn fresh(&self, interval: Duration) -> Option<std::sync::Arc<HashMap<String, Usage>>> {
        self.taken
            .filter(|t| t.elapsed() < interval)
            .map(|_| std::sync::Arc::clone(&self.usage))
    }

    /// Takes a new sample of `containers`. Blocking (reads the process table).
    pub fn sample(&mut self, containers: &[Container]) -> std::sync::Arc<HashMap<String, Usage>> {
        let table = platform::process_usage_table().unwrap_or_default();
        let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
        let mut index: HashMap<i32, usize> = HashMap::new();
        for (i, (p, _)) in table.iter().enumerate() {
            children.entry(p.ppid).or_default().push(i);
            index.insert(p.pid, i);
        }
        let now = now_nanos();
        let mut out = HashMap::with_capacity(containers.len());
        for c in containers {
            let prev = self.usage.get(&c.id).copied().unwrap_or_default();
            let mut u = Usage {
                timestamp: now,
                cpu_ns: prev.cpu_ns,
                ..Default::default()
            };
            if c.state == ContainerState::Running {
                measure_tree(c, &table, &children, &index, &mut u);
                // Never below the last sample: a process between exit and reaping may be
                // briefly out of every count.
                u.cpu_ns = u.cpu_ns.max(prev.cpu_ns);
                if prev.timestamp > 0 && now > prev.timestamp {
                    let spent = (u.cpu_ns - prev.cpu_ns) as u128;
                    u.nano_cores = (spent * 1_000_000_000 / (now - prev.timestamp) as u128) as u64;
                }
            }
            let writable = c.dir.join("upper");
            let writable = if writable.is_dir() {
                writable
            } else {
                c.process.rootfs.clone()
            };
            let (bytes, inodes) = match self.disk.get(&c.id) {
                Some((at, b, i)) if at.elapsed() < DISK_TTL => (*b, *i),
                _ => {
                    let (b, i) = disk_usage(&writable);
                    self.disk.insert(c.id.clone(), (Instant::now(), b, i));
                    (b, i)
                }
            };
            u.writable_bytes = bytes;
            u.writable_inodes = inodes;
            out.insert(c.id.clone(), u);
        }
        self.disk.retain(|id, _| out.contains_key(id));
        self.usage = std::sync::Arc::new(out);
        self.taken = Some(Instant::now());
        std::sync::Arc::clone(&self.usage)
    }
}

fn measure_tree(
    c: &Container,
    table: &[(ProcInfo, ProcUsage)],
    children: &HashMap<i32, Vec<usize>>,
    index: &HashMap<i32, usize>,
    u: &mut Usage,
) {
    // The monitor's own CPU is the runtime's, not the container's; its children-time is the
    // container's processes it reaped.
    let (root, mut cpu) = match index.get(&c.monitor_pid).map(|i| &table[*i]) {
        Some((p, usage)) if c.monitor_pid > 0 && p.alive => (c.monitor_pid, usage.children_cpu_ns),
        _ => (c.pid, 0),
    };
    let mut stack = vec![root];
    let mut seen = 0usize;
    if root == c.pid
        && let Some(i) = index.get(&c.pid)
    {
        add(&table[*i], &mut cpu, u);
        seen += 1;
    }
    while let Some(pid) = stack.pop() {
        for i in children.get(&pid).into_iter().flatten() {
            let entry = &table[*i];
            add(entry, &mut cpu, u);
            seen += 1;
            stack.push(entry.0.pid);
        }
    }
    u.cpu_ns = cpu;
    u.processes = seen as u64;
}

fn add((p, usage): &(ProcInfo, ProcUsage), cpu: &mut u64, u: &mut Usage) {
    *cpu += usage.cpu_ns + usage.children_cpu_ns;
    if !p.alive {
        return;
    }
    u.rss_bytes += usage.rss_bytes;
    u.working_set_bytes += platform::rss_bytes(p.pid).unwrap_or(usage.rss_bytes);
    u.page_faults += usage.minor_faults + usage.major_faults;
    u.major_page_faults += usage.major_faults;
}
