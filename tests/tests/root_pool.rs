//! Roots made ahead (runtime::pool) on a server whose roots are copies (`rootfs = "copy"`, the
//! twin of macOS's clones): CreateContainer takes a ready root and the pool refills; the pools
//! stay within their disk bound; removing the image removes its pool; a restart deletes a
//! half-made root and keeps the ready ones.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

/// A server with copied roots and a pool of `size` roots per image, for every image
/// (min_files 1), its metrics on `port`.
async fn pooled_server(size: usize, max_mib: u64, port: u16) -> anyhow::Result<Server> {
    Server::start_with_config(&format!(
        "[metrics]\naddress = \"127.0.0.1:{port}\"\n[runtime]\nrootfs = \"copy\"\n\
         [runtime.root_pool]\nsize = {size}\nmin_files = 1\nmax_mib = {max_mib}\n"
    ))
    .await
}

/// The busybox image's pool directory.
async fn pool_dir(server: &Server) -> anyhow::Result<PathBuf> {
    let (_, mut images) = server.client().await?;
    let list = images
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    let id = list.first().map(|i| i.id.clone()).unwrap_or_default();
    Ok(server
        .root()
        .join("pool")
        .join(id.trim_start_matches("sha256:")))
}

/// The ready roots in `dir` (`r-*` without `.tmp`), sorted.
fn ready(dir: &Path) -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    name.starts_with("r-") && !name.ends_with(".tmp")
                })
                .collect()
        })
        .unwrap_or_default();
    roots.sort();
    roots
}

async fn wait_ready(dir: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    wait_for(
        Duration::from_secs(30),
        &format!("{n} ready roots in {}", dir.display()),
        || async { (ready(dir).len() == n).then(|| ready(dir)) },
    )
    .await
}

fn inode(p: &Path) -> u64 {
    std::fs::symlink_metadata(p).map(|m| m.ino()).unwrap_or(0)
}

#[tokio::test]
async fn create_takes_a_ready_root_and_the_pool_refills() -> anyhow::Result<()> {
    let server = pooled_server(1, 1024, free_port()?).await?;
    let (mut rt, _) = server.client().await?;
    let dir = pool_dir(&server).await?;
    // Made at start for the imported image, in the background.
    let before = wait_ready(&dir, 1).await?;
    let taken = inode(&before[0]);
    let pod = run_pod(&mut rt, &server, "pooled").await?;
    let id = create(&mut rt, &pod, container_config("c", "sleep 1000")).await?;
    let rootfs = server.container_dir(&pod, &id).join("rootfs");
    assert_eq!(
        inode(&rootfs),
        taken,
        "the container's root is the pool's (renamed)"
    );
    assert!(!before[0].exists(), "taken out of the pool");
    start(&mut rt, &id).await?;
    let out = exec(&mut rt, &id, &["cat", "/etc/hostname"], 10).await?;
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "pooled");
    // A new one is made after the use.
    let after = wait_ready(&dir, 1).await?;
    assert_ne!(inode(&after[0]), taken, "a new root");
    // The pool's root was a pristine copy: what this container wrote is not in the next one.
    exec(&mut rt, &id, &["sh", "-c", "echo x > /marker"], 10).await?;
    assert!(!after[0].join("marker").exists());
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod,
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_pools_stay_within_their_disk_bound() -> anyhow::Result<()> {
    // Learn what one root takes, then allow two and a bit of three.
    let port = free_port()?;
    let mut server = pooled_server(1, 1024, port).await?;
    let dir = pool_dir(&server).await?;
    wait_ready(&dir, 1).await?;
    let per_root: u64 = std::fs::read_to_string(dir.join("bytes"))?.trim().parse()?;
    anyhow::ensure!(
        per_root >= 1 << 20,
        "the test needs a root of at least 1 MiB, got {per_root} bytes"
    );
    let max_mib = (2 * per_root).div_ceil(1 << 20);
    assert!(max_mib << 20 < 3 * per_root);
    server.kill();
    let config = server.dir.path().join("config.toml");
    let toml = std::fs::read_to_string(&config)?
        .replace("size = 1", "size = 3")
        .replace("max_mib = 1024", &format!("max_mib = {max_mib}"));
    std::fs::write(&config, toml)?;
    server.restart().await?;
    wait_ready(&dir, 2).await?;
    // It stays at two: the third would pass the bound.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ready(&dir).len(), 2, "{:?}", ready(&dir));
    let metrics = http_get(port, "/metrics")?;
    assert!(
        metrics.contains("darwin_cri_root_pool_roots 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("darwin_cri_root_pool_bytes {}", 2 * per_root)),
        "{metrics}"
    );
    Ok(())
}

#[tokio::test]
async fn removing_the_image_removes_its_pool() -> anyhow::Result<()> {
    let server = pooled_server(1, 1024, free_port()?).await?;
    let (_, mut images) = server.client().await?;
    let dir = pool_dir(&server).await?;
    wait_ready(&dir, 1).await?;
    let id = format!(
        "sha256:{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or_default()
    );
    images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: id,
                ..Default::default()
            }),
        })
        .await?;
    assert!(!dir.exists(), "the pool left with the image");
    // And it is deleted from the disk, not only moved.
    wait_for(Duration::from_secs(10), "the trash emptied", || async {
        std::fs::read_dir(server.root().join("trash"))
            .ok()?
            .next()
            .is_none()
            .then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_deletes_a_half_made_root_and_keeps_the_ready_one() -> anyhow::Result<()> {
    let mut server = pooled_server(1, 1024, free_port()?).await?;
    let dir = pool_dir(&server).await?;
    let kept = inode(&wait_ready(&dir, 1).await?[0]);
    server.kill();
    // What a crash in the middle of a copy leaves.
    let half = dir.join("r-1-0.tmp");
    std::fs::create_dir_all(half.join("bin"))?;
    std::fs::write(half.join("bin/partial"), b"half")?;
    server.restart().await?;
    wait_for(
        Duration::from_secs(10),
        "the half-made root deleted",
        || async { (!half.exists()).then_some(()) },
    )
    .await?;
    let roots = wait_ready(&dir, 1).await?;
    assert_eq!(inode(&roots[0]), kept, "the ready root is reused");
    // And it serves a container.
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "after-restart").await?;
    let id = create(&mut rt, &pod, container_config("c", "true")).await?;
    start(&mut rt, &id).await?;
    let s = wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    assert_eq!(s.exit_code, 0);
    Ok(())
}
