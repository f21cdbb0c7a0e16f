//! Mount propagation of volumes (the CRI's MountPropagation, a pod's `mountPropagation`), as
//! critest's "Container Mount Propagation" specs check it: the host's later mounts below a
//! volume reach HostToContainer and Bidirectional containers, a privileged container's mounts
//! reach the host only with Bidirectional, and a private volume sees neither.
//!
//! Linux only: the host side makes shared and slave mounts, which macOS has not (there, bindfs
//! volumes show the host's later mounts and refuse Bidirectional: runtime/src/mounts.rs).
#![cfg(target_os = "linux")]

use std::path::{Path, PathBuf};

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;
use nix::mount::{MntFlags, MsFlags};
use tonic::Code;

/// Host mounts made by the test, undone (deepest first) however it ends.
struct HostMounts(Vec<PathBuf>);

impl HostMounts {
    fn mount(
        &mut self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
    ) -> anyhow::Result<()> {
        nix::mount::mount(source, target, fstype, flags, None::<&str>)?;
        self.0.push(target.to_path_buf());
        Ok(())
    }
}

impl Drop for HostMounts {
    fn drop(&mut self) {
        for m in self.0.iter().rev() {
            let _ = nix::mount::umount2(m, MntFlags::MNT_DETACH);
        }
    }
}

fn volume(host: &Path, propagation: cri::MountPropagation) -> cri::ContainerConfig {
    let name = format!("{propagation:?}").to_lowercase();
    let mut config = container_config(&name, "sleep 1000");
    config.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: host.display().to_string(),
        propagation: propagation as i32,
        ..Default::default()
    }];
    // Mounting inside takes a privileged container, as in critest.
    config.linux = Some(cri::LinuxContainerConfig {
        security_context: Some(cri::LinuxContainerSecurityContext {
            privileged: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    config
}

async fn ls(rt: &mut Rt, id: &str, dir: &str) -> anyhow::Result<String> {
    let r = exec(rt, id, &["ls", "-A", dir], 10).await?;
    Ok(String::from_utf8_lossy(&r.stdout).trim().to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_propagate_mounts_as_asked() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "propagation").await?;
    let base = server.dir.path().join("prop");
    let src = base.join("mnt");
    for d in ["mnt/later", "flags"] {
        std::fs::create_dir_all(base.join(d))?;
    }
    std::fs::write(base.join("flags/flag"), "")?;
    let mut host = HostMounts(Vec::new());

    // A private source: only private volumes of it.
    host.mount(Some(&src), &src, None, MsFlags::MS_BIND | MsFlags::MS_REC)?;
    nix::mount::mount(
        None::<&str>,
        &src,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )?;
    for p in [
        cri::MountPropagation::PropagationHostToContainer,
        cri::MountPropagation::PropagationBidirectional,
    ] {
        let e = create(&mut rt, &pod, volume(&src, p))
            .await
            .expect_err("a private source cannot propagate");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("make-rshared"), "{e:?}");
    }

    // A shared source, as critest makes it.
    nix::mount::mount(
        None::<&str>,
        &src,
        None::<&str>,
        MsFlags::MS_SHARED | MsFlags::MS_REC,
        None::<&str>,
    )?;
    let mut ids = Vec::new();
    for p in [
        cri::MountPropagation::PropagationPrivate,
        cri::MountPropagation::PropagationHostToContainer,
        cri::MountPropagation::PropagationBidirectional,
    ] {
        let id = create(&mut rt, &pod, volume(&src, p)).await?;
        start(&mut rt, &id).await?;
        let s = status(&mut rt, &id).await?;
        assert_eq!(s.mounts[0].propagation, p as i32, "status reports it");
        ids.push(id);
    }
    let [private, slave, shared] = [&ids[0], &ids[1], &ids[2]];

    // Host to container.
    host.mount(
        Some(&base.join("flags")),
        &src.join("later"),
        None,
        MsFlags::MS_BIND,
    )?;
    assert_eq!(ls(&mut rt, private, "/vol/later").await?, "");
    assert_eq!(ls(&mut rt, slave, "/vol/later").await?, "flag");
    assert_eq!(ls(&mut rt, shared, "/vol/later").await?, "flag");

    // Container to host: only from the Bidirectional volume.
    for (id, dir) in [(private, "p"), (slave, "s"), (shared, "b")] {
        let script = format!("mkdir -p /vol/{dir} && mount --bind /etc /vol/{dir}");
        let r = exec(&mut rt, id, &["sh", "-c", &script], 10).await?;
        assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
        // Whatever reached the host is undone with the rest.
        host.0.push(src.join(dir));
    }
    let on_host = |dir: &str| {
        std::fs::read_dir(src.join(dir))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    assert_eq!(on_host("p"), 0, "a private volume's mount stays inside");
    assert_eq!(
        on_host("s"),
        0,
        "a HostToContainer volume's mount stays inside"
    );
    assert!(
        on_host("b") > 0,
        "a Bidirectional volume's mount reaches the host"
    );

    for id in &ids {
        rt.remove_container(cri::RemoveContainerRequest {
            container_id: id.to_string(),
        })
        .await?;
    }
    server.wait_removals().await?;
    assert_eq!(mounts_under(&server.root()), Vec::<PathBuf>::new());
    Ok(())
}

/// Every read-only volume is read-only throughout, submounts included (bindfs -o ro on macOS, the
/// twin alike): the runtime handlers advertise recursive read-only mounts, and a recursive one
/// that is not read-only, or propagates, is refused as the CRI asks.
#[tokio::test(flavor = "multi_thread")]
async fn read_only_volumes_are_read_only_throughout() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, _) = server.client().await?;
    let handlers = rt
        .status(cri::StatusRequest { verbose: false })
        .await?
        .into_inner()
        .runtime_handlers;
    assert!(
        handlers
            .iter()
            .all(|h| h.features.is_some_and(|f| f.recursive_read_only_mounts)),
        "{handlers:?}"
    );
    let pod = run_pod(&mut rt, &server, "rro").await?;
    let src = server.dir.path().join("rro");
    std::fs::create_dir_all(src.join("tmpfs"))?;
    let mut host = HostMounts(Vec::new());
    host.mount(
        Some(Path::new("none")),
        &src.join("tmpfs"),
        Some("tmpfs"),
        MsFlags::empty(),
    )?;
    let mount = |readonly, recursive_read_only, propagation: cri::MountPropagation| cri::Mount {
        container_path: "/mnt".into(),
        host_path: src.display().to_string(),
        readonly,
        recursive_read_only,
        propagation: propagation as i32,
        ..Default::default()
    };
    for (name, m) in [
        (
            "rw",
            mount(false, true, cri::MountPropagation::PropagationPrivate),
        ),
        (
            "slave",
            mount(
                true,
                true,
                cri::MountPropagation::PropagationHostToContainer,
            ),
        ),
    ] {
        let mut config = container_config(name, "sleep 1000");
        config.mounts = vec![m];
        let e = create(&mut rt, &pod, config).await.expect_err(name);
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    }
    for (name, rro) in [("recursive", true), ("plain", false)] {
        let mut config = container_config(name, "sleep 1000");
        config.mounts = vec![mount(true, rro, cri::MountPropagation::PropagationPrivate)];
        let id = create(&mut rt, &pod, config).await?;
        start(&mut rt, &id).await?;
        let r = exec(&mut rt, &id, &["touch", "/mnt/tmpfs/file"], 10).await?;
        assert_ne!(r.exit_code, 0, "{name}: the submount is read-only too");
        assert!(
            String::from_utf8_lossy(&r.stderr).contains("Read-only file system"),
            "{name}: {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(status(&mut rt, &id).await?.mounts[0].recursive_read_only);
    }
    Ok(())
}
