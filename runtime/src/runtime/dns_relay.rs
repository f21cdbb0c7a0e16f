//! The mDNSResponder relay (crate::dns_proxy) started and stopped with each container.

use std::io;
use std::path::Path;

use super::Runtime;
use crate::dns_proxy::{DnsProxy, NAME, ROOT_DIR};

/// The relay's start and stop, by container: the runtime calls these around a container's run.
impl Runtime {
    /// Relays the host's mDNSResponder socket into the container's root, if one is configured.
    /// A failure leaves the container without name resolution, not without a start: it is
    /// logged.
    pub(crate) fn start_dns_proxy(&self, c: &crate::Container) {
        let Some(upstream) = &self.opts.mdns_socket else {
            return;
        };
        let (dir, name) = (ROOT_DIR, NAME);
        let started = (|| -> io::Result<DnsProxy> {
            // The image decides where /var/run leads (inside the root), but the directory is
            // opened component by component beneath the root's descriptor, never by a path a
            // container could swap meanwhile (issue #26, 9), and only on the root's own file
            // system (a volume there is the host's directory: no socket is made or removed in
            // it); the socket's own name is never followed.
            let fd = crate::fsutil::open_dir_in_root(&c.process.rootfs, Path::new(dir))?;
            DnsProxy::start(upstream, fd, name, &self.opts.root.join("sockets"))
        })();
        match started {
            Ok(proxy) => {
                if let Ok(mut proxies) = self.dns_proxies.lock() {
                    proxies.insert(c.id.clone(), proxy);
                }
            }
            Err(e) => {
                tracing::warn!(container = c.id, error = %e, "no DNS relay in the container root")
            }
        }
    }

    pub(crate) fn stop_dns_proxy(&self, id: &str) {
        let proxy = self.dns_proxies.lock().ok().and_then(|mut p| p.remove(id));
        drop(proxy);
    }
}
