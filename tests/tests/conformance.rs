//! Behaviours kubelet and the CRI validation suites expect: clear answers when a container is
//! not running, RemoveImage as containerd does it.

use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use tonic::Code;

/// An exec that races its container's exit is refused with FailedPrecondition and the exit's
/// facts, never with the OS error of a monitor socket that went away.
#[tokio::test(flavor = "multi_thread")]
async fn exec_racing_an_exit_never_answers_an_os_error() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "race").await?;
    let rounds = env_or("RACE_ROUNDS", 200usize);
    let mut refused = 0;
    for i in 0..rounds {
        let id = create(&mut rt, &pod, container_config(&format!("c{i}"), "exit 3")).await?;
        start(&mut rt, &id).await?;
        // Exec until the container is gone: early ones may still get in.
        for _ in 0..200 {
            match exec(&mut rt, &id, &["true"], 10).await {
                Ok(_) => continue,
                Err(e) => {
                    let msg = e.message();
                    assert_eq!(e.code(), Code::FailedPrecondition, "round {i}: {e:?}");
                    assert!(
                        !msg.contains("os error") && !msg.contains("Connection"),
                        "round {i}: an OS error reached the client: {msg}"
                    );
                    assert!(
                        msg.contains(&format!("container {id} is not running (exited at "))
                            && msg.contains(", code 3)"),
                        "round {i}: {msg}"
                    );
                    refused += 1;
                    break;
                }
            }
        }
        rt.remove_container(cri::RemoveContainerRequest { container_id: id })
            .await?;
    }
    assert_eq!(refused, rounds, "every container ended and said so");

    // Attach to an exited container: the same answer.
    let id = create(&mut rt, &pod, container_config("attach", "exit 4")).await?;
    start(&mut rt, &id).await?;
    wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    let e = rt
        .attach(cri::AttachRequest {
            container_id: id.clone(),
            stdout: true,
            ..Default::default()
        })
        .await
        .expect_err("exited");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains(", code 4)"), "{}", e.message());
    Ok(())
}

/// The server's log has no terminal colour codes when its output is not a terminal (a file
/// under launchd).
#[tokio::test(flavor = "multi_thread")]
async fn the_log_has_no_colour_codes_off_a_terminal() -> anyhow::Result<()> {
    let server = Server::start_with_config("[log]\nlevel = \"debug\"\n").await?;
    let (mut rt, _) = server.client().await?;
    run_pod(&mut rt, &server, "quiet").await?;
    let log = server.log();
    assert!(log.contains("INFO") || log.contains("DEBUG"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log: {log:?}");
    Ok(())
}

/// Every root has a /proc (the Linux twin; macOS's ps and top read sysctl in a chroot): process
/// tools work and a `top` container runs until stopped; the kernel's settings and memory stay
/// out of reach.
#[tokio::test(flavor = "multi_thread")]
async fn process_tools_work_and_proc_is_masked() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "top").await?;
    let mut config = container_config("top", "");
    config.command = vec!["top".into(), "-b".into(), "-d".into(), "1".into()];
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let s = status(&mut rt, &id).await?;
    assert_eq!(
        s.state,
        cri::ContainerState::ContainerRunning as i32,
        "top keeps running: {s:?}"
    );
    let r = exec(&mut rt, &id, &["ps"], 10).await?;
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("top -b"),
        "ps lists the container's processes: {}",
        String::from_utf8_lossy(&r.stdout)
    );
    let r = exec(&mut rt, &id, &["pidof", "top"], 10).await?;
    assert_eq!(r.exit_code, 0, "pidof finds top");
    let hostname = nix::unistd::gethostname()?;
    let r = exec(
        &mut rt,
        &id,
        &[
            "sh",
            "-c",
            "cat /proc/sys/kernel/hostname > /proc/sys/kernel/hostname",
        ],
        10,
    )
    .await?;
    assert_ne!(r.exit_code, 0, "/proc/sys is read-only");
    assert_eq!(nix::unistd::gethostname()?, hostname);
    // /proc/1/root leads to the host's root: Landlock keeps it closed, even to root.
    let r = exec(&mut rt, &id, &["cat", "/proc/1/root/etc/hostname"], 10).await?;
    assert_ne!(r.exit_code, 0, "read the host through /proc/1/root: {r:?}");
    // Whichever of the masked files this kernel has reads as empty.
    let masked = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
    ]
    .into_iter()
    .filter(|p| std::path::Path::new(p).exists())
    .collect::<Vec<_>>();
    assert!(
        !masked.is_empty(),
        "this kernel has none of the masked files"
    );
    for path in masked {
        let r = exec(&mut rt, &id, &["sh", "-c", &format!("wc -c < {path}")], 10).await?;
        assert_eq!(
            String::from_utf8_lossy(&r.stdout).trim(),
            "0",
            "{path} masked: {r:?}"
        );
    }
    rt.stop_container(cri::StopContainerRequest {
        container_id: id.clone(),
        timeout: 5,
    })
    .await?;
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    server.wait_removals().await?;
    assert!(
        mounts_under(&server.root()).is_empty(),
        "/proc and its masks go with the container"
    );
    Ok(())
}

async fn run_pod_with(
    rt: &mut Rt,
    server: &Server,
    name: &str,
    edit: impl FnOnce(&mut cri::PodSandboxConfig),
) -> Result<String, tonic::Status> {
    let logs = server.dir.path().join("logs").join(name);
    std::fs::create_dir_all(&logs).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let mut config = pod_config(name, &logs);
    edit(&mut config);
    Ok(rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id)
}

fn tcp_mapping(host_port: u16, container_port: u16) -> cri::PortMapping {
    cri::PortMapping {
        protocol: cri::Protocol::Tcp as i32,
        container_port: container_port.into(),
        host_port: host_port.into(),
        host_ip: String::new(),
    }
}

/// hostPort: busybox httpd on its container port answers on the pod's host port; a second pod
/// asking for the same host port is refused at RunPodSandbox, and gets it once the first pod
/// stops; the forwarder stops with its pod.
#[tokio::test(flavor = "multi_thread")]
async fn host_ports_are_forwarded_and_never_given_twice() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let (host_port, container_port) = (free_port()?, free_port()?);
    let web = run_pod_with(&mut rt, &server, "web", |c| {
        c.port_mappings = vec![tcp_mapping(host_port, container_port)];
    })
    .await?;
    let id = create(
        &mut rt,
        &web,
        container_config(
            "httpd",
            &format!(
                "mkdir -p /www && echo served-by-httpd > /www/index.html && \
                 exec httpd -f -p 127.0.0.1:{container_port} -h /www"
            ),
        ),
    )
    .await?;
    start(&mut rt, &id).await?;
    wait_for(
        Duration::from_secs(10),
        "httpd through the host port",
        || async {
            http_get(host_port, "/index.html")
                .ok()
                .filter(|page| page.contains("served-by-httpd"))
        },
    )
    .await?;

    // The same host port, whether forwarded or served directly by the container, is refused.
    for (name, mapping) in [
        ("clash", tcp_mapping(host_port, 80)),
        ("clash-direct", tcp_mapping(host_port, host_port)),
    ] {
        let e = run_pod_with(&mut rt, &server, name, |c| c.port_mappings = vec![mapping])
            .await
            .expect_err("the host port is taken");
        assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
        assert!(
            e.message().contains(&format!(
                "host port {host_port}/TCP is already used by pod sandbox {web}"
            )),
            "{}",
            e.message()
        );
    }
    // A refused pod leaves no trace: its name is free for kubelet's retry.
    assert!(
        rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None })
            .await?
            .into_inner()
            .items
            .iter()
            .all(|p| p
                .metadata
                .as_ref()
                .is_some_and(|m| !m.name.starts_with("clash")))
    );

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
        pod_sandbox_id: web.clone(),
    })
    .await?;
    wait_for(Duration::from_secs(5), "the forwarder to stop", || async {
        tokio::net::TcpStream::connect(("127.0.0.1", host_port))
            .await
            .is_err()
            .then_some(())
    })
    .await?;
    run_pod_with(&mut rt, &server, "clash", |c| {
        c.port_mappings = vec![tcp_mapping(host_port, 80)]
    })
    .await?;
    Ok(())
}

/// Cluster DNS on a Mac: the cluster domain's resolver(5) file is written with the first pod that
/// uses it and removed with the last; other files in the directory are left alone. The Linux
/// twin runs the same code on a directory of the test's.
#[tokio::test(flavor = "multi_thread")]
async fn cluster_domain_resolver_file_lives_with_its_pods() -> anyhow::Result<()> {
    let resolver = tempfile::tempdir()?;
    let foreign = resolver.path().join("corp.example");
    std::fs::write(&foreign, "nameserver 192.0.2.1\n")?;
    let server = Server::start_with_config(&format!(
        "[runtime]\ncluster_dns_resolver_dir = {:?}\n",
        resolver.path().display().to_string()
    ))
    .await?;
    let (mut rt, _) = server.client().await?;
    let file = resolver.path().join("cluster.local");
    let a = run_pod(&mut rt, &server, "dns-a").await?;
    let b = run_pod(&mut rt, &server, "dns-b").await?;
    let written = std::fs::read_to_string(&file)?;
    assert!(written.contains("nameserver 10.96.0.10\n"), "{written}");

    let out = std::process::Command::new(binary())
        .args(server.args())
        .arg("doctor")
        .output()?;
    let doctor = String::from_utf8_lossy(&out.stdout);
    assert!(doctor.contains("cluster.local → 10.96.0.10"), "{doctor}");

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: a })
        .await?;
    assert!(file.exists(), "pod b still uses the domain");
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: b })
        .await?;
    assert!(!file.exists(), "removed with the last pod");
    assert_eq!(std::fs::read_to_string(&foreign)?, "nameserver 192.0.2.1\n");
    Ok(())
}

/// Issue #26, 1: a pod's DNS config never reaches the host's resolver beyond the cluster's own
/// domain and servers: search domains `svc.com`, `svc.apple.com`, `svc.local` write nothing, and a
/// pod with servers of its own (dnsPolicy None) gets its resolv.conf and nothing on the host.
#[tokio::test(flavor = "multi_thread")]
async fn pod_dns_config_never_redirects_the_hosts_domains() -> anyhow::Result<()> {
    let resolver = tempfile::tempdir()?;
    let listing = || -> Vec<String> {
        std::fs::read_dir(resolver.path())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for servers in ["[]", "[\"10.96.0.10\"]"] {
        let server = Server::start_with_config(&format!(
            "[runtime]\ncluster_dns_resolver_dir = {:?}\ncluster_dns_servers = {servers}\n",
            resolver.path().display().to_string()
        ))
        .await?;
        let (mut rt, _) = server.client().await?;
        let hostile = run_pod_with(&mut rt, &server, "hostile", |c| {
            c.dns_config = Some(cri::DnsConfig {
                servers: vec!["192.0.2.53".into()],
                searches: vec![
                    "default.svc.com".into(),
                    "svc.com".into(),
                    "svc.apple.com".into(),
                    "svc.local".into(),
                ],
                options: vec![],
            })
        })
        .await?;
        assert_eq!(listing(), Vec::<String>::new(), "servers {servers}");
        // dnsPolicy None, the cluster's search list copied, servers of its own.
        let own = run_pod_with(&mut rt, &server, "own", |c| {
            if let Some(d) = c.dns_config.as_mut() {
                d.servers = vec!["192.0.2.53".into()];
            }
        })
        .await?;
        if servers != "[]" {
            assert_eq!(listing(), Vec::<String>::new(), "servers {servers}");
        }
        let resolv =
            std::fs::read_to_string(server.root().join("pods").join(&own).join("resolv.conf"))?;
        assert!(resolv.contains("nameserver 192.0.2.53"), "{resolv}");
        // A ClusterFirst pod: the cluster's domain, the cluster's servers, nothing else.
        let cluster = run_pod(&mut rt, &server, "cluster").await?;
        if servers == "[]" {
            // Learned servers: the two pods disagree, so neither is trusted.
            assert_eq!(listing(), Vec::<String>::new());
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: own.clone(),
            })
            .await?;
        }
        assert_eq!(listing(), vec!["cluster.local".to_string()]);
        let written = std::fs::read_to_string(resolver.path().join("cluster.local"))?;
        assert!(written.ends_with("\nnameserver 10.96.0.10\n"), "{written}");
        for id in [hostile, own, cluster] {
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id })
                .await?;
        }
        assert_eq!(listing(), Vec::<String>::new());
    }
    Ok(())
}

/// Linux-only fields darwin nodes cannot honour are refused, naming the field.
#[tokio::test(flavor = "multi_thread")]
async fn linux_only_fields_are_refused_by_name() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let e = run_pod_with(&mut rt, &server, "tuned", |c| {
        c.linux = Some(cri::LinuxPodSandboxConfig {
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
            ..Default::default()
        });
    })
    .await
    .expect_err("sysctls refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("sysctls (net.core.somaxconn) are not available on darwin nodes"),
        "{}",
        e.message()
    );

    let pod = run_pod(&mut rt, &server, "fields").await?;
    let mut config = container_config("labelled", "sleep 1");
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            selinux_options: Some(cri::SeLinuxOption {
                r#type: "container_t".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let e = create(&mut rt, &pod, config)
        .await
        .expect_err("SELinux refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("selinux_options"), "{}", e.message());
    Ok(())
}
