//! The runtime's and the network's readiness, as the CRI Status reports them to kubelet, and the
//! pod CIDR kubelet hands over in UpdateRuntimeConfig (issue #26, 16).

use super::*;

/// Below this many free bytes (or with no free inode) the root's file system counts as full:
/// no container root, log or snapshot can be written, so the runtime is not ready.
pub const ROOT_FULL_BYTES: u64 = 1 << 20;

/// One condition that is not met: a CamelCase reason and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

/// What [`Runtime::health`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Why containers cannot run here now (RuntimeReady false); empty: ready.
    pub runtime: Vec<Problem>,
    /// Why pods cannot be reached (NetworkReady false); empty: ready.
    pub network: Vec<Problem>,
    /// Whether the root's file system is mounted nosuid: a setuid file kept in a container's
    /// root (`image.keep_setuid`, a copied root) is then powerless. Reported, not required:
    /// macOS volumes are not nosuid by default.
    pub root_nosuid: bool,
}

fn problem(reason: &str, message: String) -> Problem {
    Problem {
        reason: reason.into(),
        message,
    }
}

impl Runtime {
    /// The conditions kubelet reads from Status, measured now.
    pub fn health(&self) -> Health {
        let mut health = Health::default();
        // Monitors: every container start runs one.
        let exe = self.opts.monitor.exe();
        match std::fs::metadata(exe) {
            Ok(m)
                if m.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0 => {}
            Ok(_) => health.runtime.push(problem(
                "MonitorCannotStart",
                format!(
                    "the monitor {} is not an executable file: no container can start; \
                     reinstall darwin-cri-monitor beside darwin-cri",
                    exe.display()
                ),
            )),
            Err(e) => health.runtime.push(problem(
                "MonitorCannotStart",
                format!(
                    "the monitor {}: {e}: no container can start; reinstall darwin-cri-monitor \
                     beside darwin-cri",
                    exe.display()
                ),
            )),
        }
        if let Some(e) = self
            .monitor_start_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            health.runtime.push(problem(
                "MonitorCannotStart",
                format!("the last container start could not run its monitor: {e}"),
            ));
        }
        // The root's file system: writable, not full.
        match nix::sys::statvfs::statvfs(&self.opts.root) {
            Ok(st) => {
                use nix::sys::statvfs::FsFlags;
                // fsblkcnt_t and c_ulong are u64 on Linux, u32 and u64 on macOS.
                let free = widen(st.blocks_available()).saturating_mul(widen(st.fragment_size()));
                if st.flags().contains(FsFlags::ST_RDONLY) {
                    health.runtime.push(problem(
                        "RootReadOnly",
                        format!(
                            "darwin-cri's root {} is on a read-only file system: no container \
                             root can be made",
                            self.opts.root.display()
                        ),
                    ));
                }
                if free < ROOT_FULL_BYTES || (st.files() > 0 && st.files_available() == 0) {
                    health.runtime.push(problem(
                        "RootFilesystemFull",
                        format!(
                            "darwin-cri's root {} has {free} bytes and {} inodes free: no \
                             container root, log or image can be written; free space there \
                             (remove unused images: crictl rmi --prune)",
                            self.opts.root.display(),
                            st.files_available()
                        ),
                    ));
                }
                health.root_nosuid = st.flags().contains(FsFlags::ST_NOSUID);
            }
            Err(e) => health.runtime.push(problem(
                "RootUnreadable",
                format!(
                    "cannot read darwin-cri's root {}: {e}",
                    self.opts.root.display()
                ),
            )),
        }
        // The network: pods report the node's address, which must be one the node has now.
        let ip: IpAddr = match self.node_ip.parse() {
            Ok(ip) => ip,
            Err(_) => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        };
        if ip.is_loopback() {
            health.network.push(problem(
                "NoNodeAddress",
                "no network interface other than loopback was up when darwin-cri started: \
                 pods report 127.0.0.1, which the cluster cannot reach; bring the network \
                 up, set runtime.node_ip, and restart darwin-cri"
                    .into(),
            ));
        } else if !node_has_address(ip) {
            health.network.push(problem(
                "NodeAddressGone",
                format!(
                    "the node address {ip} that pods report is on no interface that is up now; \
                     bring it back, or set runtime.node_ip and restart darwin-cri"
                ),
            ));
        }
        health
    }

    /// Records a monitor that could not be started (`None`: one just was).
    pub(super) fn note_monitor_start(&self, error: Option<String>) {
        *self
            .monitor_start_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    /// Keeps the pod CIDR kubelet sends (UpdateRuntimeConfig). Pods share the host's network
    /// and report the node's address, so no address is taken from it: it is kept and reported
    /// (verbose Status) so that an operator can see what kubelet assigned. A value that is not
    /// a CIDR is refused.
    pub fn set_pod_cidr(&self, cidr: &str) -> Result<()> {
        let cidr = cidr.trim();
        // One range per family, comma-separated, on a dual-stack node.
        let valid = cidr.is_empty()
            || cidr.split(',').all(|one| {
                one.trim().split_once('/').is_some_and(|(ip, bits)| {
                    ip.parse::<IpAddr>().is_ok_and(|ip| {
                        let max = if ip.is_ipv4() { 32 } else { 128 };
                        bits.parse::<u8>().is_ok_and(|b| b <= max)
                    })
                })
            });
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "pod CIDR {cidr:?} is not an address range such as 10.244.1.0/24"
            )));
        }
        *self.pod_cidr.lock().unwrap_or_else(|p| p.into_inner()) = cidr.to_string();
        Ok(())
    }

    /// The pod CIDR kubelet last sent; "" before it did.
    pub fn pod_cidr(&self) -> String {
        self.pod_cidr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A count of the OS's own width as u64 (a cast would be the same type on one OS and not
/// the other).
fn widen<T: Into<u64>>(n: T) -> u64 {
    n.into()
}

/// Whether an interface that is up holds `ip`.
fn node_has_address(ip: IpAddr) -> bool {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return true; // cannot tell: not reported as a problem
    };
    addrs
        .filter(|a| a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP))
        .filter_map(|a| a.address)
        .any(|addr| {
            addr.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())) == Some(ip)
                || addr.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())) == Some(ip)
        })
}
