//! The two runtimes under test, each private to one temporary directory: containerd (with runc
//! and the CRI plugin) and darwin-cri. Everything started is stopped by pid on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

#[derive(Debug)]
pub struct Daemon {
    pub name: &'static str,
    pub socket: PathBuf,
    pub dir: PathBuf,
    child: Child,
}

impl Daemon {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// containerd 1.6 with the CRI plugin: its own root, state and socket under `dir`, the
    /// local registry as a plain-HTTP mirror of itself, `pause` as the sandbox image, and
    /// `restrict_oom_score_adj` (these machines lack CAP_SYS_RESOURCE).
    pub fn containerd(dir: &Path, registry: &str, pause: &str) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(dir.join("cni"))?;
        std::fs::write(
            dir.join("cni/10-bench.conf"),
            r#"{"cniVersion": "0.4.0", "name": "bench", "type": "bridge", "bridge": "cribench0",
"isGateway": true, "ipMasq": false,
"ipam": {"type": "host-local", "subnet": "10.88.77.0/24", "routes": [{"dst": "0.0.0.0/0"}]}}"#,
        )?;
        let d = dir.display();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{registry}"]
    endpoint = ["http://{registry}"]
"#
        );
        std::fs::write(dir.join("config.toml"), config)?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd (apt-get install containerd runc)")?;
        Self::wait(Daemon {
            name: "containerd",
            socket: dir.join("containerd.sock"),
            dir: dir.to_path_buf(),
            child,
        })
    }

    /// darwin-cri with its own root, state and socket under `dir`.
    pub fn darwin_cri(dir: &Path, binary: &Path, registry: &str) -> anyhow::Result<Daemon> {
        Self::darwin_cri_with(dir, binary, registry, "")
    }

    /// [`Daemon::darwin_cri`] with more `[runtime]` settings (`rootfs = "copy"`, say).
    pub fn darwin_cri_with(
        dir: &Path,
        binary: &Path,
        registry: &str,
        runtime: &str,
    ) -> anyhow::Result<Daemon> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "socket = \"{d}/cri.sock\"\nroot = \"{d}/root\"\nstate_dir = \"{d}/run\"\n[log]\nlevel = \"warn\"\n[runtime]\nallow_root = true\n{runtime}\n[image.registries.\"{registry}\"]\ninsecure = true\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("darwin-cri.log"))?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(dir.join("config.toml"))
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        Self::wait(Daemon {
            name: "darwin-cri",
            socket: dir.join("cri.sock"),
            dir: dir.to_path_buf(),
            child,
        })
    }

    fn wait(mut d: Daemon) -> anyhow::Result<Daemon> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !d.socket.exists() {
            if let Some(status) = d.child.try_wait()? {
                bail!(
                    "{} exited at start ({status}); see {}",
                    d.name,
                    d.dir.display()
                );
            }
            if Instant::now() > deadline {
                bail!("{} did not create {} in 30 s", d.name, d.socket.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    /// Processes that exist for containers besides the containers' own: containerd's shims
    /// and the pause processes below them; darwin-cri's monitors.
    pub fn per_container_processes(&self) -> Vec<i32> {
        let marker = match self.name {
            "containerd" => self.socket.display().to_string(),
            _ => self.dir.display().to_string(),
        };
        let mut found = Vec::new();
        for pid in all_pids() {
            let line = cmdline(pid);
            // A monitor started ahead says only `--wait`: its working directory is its bundle.
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            let ours = line.contains(&marker) || cwd.starts_with(&self.dir);
            let shim = ours && line.contains("containerd-shim");
            // `darwin-cri-monitor BUNDLE`, or `darwin-cri monitor BUNDLE` where it is missing.
            let monitor = ours
                && line
                    .split(' ')
                    .any(|w| w == "monitor" || w.ends_with("/darwin-cri-monitor"));
            if shim {
                found.push(pid);
                // The pause process is the sandbox's: the one that sleeps for ever.
                for child in children(pid) {
                    if cmdline(child).contains("2147483647") {
                        found.push(child);
                    }
                }
            } else if monitor {
                found.push(pid);
            }
        }
        found
    }
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shims (containerd) and monitors (darwin-cri) outlive their daemon by design.
        for pid in self.per_container_processes() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Container processes left (after an error): those whose root is below the directory.
        let dir = self.dir.display().to_string();
        for pid in all_pids() {
            let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
            if root.display().to_string().starts_with(&dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        // Mounts left below the directory (overlays, shm, sandbox files).
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut under: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&*self.dir.display().to_string()))
            .collect();
        under.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in under {
            let _ = platform::unmount(Path::new(m));
        }
    }
}
