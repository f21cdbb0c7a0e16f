//! Confinement: a pod cannot harm its Mac, even as root. On the Linux twin: root refused unless
//! allowed, Landlock (file access, signal scoping), a seccomp filter of host-global calls,
//! capabilities, no_new_privs, the root mounted nosuid, setuid bits cleared at unpack.
//!
//! Every probe is a call that would change nothing if it got through (sethostname to the current
//! name, the clock set to the current time, reboot with a bad magic number, ...), made by
//! `syscall-probe` inside the container. A test that finds the host changed restores it first.

use std::path::{Path, PathBuf};
use std::process::Command;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

/// A directory holding `syscall-probe` and everything it loads (the host's dynamic loader and
/// libraries), to mount read-only at /probe; the command that runs a probe there.
fn probe_volume(dir: &Path) -> anyhow::Result<(PathBuf, Vec<String>)> {
    let bin = binary().with_file_name("syscall-probe");
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: cargo build -p darwin-cri-tests --bin syscall-probe",
        bin.display()
    );
    let vol = dir.join("probe");
    std::fs::create_dir_all(&vol)?;
    std::fs::copy(&bin, vol.join("syscall-probe"))?;
    let ldd = Command::new("ldd").arg(&bin).output()?;
    let mut loader = None;
    for path in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let name = Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        std::fs::copy(path, vol.join(&name))?;
        if name.starts_with("ld-") {
            loader = Some(name);
        }
    }
    let loader = loader.ok_or_else(|| anyhow::anyhow!("no dynamic loader in ldd's output"))?;
    Ok((
        vol,
        vec![
            format!("/probe/{loader}"),
            "--library-path".into(),
            "/probe".into(),
            "/probe/syscall-probe".into(),
        ],
    ))
}

fn mount(container_path: &str, host: &Path, readonly: bool) -> cri::Mount {
    cri::Mount {
        container_path: container_path.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    }
}

/// A security context as a Linux kubelet sends it.
fn security(f: impl FnOnce(&mut cri::LinuxContainerSecurityContext)) -> cri::LinuxContainerConfig {
    let mut sc = cri::LinuxContainerSecurityContext::default();
    f(&mut sc);
    cri::LinuxContainerConfig {
        security_context: Some(sc),
        ..Default::default()
    }
}

/// Runs probe `args` in container `id`: its one line of output.
async fn probe(rt: &mut Rt, id: &str, cmd: &[String], args: &[&str]) -> anyhow::Result<String> {
    let mut full: Vec<&str> = cmd.iter().map(String::as_str).collect();
    full.extend_from_slice(args);
    let r = exec(rt, id, &full, 20).await?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&r.stdout).trim(),
        String::from_utf8_lossy(&r.stderr).trim()
    ))
}

/// A running `sleep` container with the probe mounted at /probe, and `extra` applied to its
/// config.
async fn probing_container(
    rt: &mut Rt,
    server: &Server,
    pod: &str,
    name: &str,
    extra: impl FnOnce(&mut cri::ContainerConfig),
) -> anyhow::Result<(String, Vec<String>)> {
    let (vol, cmd) = probe_volume(&server.dir.path().join(name))?;
    let mut config = container_config(name, "sleep 1000");
    config.mounts.push(mount("/probe", &vol, true));
    extra(&mut config);
    let id = create(rt, pod, config).await?;
    start(rt, &id).await?;
    Ok((id, cmd))
}

/// The host's name and clock are what they were; if not, they are set back before failing.
struct HostGuard {
    hostname: std::ffi::OsString,
}

impl HostGuard {
    fn new() -> anyhow::Result<HostGuard> {
        Ok(HostGuard {
            hostname: nix::unistd::gethostname()?,
        })
    }

    fn check(&self) {
        let now = nix::unistd::gethostname().unwrap_or_default();
        if now != self.hostname {
            let _ = nix::unistd::sethostname(&self.hostname);
            panic!(
                "the host was renamed to {now:?} (set back to {:?})",
                self.hostname
            );
        }
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        if nix::unistd::gethostname().unwrap_or_default() != self.hostname {
            let _ = nix::unistd::sethostname(&self.hostname);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn root_is_refused_unless_allowed_and_the_annotation_chooses_a_user() -> anyhow::Result<()> {
    let server = Server::start_with_config("[runtime]\nallow_root = false\n").await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "norooot").await?;
    // busybox's image has no USER: root, refused with the fixes a darwin kubelet can use.
    let e = create(&mut rt, &pod, container_config("c", "true"))
        .await
        .expect_err("root refused");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    for fix in [
        "darwin-cri.io/run-as-user",
        "allow_root_namespaces",
        "\"c\"",
    ] {
        assert!(e.message().contains(fix), "{fix}: {}", e.message());
    }
    // A Linux kubelet is told about runAsUser.
    let mut linux = container_config("l", "true");
    linux.linux = Some(security(|_| {}));
    let e = create(&mut rt, &pod, linux)
        .await
        .expect_err("root refused");
    assert!(e.message().contains("runAsUser"), "{}", e.message());
    // The annotation chooses a non-root user from the image.
    let mut annotated = container_config("a", "id -u; id -un");
    annotated
        .annotations
        .insert("darwin-cri.io/run-as-user".into(), "app".into());
    let id = create(&mut rt, &pod, annotated).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, std::time::Duration::from_secs(10)).await?;
    assert_eq!(s.exit_code, 0);
    let log = std::fs::read_to_string(&s.log_path)?;
    assert!(log.contains(" 1000\n") && log.contains(" app\n"), "{log}");
    // ... and never root.
    let mut root = container_config("r", "true");
    root.annotations
        .insert("darwin-cri.io/run-as-user".into(), "root".into());
    let e = create(&mut rt, &pod, root).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    // A darwin kubelet sends the pod's runAsUser in the pod's Linux section only: the
    // containers run as that user.
    let logs = server.dir.path().join("logs/podlevel");
    std::fs::create_dir_all(&logs)?;
    let mut pod_config = pod_config("podlevel", &logs);
    pod_config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let podlevel = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    let id = create(&mut rt, &podlevel, container_config("u", "id -u")).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, std::time::Duration::from_secs(10)).await?;
    assert!(std::fs::read_to_string(&s.log_path)?.contains(" 1000\n"));
    // A privileged container may run as root.
    let mut privileged = container_config("p", "true");
    privileged.linux = Some(security(|sc| sc.privileged = true));
    create(&mut rt, &pod, privileged).await?;
    drop(server);

    // Namespaces the operator allows.
    let server = Server::start_with_config(
        "[runtime]\nallow_root = false\nallow_root_namespaces = [\"default\"]\n",
    )
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "allowed").await?;
    create(&mut rt, &pod, container_config("c", "true")).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn root_in_a_confined_container_cannot_change_the_host() -> anyhow::Result<()> {
    let guard = HostGuard::new()?;
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "harmless").await?;
    let scratch = server.dir.path().join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let (id, cmd) = probing_container(&mut rt, &server, &pod, "c", |c| {
        c.mounts.push(mount("/scratch", &scratch, false));
    })
    .await?;
    for (call, extra) in [
        ("sethostname", None),
        ("clock_settime", None),
        ("reboot", None),
        ("init_module", None),
        ("mount", Some("/scratch")),
    ] {
        let mut args = vec![call];
        args.extend(extra);
        let out = probe(&mut rt, &id, &cmd, &args).await?;
        guard.check();
        assert_eq!(out, "errno 1", "{call} is refused (EPERM)");
    }
    assert!(mounts_under(&scratch).is_empty(), "no tmpfs got through");

    // The same calls from a privileged container get through (so the refusals above come from
    // the confinement): reboot and init_module fail on their bad arguments instead.
    let (privileged, cmd) = probing_container(&mut rt, &server, &pod, "p", |c| {
        c.linux = Some(security(|sc| sc.privileged = true));
    })
    .await?;
    assert_eq!(
        probe(&mut rt, &privileged, &cmd, &["sethostname"]).await?,
        "allowed"
    );
    guard.check();
    assert_eq!(
        probe(&mut rt, &privileged, &cmd, &["reboot"]).await?,
        format!("errno {}", nix::libc::EINVAL)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_confined_container_reaches_nothing_outside_its_root_and_volumes() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "walls").await?;
    // A fake credentials file on the host, outside the root and the volumes.
    let secret = server.dir.path().join("credentials");
    std::fs::write(&secret, "hunter2")?;
    let outsider = Command::new("sleep").arg("1000").spawn()?;
    let outsider_pid = outsider.id().to_string();
    let _reap = KillOnDrop(outsider);
    let (id, cmd) = probing_container(&mut rt, &server, &pod, "c", |_| {}).await?;
    let secret_path = secret.display().to_string();
    let escaped = probe(&mut rt, &id, &cmd, &["escape", &secret_path]).await?;
    assert!(
        !escaped.contains("hunter2"),
        "chroot and .. walking read the host file: {escaped}"
    );
    assert_eq!(escaped, format!("errno {}", nix::libc::EACCES));
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["kill", &outsider_pid]).await?,
        "errno 1",
        "a signal to a host process"
    );
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["ptrace", &outsider_pid]).await?,
        "errno 1",
        "ptrace of a host process"
    );
    // Device nodes cannot be made in the root, not even by root (Landlock: EACCES).
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["mknod", "/tmp/mem"]).await?,
        format!("errno {}", nix::libc::EACCES)
    );
    // The container's own processes are its own: a signal to itself goes through.
    let r = exec(
        &mut rt,
        &id,
        &["sh", "-c", "sleep 100 & kill $!; echo $?"],
        10,
    )
    .await?;
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "0");
    Ok(())
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_security_context_is_honoured() -> anyhow::Result<()> {
    let server =
        Server::start_with_config("[runtime]\nallowed_capabilities = [\"SYS_TIME\"]\n").await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "context").await?;
    let data = server.dir.path().join("data");
    std::fs::create_dir_all(&data)?;

    // readonly_rootfs: the root refuses writes, a writable volume takes them.
    let (ro, _) = probing_container(&mut rt, &server, &pod, "ro", |c| {
        c.mounts.push(mount("/data", &data, false));
        c.linux = Some(security(|sc| sc.readonly_rootfs = true));
    })
    .await?;
    let r = exec(&mut rt, &ro, &["sh", "-c", "echo x > /written"], 10).await?;
    assert_ne!(r.exit_code, 0, "a write in a read-only root");
    let r = exec(&mut rt, &ro, &["sh", "-c", "echo x > /data/written"], 10).await?;
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    assert!(data.join("written").exists());
    let r = exec(&mut rt, &ro, &["sh", "-c", "echo x > /dev/null"], 10).await?;
    assert_eq!(r.exit_code, 0, "/dev/null stays writable");

    // Capabilities: containerd's defaults for root, minus a drop, plus an add.
    let (caps, cmd) = probing_container(&mut rt, &server, &pod, "caps", |c| {
        c.linux = Some(security(|sc| {
            sc.capabilities = Some(cri::Capability {
                add_capabilities: vec!["SYS_TIME".into()],
                drop_capabilities: vec!["CAP_CHOWN".into(), "NET_RAW".into()],
                ..Default::default()
            })
        }));
    })
    .await?;
    let out = probe(&mut rt, &caps, &cmd, &["caps"]).await?;
    let mask = u64::from_str_radix(out.trim_start_matches("caps "), 16)?;
    let has = |n: u32| mask & (1 << n) != 0;
    assert!(!has(0) && !has(13), "CHOWN and NET_RAW dropped: {out}");
    assert!(has(25), "SYS_TIME added: {out}");
    assert!(has(18) && has(5), "SYS_CHROOT and KILL kept: {out}");
    assert!(!has(21) && !has(16), "no SYS_ADMIN, no SYS_MODULE: {out}");

    // seccomp: RuntimeDefault refuses what Docker's profile does; Unconfined keeps only the
    // host-global filter.
    let (default, cmd) = probing_container(&mut rt, &server, &pod, "rd", |c| {
        c.linux = Some(security(|sc| {
            sc.seccomp = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
                ..Default::default()
            })
        }));
    })
    .await?;
    assert_eq!(
        probe(&mut rt, &default, &cmd, &["personality"]).await?,
        "errno 1"
    );
    let (unconfined, cmd) = probing_container(&mut rt, &server, &pod, "un", |c| {
        c.linux = Some(security(|sc| {
            sc.seccomp = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                ..Default::default()
            })
        }));
    })
    .await?;
    assert_eq!(
        probe(&mut rt, &unconfined, &cmd, &["personality"]).await?,
        "allowed"
    );
    assert_eq!(
        probe(&mut rt, &unconfined, &cmd, &["sethostname"]).await?,
        "errno 1"
    );

    // A Localhost profile (Docker's format) applies beside the built-in filter.
    let profile = server.dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#,
    )?;
    let localhost = |path: &Path| {
        let path = path.display().to_string();
        move |c: &mut cri::ContainerConfig| {
            c.linux = Some(security(|sc| {
                sc.seccomp = Some(cri::SecurityProfile {
                    profile_type: cri::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: path,
                })
            }));
        }
    };
    let (local, cmd) = probing_container(&mut rt, &server, &pod, "lh", localhost(&profile)).await?;
    assert_eq!(
        probe(&mut rt, &local, &cmd, &["mkdir", "/tmp/d"]).await?,
        "errno 13"
    );
    assert_eq!(
        probe(&mut rt, &local, &cmd, &["sethostname"]).await?,
        "errno 1"
    );
    let bad = server.dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_NOTIFY"}"#)?;
    let mut config = container_config("bad", "true");
    localhost(&bad)(&mut config);
    let e = create(&mut rt, &pod, config)
        .await
        .expect_err("a bad profile");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    // Masked and read-only paths.
    let (masked, _) = probing_container(&mut rt, &server, &pod, "mask", |c| {
        c.linux = Some(security(|sc| {
            sc.masked_paths = vec!["/etc/passwd".into(), "/nonexistent".into()];
            sc.readonly_paths = vec!["/tmp".into()];
        }));
    })
    .await?;
    let r = exec(&mut rt, &masked, &["cat", "/etc/passwd"], 10).await?;
    assert!(
        r.stdout.is_empty(),
        "masked: {:?}",
        String::from_utf8_lossy(&r.stdout)
    );
    let r = exec(&mut rt, &masked, &["sh", "-c", "echo x > /tmp/x"], 10).await?;
    assert_ne!(r.exit_code, 0, "a write in a read-only path");
    Ok(())
}

/// The effective capability set `caps` printed by the probe, as a mask.
fn caps_mask(out: &str) -> anyhow::Result<u64> {
    Ok(u64::from_str_radix(out.trim_start_matches("caps "), 16)?)
}

#[tokio::test(flavor = "multi_thread")]
async fn capability_adds_need_the_operators_allowance() -> anyhow::Result<()> {
    const NET_ADMIN: u32 = 12;
    const NET_RAW: u32 = 13;
    const SYS_RAWIO: u32 = 17;
    const SYS_ADMIN: u32 = 21;
    let adds = |caps: &[&str], uid: Option<i64>| {
        let caps: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
        move |c: &mut cri::ContainerConfig| {
            c.linux = Some(security(|sc| {
                sc.run_as_user = uid.map(|value| cri::Int64Value { value });
                sc.capabilities = Some(cri::Capability {
                    add_capabilities: caps,
                    ..Default::default()
                });
            }));
        }
    };
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "caps").await?;
    // A uid-1000 container asking for NET_ADMIN and SYS_ADMIN is refused, both named.
    let mut config = container_config("admin", "sleep 1000");
    adds(&["NET_ADMIN", "CAP_SYS_ADMIN"], Some(1000))(&mut config);
    let e = create(&mut rt, &pod, config).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for named in ["NET_ADMIN", "SYS_ADMIN", "runtime.allowed_capabilities"] {
        assert!(e.message().contains(named), "{named}: {}", e.message());
    }
    // ALL is refused as clearly.
    let mut config = container_config("all", "sleep 1000");
    adds(&["ALL"], None)(&mut config);
    let e = create(&mut rt, &pod, config).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("ALL"), "{}", e.message());
    // Root's default set has no raw sockets (the host's network) and no raw I/O.
    let (plain, cmd) = probing_container(&mut rt, &server, &pod, "plain", adds(&[], None)).await?;
    let mask = caps_mask(&probe(&mut rt, &plain, &cmd, &["caps"]).await?)?;
    assert_eq!(
        mask & (1 << NET_RAW),
        0,
        "NET_RAW in the default set: {mask:x}"
    );
    assert_eq!(mask & (1 << SYS_RAWIO), 0, "SYS_RAWIO: {mask:x}");
    assert_ne!(mask & 1, 0, "CHOWN kept: {mask:x}");
    drop(server);

    // What the operator allows is granted; ALL allowed gives every capability the server holds
    // (it starts, where a capset of capabilities the server lacks would fail with EPERM).
    let server =
        Server::start_with_config("[runtime]\nallowed_capabilities = [\"NET_ADMIN\"]\n").await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "caps").await?;
    let (admin, cmd) =
        probing_container(&mut rt, &server, &pod, "admin", adds(&["NET_ADMIN"], None)).await?;
    let mask = caps_mask(&probe(&mut rt, &admin, &cmd, &["caps"]).await?)?;
    assert_ne!(mask & (1 << NET_ADMIN), 0, "NET_ADMIN allowed: {mask:x}");
    assert_eq!(mask & (1 << SYS_ADMIN), 0, "{mask:x}");
    let mut config = container_config("sysadmin", "sleep 1000");
    adds(&["SYS_ADMIN"], None)(&mut config);
    let e = create(&mut rt, &pod, config).await.expect_err("refused");
    assert!(e.message().contains("SYS_ADMIN"), "{}", e.message());
    drop(server);
    let server = Server::start_with_config("[runtime]\nallowed_capabilities = [\"ALL\"]\n").await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "caps").await?;
    let (all, cmd) = probing_container(&mut rt, &server, &pod, "all", adds(&["ALL"], None)).await?;
    let mask = caps_mask(&probe(&mut rt, &all, &cmd, &["caps"]).await?)?;
    assert_ne!(mask & (1 << SYS_ADMIN), 0, "ALL: {mask:x}");
    Ok(())
}

/// A static program printing its effective uid, built with the host's C compiler (a static
/// binary needs no loader in the container's root, and a setuid bit works on it).
fn euid_program(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let src = dir.join("euid.c");
    std::fs::write(
        &src,
        "#include <stdio.h>\n#include <unistd.h>\nint main(void) { printf(\"euid %d\\n\", (int)geteuid()); return 0; }\n",
    )?;
    let bin = dir.join("euid");
    let out = Command::new("cc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o4755))?;
    Ok(bin)
}

#[tokio::test(flavor = "multi_thread")]
async fn setuid_programs_grant_nothing_and_no_new_privs_is_honoured() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "suid").await?;
    let vol = server.dir.path().join("suid");
    let bin = euid_program(&vol)?;
    // On a volume (the host's directory, not nosuid) a setuid-root program gives root to uid
    // 1000, as it would under containerd; only no_new_privs stops it.
    for (nnp, expected) in [(false, "euid 0"), (true, "euid 1000")] {
        let mut config = container_config(&format!("nnp-{nnp}"), "sleep 1000");
        config.mounts.push(mount("/suid", &vol, true));
        config.linux = Some(security(|sc| {
            sc.run_as_user = Some(cri::Int64Value { value: 1000 });
            sc.no_new_privs = nnp;
        }));
        let id = create(&mut rt, &pod, config).await?;
        start(&mut rt, &id).await?;
        let r = exec(&mut rt, &id, &["/suid/euid"], 10).await?;
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            expected,
            "no_new_privs {nnp}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
    }
    // In the root (an overlay mounted nosuid) the same program runs as its caller.
    let mut config = container_config("in-root", "sleep 1000");
    config.linux = Some(security(|sc| {
        sc.run_as_user = Some(cri::Int64Value { value: 1000 });
    }));
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    let rootfs = std::fs::read_dir(server.root().join("pods"))?
        .flatten()
        .map(|p| p.path().join("containers").join(&id).join("rootfs"))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow::anyhow!("no root for {id}"))?;
    let planted = rootfs.join("tmp/euid");
    std::fs::copy(&bin, &planted)?;
    std::fs::set_permissions(
        &planted,
        std::os::unix::fs::PermissionsExt::from_mode(0o4755),
    )?;
    let r = exec(&mut rt, &id, &["/tmp/euid"], 10).await?;
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "euid 1000");
    Ok(())
}

/// A RuntimeDefault seccomp profile, as a Linux kubelet asks for it.
fn runtime_default(sc: &mut cri::LinuxContainerSecurityContext) {
    sc.seccomp = Some(cri::SecurityProfile {
        profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32,
        ..Default::default()
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn seccomp_refuses_x32_calls_and_runtime_default_refuses_clone_into_namespaces()
-> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "clones").await?;
    // Root (allowed by the harness), which can leave its chroot: outside it a process may make
    // a user namespace, which a chrooted one may not.
    let (id, cmd) = probing_container(&mut rt, &server, &pod, "rd", |c| {
        c.linux = Some(security(runtime_default));
    })
    .await?;
    if std::env::consts::ARCH == "x86_64" {
        // x32 numbers (nr | 0x40000000) carry x86_64's audit architecture: refused, not left
        // to the kernel (ENOSYS only where x32 is off, as here; run where it is on).
        assert_eq!(probe(&mut rt, &id, &cmd, &["x32"]).await?, "errno 1");
    }
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["clone_newuser", "escaped"]).await?,
        "errno 1",
        "clone(CLONE_NEWUSER) outside the chroot"
    );
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["clone_newuser"]).await?,
        "errno 1"
    );
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["clone3"]).await?,
        format!("errno {}", nix::libc::ENOSYS),
        "clone3 answers ENOSYS, so that libc falls back to clone"
    );
    // ... which it does: glibc's process creation still works.
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["spawn", "/bin/sh", "-c", "exit 7"]).await?,
        "status 7"
    );

    // Without RuntimeDefault the x32 refusal stays (host-global calls have x32 numbers too),
    // and the namespace is made: what the refusal above keeps from the container.
    let (unconfined, cmd) = probing_container(&mut rt, &server, &pod, "uc", |c| {
        c.linux = Some(security(|sc| {
            sc.seccomp = Some(cri::SecurityProfile {
                profile_type: cri::security_profile::ProfileType::Unconfined as i32,
                ..Default::default()
            });
        }));
    })
    .await?;
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(
            probe(&mut rt, &unconfined, &cmd, &["x32"]).await?,
            "errno 1"
        );
    }
    assert_eq!(
        probe(&mut rt, &unconfined, &cmd, &["clone_newuser", "escaped"]).await?,
        "allowed"
    );
    assert_eq!(
        probe(&mut rt, &unconfined, &cmd, &["clone3"]).await?,
        "allowed"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_read_only_volume_is_read_only_in_its_submounts_too() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "rro").await?;
    // A volume whose host directory has a file system mounted inside it (a disk, a tmpfs);
    // the server's drop unmounts it with everything else under its directory.
    let vol = server.dir.path().join("vol");
    std::fs::create_dir_all(vol.join("sub"))?;
    mount_small_tmpfs(&vol.join("sub"), 1 << 20)?;
    // Privileged: no Landlock, whose read set would refuse the write anyway (EACCES, after the
    // mount's EROFS): the mount alone must hold, as it does for the darwin-unconfined handler.
    let (id, cmd) = probing_container(&mut rt, &server, &pod, "c", |c| {
        c.mounts.push(mount("/ro", &vol, true));
        c.mounts.push(mount("/rw", &vol, false));
        c.linux = Some(security(|sc| sc.privileged = true));
    })
    .await?;
    let erofs = format!("errno {}", nix::libc::EROFS);
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["mkdir", "/ro/top"]).await?,
        erofs
    );
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["mkdir", "/ro/sub/inner"]).await?,
        erofs,
        "the submount of a read-only volume is read-only"
    );
    // The same tree mounted writable stays writable, submount included.
    assert_eq!(
        probe(&mut rt, &id, &cmd, &["mkdir", "/rw/sub/inner"]).await?,
        "allowed"
    );
    assert!(vol.join("sub/inner").is_dir());
    // The host's own mount is untouched.
    std::fs::create_dir(vol.join("sub/host"))?;
    Ok(())
}

/// The container's confinement policy as its monitor receives it (the process spec), and its
/// root's host path.
fn policy_of(server: &Server, id: &str) -> anyhow::Result<(platform::Confinement, PathBuf)> {
    for pod in std::fs::read_dir(server.root().join("pods"))? {
        let spec = pod?
            .path()
            .join("containers")
            .join(id)
            .join(runtime::monitor::PROCESS_FILE);
        if let Ok(bytes) = std::fs::read(&spec) {
            let v: serde_json::Value = serde_json::from_slice(&bytes)?;
            let c = serde_json::from_value(v["confinement"].clone())?;
            let rootfs = PathBuf::from(v["rootfs"].as_str().unwrap_or_default());
            return Ok((c, rootfs));
        }
    }
    anyhow::bail!("no process spec for container {id}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seatbelt_profile_of_a_container_keeps_it_from_the_macs_services_and_setuid_files()
-> anyhow::Result<()> {
    // The profile a Mac would apply is generated from the policy the server sends its monitor:
    // checked here from that policy, made through the CRI (a Mac is needed to run it).
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "profile").await?;
    let mut config = container_config("c", "sleep 1000");
    config.linux = Some(security(|sc| {
        sc.masked_paths = vec!["/etc/group".into()];
        sc.readonly_paths = vec!["/bin".into()];
    }));
    let id = create(&mut rt, &pod, config).await?;
    let (policy, rootfs) = policy_of(&server, &id)?;
    assert!(
        !policy.landlock_best_effort,
        "Landlock short of the policy is refused by default"
    );
    let profile = platform::seatbelt_profile(&policy);
    // Mach services: what builds need, not those that start programs outside the sandbox
    // (Launch Services), hold the keychains (SecurityServer) or stream every log (diagnosticd).
    assert!(
        profile.contains("(global-name \"com.apple.trustd\")"),
        "{profile}"
    );
    for (service, _) in runtime::confinement::OPT_IN_MACH_SERVICES {
        assert!(!profile.contains(service), "{service} is opt-in: {profile}");
    }
    // No setuid or setgid file, writable volumes included.
    assert!(profile.contains("(deny file-write-setugid)\n"), "{profile}");
    // The masked path's and the read-only path's parents cannot be renamed away from their
    // rules.
    let rule = |start: &str| {
        profile
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_default()
            .to_string()
    };
    let literal = |p: &Path| format!("(literal \"{}\")", p.display());
    let subpath = |p: &Path| format!("(subpath \"{}\")", p.display());
    let parents = rule("(deny file-write* (literal ");
    assert!(parents.contains(&literal(&rootfs.join("etc"))), "{profile}");
    assert!(!parents.contains(&literal(&rootfs)), "{profile}");
    let masked = rule("(deny file-read* file-write* ");
    assert!(
        masked.contains(&subpath(&rootfs.join("etc/group"))),
        "{profile}"
    );
    let read_only = rule("(deny file-write* (subpath ");
    assert!(
        read_only.contains(&subpath(&rootfs.join("bin"))),
        "{profile}"
    );
    drop(server);

    // The operator opts in by name; and into Landlock's best effort.
    let services = runtime::confinement::DEFAULT_MACH_SERVICES
        .iter()
        .map(|s| format!("{s:?}"))
        .chain(["\"com.apple.SecurityServer\"".to_string()])
        .collect::<Vec<_>>()
        .join(", ");
    let server = Server::start_with_config(&format!(
        "[runtime]\nseatbelt_mach_services = [{services}]\nlandlock_best_effort = true\n"
    ))
    .await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "profile").await?;
    let id = create(&mut rt, &pod, container_config("c", "sleep 1000")).await?;
    let (policy, _) = policy_of(&server, &id)?;
    assert!(policy.landlock_best_effort);
    let profile = platform::seatbelt_profile(&policy);
    assert!(
        profile.contains("(global-name \"com.apple.SecurityServer\")"),
        "{profile}"
    );
    // It still starts here (this kernel has all the policy needs).
    start(&mut rt, &id).await?;
    Ok(())
}
