//! `darwin-cri doctor` on hosts missing each prerequisite it checks, and the start-up refusal
//! of socket paths the OS cannot bind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use darwin_cri_tests::binary;

/// A scratch host: root, socket and config under one temp dir.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> anyhow::Result<Host> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("root"))?;
        std::fs::set_permissions(
            dir.path().join("root"),
            std::fs::Permissions::from_mode(0o700),
        )?;
        Ok(Host { dir })
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/cri.sock")
    }

    fn kubelet_config(&self, name: &str, endpoint: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
                 containerRuntimeEndpoint: {endpoint}\ncgroupsPerQOS: false\n\
                 featureGates:\n  PodAndContainerStatsFromCRI: true\n"
            ),
        )?;
        Ok(path)
    }

    /// Runs doctor with `config` (TOML) and kubelet's config; returns (exit code, output).
    fn doctor(&self, config: &str, socket: &Path, kubelet: &Path) -> anyhow::Result<(i32, String)> {
        let cfg = self.dir.path().join("darwin-cri.toml");
        std::fs::write(&cfg, config)?;
        let out = Command::new(binary())
            .arg("--config")
            .arg(&cfg)
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--state-dir")
            .arg(self.dir.path().join("run"))
            .arg("--socket")
            .arg(socket)
            .arg("doctor")
            .arg("--kubelet-config")
            .arg(kubelet)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.code().unwrap_or(-1), text))
    }
}

/// The output line of check `name` with status `tag` and the fix line under it.
fn finding(output: &str, tag: &str, name: &str) -> Option<String> {
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        if line.starts_with(tag) && line[4..].trim_start().starts_with(name) {
            let fix = lines.next().unwrap_or_default();
            return Some(format!("{line}\n{fix}"));
        }
    }
    None
}

#[test]
fn a_healthy_host_passes_and_each_missing_prerequisite_is_named_with_its_fix() -> anyhow::Result<()>
{
    let host = Host::new()?;
    let socket = host.socket();
    let kubelet = host.kubelet_config("kubelet.yaml", &format!("unix://{}", socket.display()))?;

    let (code, out) = host.doctor("", &socket, &kubelet)?;
    assert_eq!(code, 0, "{out}");
    for check in [
        "user",
        "chroot",
        "mount",
        "root fs",
        "socket paths",
        "permissions",
        "kubelet",
    ] {
        assert!(finding(&out, "ok", check).is_some(), "{check} ok:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");

    // bindfs that is not installed.
    let (code, out) = host.doctor(
        "[mounts]\nmechanism = \"bindfs\"\nbindfs_path = \"/nonexistent/bindfs\"\n",
        &socket,
        &kubelet,
    )?;
    assert_eq!(code, 1, "{out}");
    let f = finding(&out, "FAIL", "bindfs").expect(&out);
    assert!(
        f.contains("/nonexistent/bindfs") && f.contains("fix: apt-get install bindfs"),
        "{f}"
    );

    // bindfs that is there but cannot mount.
    let fake = host.dir.path().join("bindfs");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho 'fuse: device not found' >&2\nexit 1\n",
    )?;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))?;
    let (code, out) = host.doctor(
        &format!(
            "[mounts]\nmechanism = \"bindfs\"\nbindfs_path = {:?}\n",
            fake.display().to_string()
        ),
        &socket,
        &kubelet,
    )?;
    assert_eq!(code, 1, "{out}");
    let f = finding(&out, "FAIL", "mount").expect(&out);
    assert!(
        f.contains("fuse: device not found") && f.contains("fix:"),
        "{f}"
    );

    // A socket path over the limit.
    let long = host.dir.path().join("x".repeat(110)).join("cri.sock");
    let (code, out) = host.doctor("", &long, &kubelet)?;
    assert_eq!(code, 1, "{out}");
    let f = finding(&out, "FAIL", "socket paths").expect(&out);
    assert!(
        f.contains("limited to 107 bytes") && f.contains("103 on macOS"),
        "{f}"
    );

    // kubelet pointed at another runtime.
    let containerd =
        host.kubelet_config("containerd.yaml", "unix:///run/containerd/containerd.sock")?;
    let (code, out) = host.doctor("", &socket, &containerd)?;
    assert_eq!(code, 1, "{out}");
    let f = finding(&out, "FAIL", "kubelet").expect(&out);
    assert!(
        f.contains("containerd.sock")
            && f.contains(&format!(
                "fix: set containerRuntimeEndpoint: unix://{}",
                socket.display()
            )),
        "{f}"
    );

    // A root anyone may write to.
    std::fs::set_permissions(
        host.dir.path().join("root"),
        std::fs::Permissions::from_mode(0o777),
    )?;
    let (code, out) = host.doctor("", &socket, &kubelet)?;
    std::fs::set_permissions(
        host.dir.path().join("root"),
        std::fs::Permissions::from_mode(0o700),
    )?;
    assert_eq!(code, 1, "{out}");
    let f = finding(&out, "FAIL", "permissions").expect(&out);
    assert!(
        f.contains("writable by others") && f.contains("fix: chmod 700"),
        "{f}"
    );

    // A registry mirror nobody answers on is worth a warning, not a failure.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let (code, out) = host.doctor(
        &format!("[image.registries.\"registry.farm.local\"]\nmirrors = [\"http://{closed}\"]\n"),
        &socket,
        &kubelet,
    )?;
    assert_eq!(code, 0, "{out}");
    let f = finding(&out, "warn", "registry").expect(&out);
    assert!(
        f.contains(&format!("http://{closed}/v2/ is unreachable")),
        "{f}"
    );
    assert!(
        !host
            .dir
            .path()
            .join("root")
            .read_dir()?
            .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".doctor"))),
        "probes clean up"
    );
    Ok(())
}

#[test]
fn doctor_as_an_unprivileged_user_names_root_and_chroot() -> anyhow::Result<()> {
    // The binary and a root the user owns, readable by nobody (uid 65534).
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("darwin-cri");
    std::fs::copy(binary(), &bin)?;
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root)?;
    nix::unistd::chown(&root, Some(65534.into()), Some(65534.into()))?;
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .arg("--root")
        .arg(&root)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("run"))
        .arg("doctor")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let f = finding(&text, "FAIL", "user").expect(&text);
    assert!(
        f.contains("uid 65534") && f.contains("fix: run darwin-cri as root"),
        "{f}"
    );
    let f = finding(&text, "FAIL", "chroot").expect(&text);
    assert!(f.contains("refused") && f.contains("fix:"), "{f}");
    Ok(())
}

#[test]
fn serve_refuses_a_socket_path_over_the_limit_and_names_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let long = dir.path().join("y".repeat(100)).join("cri.sock");
    let out = Command::new(binary())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state-dir")
        .arg(dir.path().join("run"))
        .arg("--socket")
        .arg(&long)
        .arg("serve")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&long.display().to_string()) && err.contains("limited to 107 bytes"),
        "{err}"
    );
    // The monitors' sockets live under state_dir: a deep one is refused as well.
    let deep = dir.path().join("z".repeat(80));
    let out = Command::new(binary())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state-dir")
        .arg(&deep)
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .arg("serve")
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("state_dir (monitor sockets)"),
        "{err}"
    );
    Ok(())
}

#[test]
fn doctor_reports_the_kernels_landlock_abi_and_what_it_covers() -> anyhow::Result<()> {
    let Some(abi) = platform::landlock_abi() else {
        return Ok(());
    };
    let host = Host::new()?;
    let socket = host.socket();
    let kubelet = host.kubelet_config("kubelet.yaml", &format!("unix://{}", socket.display()))?;
    let (_, out) = host.doctor("", &socket, &kubelet)?;
    let lost = platform::landlock_shortfall(abi);
    let line = if lost.is_empty() {
        finding(&out, "ok", "landlock").expect(&out)
    } else {
        // Short of the policy: confined containers are refused, the fix named.
        let f = finding(&out, "FAIL", "landlock").expect(&out);
        assert!(f.contains("landlock_best_effort"), "{f}");
        f
    };
    assert!(line.contains(&format!("Landlock ABI {abi}")), "{line}");
    if lost.is_empty() {
        assert!(
            line.contains("signal") && line.contains("truncation"),
            "{line}"
        );
    }
    // Best effort chosen: a warning naming what is lost, never a failure.
    let (_, out) = host.doctor(
        "[runtime]\nlandlock_best_effort = true\n",
        &socket,
        &kubelet,
    )?;
    let tag = if lost.is_empty() { "ok" } else { "warn" };
    assert!(finding(&out, tag, "landlock").is_some(), "{out}");
    Ok(())
}
