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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::model::{Container, ContainerState, now_nanos};
use platform::{ProcInfo, ProcUsage};

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

/// One statistics sample.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Usage by container id.
    pub containers: HashMap<String, Usage>,
    /// By pod id: CPU of the pod's containers that have been removed, so that a pod's
    /// cumulative CPU does not drop when kubelet garbage-collects a dead container.
    pub removed_cpu_ns: HashMap<String, u64>,
    /// The containers that were running when the sample was taken.
    pub running: std::collections::HashSet<String>,
}

impl Sample {
    /// Whether the sample has a figure for each of `containers` as it is now: a container
    /// created or started after the sample would otherwise be missing from ListContainerStats,
    /// or be reported with no CPU, until the next interval.
    pub fn covers(&self, containers: &[Container]) -> bool {
        containers.iter().all(|c| {
            self.containers.contains_key(&c.id)
                && (c.state != ContainerState::Running || self.running.contains(&c.id))
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Sampler {
    taken: Option<Instant>,
    sample: Arc<Sample>,
    /// The pod of each container seen, to credit a removed container's CPU to its pod.
    pods: HashMap<String, String>,
    /// CPU of removed containers by pod, until the pod goes.
    removed_cpu_ns: HashMap<String, u64>,
    disk: HashMap<String, (Instant, u64, u64)>,
}

/// Bytes (allocated blocks) and inodes below `dir`, not following symlinks or crossing mounts.
/// With `changed_after` (nanoseconds), only entries whose status changed after that instant
/// count: in a root cloned or copied from the image, those are what the container wrote.
fn disk_usage(dir: &Path, changed_after: Option<i64>) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = top.dev();
    let counts = |m: &std::fs::Metadata| match changed_after {
        Some(t) => {
            m.ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(m.ctime_nsec())
                > t
        }
        None => true,
    };
    let (mut bytes, mut inodes) = if counts(&top) {
        (top.blocks() * 512, 1)
    } else {
        (0, 0)
    };
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
            if counts(&m) {
                bytes += m.blocks() * 512;
                inodes += 1;
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

impl Sampler {
    /// The last sample if it is younger than `interval` and covers `containers`.
    pub fn fresh(&self, interval: Duration, containers: &[Container]) -> Option<Arc<Sample>> {
        self.taken
            .filter(|t| t.elapsed() < interval && self.sample.covers(containers))
            .map(|_| Arc::clone(&self.sample))
    }

    /// A removed pod's history is no longer needed.
    pub fn forget_pod(&mut self, pod_id: &str) {
        self.removed_cpu_ns.remove(pod_id);
        self.pods.retain(|_, pod| pod != pod_id);
    }

    pub fn last(&self) -> Arc<Sample> {
        Arc::clone(&self.sample)
    }

    /// Takes a new sample of `containers`. Blocking (reads the process table).
    pub fn sample(&mut self, containers: &[Container]) -> Arc<Sample> {
        let table = platform::process_usage_table().unwrap_or_default();
        let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
        let mut index: HashMap<i32, usize> = HashMap::new();
        for (i, (p, _)) in table.iter().enumerate() {
            children.entry(p.ppid).or_default().push(i);
            index.insert(p.pid, i);
        }
        let now = now_nanos();
        // Rates use the monotonic clock: a wall-clock step must not distort them.
        let elapsed = self.taken.map(|t| t.elapsed().as_nanos()).unwrap_or(0);
        let prev = Arc::clone(&self.sample);
        let mut out = Sample {
            containers: HashMap::with_capacity(containers.len()),
            removed_cpu_ns: HashMap::new(),
            running: Default::default(),
        };
        for c in containers {
            self.pods.insert(c.id.clone(), c.pod_id.clone());
            let last = prev.containers.get(&c.id).copied().unwrap_or_default();
            let mut u = Usage {
                timestamp: now,
                cpu_ns: last.cpu_ns.max(c.final_cpu_ns),
                ..Default::default()
            };
            if c.state == ContainerState::Running {
                out.running.insert(c.id.clone());
                measure_tree(c, &table, &children, &index, &mut u);
                // Never below the last sample: a process between exit and reaping may be
                // briefly out of every count.
                u.cpu_ns = u.cpu_ns.max(last.cpu_ns);
                if last.timestamp > 0 && elapsed > 0 {
                    let spent = (u.cpu_ns - last.cpu_ns) as u128;
                    u.nano_cores = (spent * 1_000_000_000 / elapsed) as u64;
                }
            }
            let upper = c.dir.join("upper");
            let (dir, changed_after) = if upper.is_dir() {
                (upper, None)
            } else {
                (c.process.rootfs.clone(), Some(c.created_at))
            };
            let (bytes, inodes) = match self.disk.get(&c.id) {
                Some((at, b, i)) if at.elapsed() < DISK_TTL => (*b, *i),
                _ => {
                    let (b, i) = disk_usage(&dir, changed_after);
                    self.disk.insert(c.id.clone(), (Instant::now(), b, i));
                    (b, i)
                }
            };
            u.writable_bytes = bytes;
            u.writable_inodes = inodes;
            out.containers.insert(c.id.clone(), u);
        }
        for (id, usage) in &prev.containers {
            if !out.containers.contains_key(id)
                && let Some(pod) = self.pods.remove(id)
            {
                *self.removed_cpu_ns.entry(pod).or_default() += usage.cpu_ns;
            }
        }
        out.removed_cpu_ns = self.removed_cpu_ns.clone();
        self.disk.retain(|id, _| out.containers.contains_key(id));
        self.sample = Arc::new(out);
        self.taken = Some(Instant::now());
        Arc::clone(&self.sample)
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
    // A live process's own time, exactly (the table's is in clock ticks on Linux).
    let own = if p.alive {
        platform::process_cpu_ns(p.pid).unwrap_or(usage.cpu_ns)
    } else {
        usage.cpu_ns
    };
    *cpu += own + usage.children_cpu_ns;
    if !p.alive {
        return;
    }
    u.rss_bytes += usage.rss_bytes;
    u.working_set_bytes += platform::rss_bytes(p.pid).unwrap_or(usage.rss_bytes);
    u.page_faults += usage.minor_faults + usage.major_faults;
    u.major_page_faults += usage.major_faults;
}
