//! PullImage against a real registry (Debian's docker-registry on a free loopback port),
//! with fixtures pushed by skopeo, and a proxy that adds bearer auth, corruption and
//! throttling.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use darwin_cri_tests::registry::{
    Compression, Layout, Proxy, ProxyMode, TestRegistry, base64_encode, tar_layer, verify_store,
};
use darwin_cri_tests::*;
use k8s_cri::v1 as cri;
use tonic::Code;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

/// A config file listing `insecure` registries and mirrors: (host, mirrors, insecure).
fn config_file(dir: &Path, hosts: &[(&str, Vec<String>, bool)]) -> anyhow::Result<PathBuf> {
    let mut toml = String::from("[image]\nrequest_attempts = 2\n");
    for (host, mirrors, insecure) in hosts {
        let mirrors: Vec<String> = mirrors.iter().map(|m| format!("{m:?}")).collect();
        toml.push_str(&format!(
            "[image.registries.{host:?}]\nmirrors = [{}]\ninsecure = {insecure}\n",
            mirrors.join(", ")
        ));
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, toml)?;
    Ok(path)
}

async fn server_with(config: &Path) -> anyhow::Result<Server> {
    Server::start_with(vec!["--config".into(), config.display().to_string()]).await
}

fn pull_req(image: &str, auth: Option<cri::AuthConfig>) -> cri::PullImageRequest {
    cri::PullImageRequest {
        image: spec(image),
        auth,
        sandbox_config: None,
    }
}

fn basic(user: &str, password: &str) -> Option<cri::AuthConfig> {
    Some(cri::AuthConfig {
        username: user.into(),
        password: password.into(),
        ..Default::default()
    })
}

/// The snapshot directory of an image, from ImageStatus' verbose chainID.
async fn snapshot_of(server: &Server, image: &str) -> anyhow::Result<PathBuf> {
    let (_, mut img) = server.client().await?;
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(image),
            verbose: true,
        })
        .await?
        .into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["info"])?;
    let chain = info["chainID"].as_str().unwrap_or_default();
    Ok(server
        .root()
        .join("images/snapshots")
        .join(chain.trim_start_matches("sha256:")))
}

#[tokio::test]
async fn single_platform_pull_metadata_and_insecure_only_when_configured() -> anyhow::Result<()> {
    let reg = TestRegistry::start()?;
    let work = tempfile::tempdir()?;
    let mut layout = Layout::new(&work.path().join("app"))?;
    let l1 = tar_layer(&[("etc/", b""), ("etc/one", b"gzip layer")]);
    let l2 = tar_layer(&[("etc/two", b"second layer")]);
    layout.image(
        "linux",
        host_arch(),
        None,
        &[l1.clone(), l2.clone()],
        Compression::Gzip,
    )?;
    let manifest = layout.finish()?;
    reg.push(&layout.dir, "team/app:1.0")?;
    let mut zl = Layout::new(&work.path().join("zst"))?;
    zl.image("linux", host_arch(), None, &[l1, l2], Compression::Zstd)?;
    zl.finish()?;
    reg.push(&zl.dir, "team/zst:1")?;
    let name = format!("{}/team/app:1.0", reg.addr);

    // Not listed as insecure: no plain HTTP, the pull fails (TLS to a plain-HTTP port).
    let plain = server_with(&config_file(work.path(), &[])?).await?;
    let (_, mut img) = plain.client().await?;
    let e = img
        .pull_image(pull_req(&name, None))
        .await
        .expect_err("https only");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    drop(plain);

    let cfg = config_file(work.path(), &[(&reg.addr, vec![], true)])?;
    let server = server_with(&cfg).await?;
    let (_, mut img) = server.client().await?;
    let pulled = img.pull_image(pull_req(&name, None)).await?.into_inner();
    let listed = img
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    let image = listed
        .iter()
        .find(|i| i.repo_tags.contains(&name))
        .expect("pulled image listed");
    assert_eq!(
        pulled.image_ref, image.id,
        "image_ref is the id ListImages reports"
    );
    assert_eq!(
        image.repo_digests,
        vec![format!("{}/team/app@{manifest}", reg.addr)]
    );
    assert_eq!(image.uid.as_ref().map(|u| u.value), Some(1000));
    assert!(image.size > 0);
    for r in [&name, &image.repo_digests[0], &image.id] {
        let st = img
            .image_status(cri::ImageStatusRequest {
                image: spec(r),
                verbose: false,
            })
            .await?
            .into_inner();
        assert_eq!(st.image.map(|i| i.id), Some(image.id.clone()), "{r}");
    }
    let snap = snapshot_of(&server, &name).await?;
    assert_eq!(std::fs::read(snap.join("etc/one"))?, b"gzip layer");
    assert_eq!(std::fs::read(snap.join("etc/two"))?, b"second layer");

    // zstd layers unpack to the same tree (and the same snapshots: same DiffIDs).
    let z = img
        .pull_image(pull_req(&format!("{}/team/zst:1", reg.addr), None))
        .await?
        .into_inner();
    assert_eq!(z.image_ref, image.id, "same config, same image id");

    // Pulling again is cheap and gives the same answer; the store verifies.
    let again = img.pull_image(pull_req(&name, None)).await?.into_inner();
    assert_eq!(again.image_ref, pulled.image_ref);
    assert!(verify_store(&server.root())? >= 6);

    // A missing tag is NotFound.
    let e = img
        .pull_image(pull_req(&format!("{}/team/app:nope", reg.addr), None))
        .await
        .expect_err("missing tag");
    assert_eq!(e.code(), Code::NotFound, "{e:?}");

    // Used by a container: removal refused; then untag one name, then remove.
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "pulled").await?;
    let mut cfg = container_config("c", "true");
    cfg.image = spec(&name);
    let cid = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(cfg),
            sandbox_config: None,
        })
        .await?
        .into_inner()
        .container_id;
    rt.remove_container(cri::RemoveContainerRequest { container_id: cid })
        .await?;
    let zname = format!("{}/team/zst:1", reg.addr);
    img.remove_image(cri::RemoveImageRequest {
        image: spec(&zname),
    })
    .await?;
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&name),
            verbose: false,
        })
        .await?
        .into_inner();
    let left = st.image.expect("untagging one name keeps the image");
    assert!(!left.repo_tags.contains(&zname));
    img.remove_image(cri::RemoveImageRequest { image: spec(&name) })
        .await?;
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&image.id),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(st.image.is_none(), "the last tag took the image");
    Ok(())
}

#[tokio::test]
async fn platform_index_choice_override_and_clear_mismatch() -> anyhow::Result<()> {
    let reg = TestRegistry::start()?;
    let work = tempfile::tempdir()?;
    let mut multi = Layout::new(&work.path().join("multi"))?;
    multi.image(
        "linux",
        host_arch(),
        None,
        &[tar_layer(&[("marker", b"linux")])],
        Compression::Gzip,
    )?;
    multi.image(
        "darwin",
        "arm64",
        Some("14.5"),
        &[tar_layer(&[("marker", b"darwin")])],
        Compression::Gzip,
    )?;
    let index = multi.finish()?;
    reg.push(&multi.dir, "farm/tool:2")?;
    let mut mac = Layout::new(&work.path().join("mac"))?;
    mac.image(
        "darwin",
        "arm64",
        None,
        &[tar_layer(&[("m", b"x")])],
        Compression::Gzip,
    )?;
    mac.finish()?;
    reg.push(&mac.dir, "farm/maconly:1")?;

    let cfg = config_file(work.path(), &[(&reg.addr, vec![], true)])?;
    let server = server_with(&cfg).await?;
    let (_, mut img) = server.client().await?;
    let name = format!("{}/farm/tool:2", reg.addr);
    img.pull_image(pull_req(&name, None)).await?;
    assert_eq!(
        std::fs::read(snapshot_of(&server, &name).await?.join("marker"))?,
        b"linux"
    );
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&format!("{}/farm/tool@{index}", reg.addr)),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(st.image.is_some(), "the repo digest is the index digest");

    let e = img
        .pull_image(pull_req(&format!("{}/farm/maconly:1", reg.addr), None))
        .await
        .expect_err("darwin-only on linux");
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains(&format!(
            "no manifest for linux/{} in {}/farm/maconly:1; available: darwin/arm64",
            host_arch(),
            reg.addr
        )),
        "{}",
        e.message()
    );

    // The override picks the other entry (the CLI, into the same store).
    let out = std::process::Command::new(binary())
        .args(server.args())
        .args(["image", "pull", "--quiet", "--platform", "darwin/arm64"])
        .arg(format!("{}/farm/tool:2", reg.addr))
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout)?.trim().to_string();
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&id),
            verbose: true,
        })
        .await?
        .into_inner();
    assert!(st.info["info"].contains("darwin/arm64"), "{:?}", st.info);
    assert_eq!(
        std::fs::read(snapshot_of(&server, &id).await?.join("marker"))?,
        b"darwin"
    );
    let ls = std::process::Command::new(binary())
        .args(server.args())
        .args(["image", "ls"])
        .output()?;
    let ls = String::from_utf8(ls.stdout)?;
    assert!(ls.contains(&name) && ls.contains("darwin/arm64"), "{ls}");
    Ok(())
}

#[tokio::test]
async fn basic_and_bearer_auth() -> anyhow::Result<()> {
    let reg = TestRegistry::start_with_basic_auth("builder", "s3cret-pw")?;
    let work = tempfile::tempdir()?;
    let mut layout = Layout::new(&work.path().join("app"))?;
    layout.image(
        "linux",
        host_arch(),
        None,
        &[tar_layer(&[("f", b"auth")])],
        Compression::Gzip,
    )?;
    layout.finish()?;
    reg.push(&layout.dir, "private/app:1")?;
    let plain = TestRegistry::start()?;
    plain.push(&layout.dir, "private/app:1")?;
    let proxy = Proxy::start(
        &plain.addr,
        ProxyMode {
            bearer: Some(("robot".into(), "t0ken-pw".into())),
            ..Default::default()
        },
    )
    .await?;

    let cfg = config_file(
        work.path(),
        &[(&reg.addr, vec![], true), (&proxy.addr, vec![], true)],
    )?;
    let server = server_with(&cfg).await?;
    let (_, mut img) = server.client().await?;
    for (addr, user, pass) in [
        (&reg.addr, "builder", "s3cret-pw"),
        (&proxy.addr, "robot", "t0ken-pw"),
    ] {
        let name = format!("{addr}/private/app:1");
        let e = img
            .pull_image(pull_req(&name, None))
            .await
            .expect_err("anonymous");
        assert_eq!(e.code(), Code::Unauthenticated, "{addr}: {e:?}");
        let e = img
            .pull_image(pull_req(&name, basic(user, "wrong-password")))
            .await
            .expect_err("wrong password");
        assert_eq!(e.code(), Code::Unauthenticated, "{addr}: {e:?}");
        assert!(!e.message().contains("wrong-password"), "{}", e.message());
        img.pull_image(pull_req(&name, basic(user, pass))).await?;
        // kubelet's `auth` form (base64 user:password) works the same.
        let auth = Some(cri::AuthConfig {
            auth: base64_encode(format!("{user}:{pass}").as_bytes()),
            ..Default::default()
        });
        img.pull_image(pull_req(&name, auth)).await?;
    }
    let log = server.log();
    for secret in ["s3cret-pw", "t0ken-pw", "test-token-0123456789"] {
        assert!(!log.contains(secret), "{secret} in the server log");
    }
    Ok(())
}

#[tokio::test]
async fn mirrors_first_then_origin_and_corrupt_blobs_refused() -> anyhow::Result<()> {
    let reg = TestRegistry::start()?;
    let work = tempfile::tempdir()?;
    let mut layout = Layout::new(&work.path().join("app"))?;
    layout.image(
        "linux",
        host_arch(),
        None,
        &[tar_layer(&[("f", b"mirror")])],
        Compression::Gzip,
    )?;
    layout.finish()?;
    reg.push(&layout.dir, "lib/app:1")?;
    let mirror = Proxy::start(&reg.addr, ProxyMode::default()).await?;
    let dead = format!("http://127.0.0.1:{}", free_port()?);

    // A dead mirror, then a live one: the live mirror serves the pull.
    let cfg = config_file(
        work.path(),
        &[(
            &reg.addr,
            vec![dead, format!("http://{}", mirror.addr)],
            true,
        )],
    )?;
    let server = server_with(&cfg).await?;
    let (_, mut img) = server.client().await?;
    let name = format!("{}/lib/app:1", reg.addr);
    img.pull_image(pull_req(&name, None)).await?;
    let seen = mirror.seen.lock().expect("seen").clone();
    assert!(
        seen.iter().any(|(_, p, _)| p.contains("/manifests/1")),
        "mirror not used: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, p, _)| p.contains("/blobs/")),
        "{seen:?}"
    );
    drop(server);

    // A mirror that corrupts blobs: refused, nothing of it kept.
    let bad = Proxy::start(&reg.addr, ProxyMode::default()).await?;
    bad.mode.corrupt_blobs.store(true, Ordering::Relaxed);
    let cfg = config_file(work.path(), &[(&bad.addr, vec![], true)])?;
    let server = server_with(&cfg).await?;
    let (_, mut img) = server.client().await?;
    let e = img
        .pull_image(pull_req(&format!("{}/lib/app:1", bad.addr), None))
        .await
        .expect_err("corrupt blob");
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(e.message().contains("digest mismatch"), "{}", e.message());
    let listed = img
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1, "only the fixture busybox");
    verify_store(&server.root())?;
    assert_eq!(
        std::fs::read_dir(server.root().join("images/ingest"))?.count(),
        0
    );
    Ok(())
}

/// A tar with raw entry names (no `..` checks): (name, kind, link target, data), mode 0755.
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let with_mode: Vec<_> = entries
        .iter()
        .map(|&(name, kind, link, data)| (name, kind, link, data, 0o755))
        .collect();
    raw_tar_modes(&with_mode)
}

/// [`raw_tar`] with each entry's mode: (name, kind, link target, data, mode), owned by root.
fn raw_tar_modes(entries: &[(&str, tar::EntryType, &str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data, mode) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *data).expect("entry");
    }
    b.into_inner().expect("tar")
}

#[tokio::test]
async fn hostile_layers_write_nothing_outside() -> anyhow::Result<()> {
    use tar::EntryType::{Continuous, Directory, Link, Regular, Symlink};
    let reg = TestRegistry::start()?;
    let work = tempfile::tempdir()?;
    let outside = tempfile::Builder::new()
        .prefix("darwin-cri-outside")
        .tempdir()?;
    let out = outside.path().display().to_string();
    std::fs::write(outside.path().join("target"), b"original")?;
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "traversal",
            raw_tar(&[("../../../../../../pwned-traversal", Regular, "", b"x")]),
            false,
        ),
        (
            "absolute",
            raw_tar(&[(&format!("{out}/pwned-abs"), Regular, "", b"x")]),
            false,
        ),
        (
            "hardlink",
            raw_tar(&[
                ("etc/", Directory, "", b""),
                ("etc/h", Link, &format!("{out}/target"), b""),
            ]),
            false,
        ),
        (
            "hardlink-rel",
            raw_tar(&[("h", Link, "../../../../../../etc/passwd", b"")]),
            false,
        ),
        // A symlink out, then a file through it: lands inside the snapshot.
        (
            "symlink-abs",
            raw_tar(&[
                ("link", Symlink, &out, b""),
                ("link/pwned-sym", Regular, "", b"x"),
            ]),
            true,
        ),
        (
            "symlink-rel",
            raw_tar(&[
                ("d/", Directory, "", b""),
                ("d/up", Symlink, "../../../../../../../..", b""),
                (&format!("d/up{out}/pwned-rel"), Regular, "", b"x"),
            ]),
            true,
        ),
        (
            "whiteout-dotdot",
            raw_tar(&[("etc/.wh...", Regular, "", b"")]),
            false,
        ),
        // Issue #26, 2: a setuid-root file as a contiguous-file entry (tar type '7', a regular
        // file to every reader) kept mode 4755; and its setgid twin, and a regular one.
        (
            "contiguous-setuid",
            raw_tar_modes(&[
                ("bin/", Directory, "", b"", 0o755),
                ("bin/su7", Continuous, "", b"#!/bin/sh\n", 0o4755),
                ("bin/sg7", Continuous, "", b"#!/bin/sh\n", 0o2755),
                ("bin/su0", Regular, "", b"#!/bin/sh\n", 0o4755),
            ]),
            true,
        ),
    ];
    let cfg = config_file(work.path(), &[(&reg.addr, vec![], true)])?;
    let server = server_with(&cfg).await?;
    let (_, mut img) = server.client().await?;
    for (name, layer, contained) in cases {
        let mut l = Layout::new(&work.path().join(name))?;
        l.image("linux", host_arch(), None, &[layer], Compression::None)?;
        l.finish()?;
        reg.push(&l.dir, &format!("hostile/{name}:1"))?;
        let r = img
            .pull_image(pull_req(&format!("{}/hostile/{name}:1", reg.addr), None))
            .await;
        match (contained, r) {
            (false, Err(e)) => assert_eq!(e.code(), Code::InvalidArgument, "{name}: {e:?}"),
            (false, Ok(_)) => panic!("{name}: hostile layer accepted"),
            (true, r) => {
                r.map_err(|e| anyhow::anyhow!("{name}: {e:?}"))?;
            }
        }
        let names: Vec<_> = std::fs::read_dir(outside.path())?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(names, vec![std::ffi::OsString::from("target")], "{name}");
        assert_eq!(
            std::fs::read(outside.path().join("target"))?,
            b"original",
            "{name}"
        );
        for p in ["/pwned-traversal", "/tmp/pwned-traversal"] {
            assert!(!Path::new(p).exists(), "{name}: {p}");
        }
        assert!(std::fs::read_to_string("/etc/passwd")?.contains("root"));
        let setuid = files_with_setuid(&server.root().join("images"))?;
        assert!(
            setuid.is_empty(),
            "{name}: setuid/setgid files kept: {setuid:?}"
        );
    }
    verify_store(&server.root())?;
    Ok(())
}

/// Files (not directories) under `dir` with a setuid or setgid bit, links not followed.
fn files_with_setuid(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.is_dir() {
                todo.push(e.path());
            } else if !m.file_type().is_symlink() && m.permissions().mode() & 0o6000 != 0 {
                found.push(e.path());
            }
        }
    }
    Ok(found)
}

/// Pushes an image of two gzip layers to `reg` as `repo_tag`: a one-byte file `small`, then
/// `big`, 6 MB of incompressible data (seeded by `seed`), which it returns.
fn push_small_and_big(
    reg: &TestRegistry,
    work: &Path,
    repo_tag: &str,
    seed: u64,
) -> anyhow::Result<Vec<u8>> {
    let mut big = vec![0u8; 6 << 20];
    let mut x = seed;
    for b in big.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut layout = Layout::new(&work.join(repo_tag.replace(['/', ':'], "-")))?;
    layout.image(
        "linux",
        host_arch(),
        None,
        &[tar_layer(&[("small", b"s")]), tar_layer(&[("big", &big)])],
        Compression::Gzip,
    )?;
    layout.finish()?;
    reg.push(&layout.dir, repo_tag)?;
    Ok(big)
}

#[tokio::test]
async fn concurrent_pulls_share_downloads_and_a_killed_pull_resumes() -> anyhow::Result<()> {
    let reg = TestRegistry::start()?;
    let work = tempfile::tempdir()?;
    let big = push_small_and_big(&reg, work.path(), "big/app:1", 0x9e37_79b9_7f4a_7c15)?;
    let proxy = Proxy::start(&reg.addr, ProxyMode::default()).await?;
    let cfg = config_file(work.path(), &[(&proxy.addr, vec![], true)])?;
    let name = format!("{}/big/app:1", proxy.addr);

    // Ten concurrent pulls: one id, each blob fetched once.
    let server = server_with(&cfg).await?;
    let mut handles = Vec::new();
    for _ in 0..10 {
        let (_, mut img) = server.client().await?;
        let n = name.clone();
        handles.push(tokio::spawn(async move {
            img.pull_image(pull_req(&n, None)).await
        }));
    }
    let mut ids = Vec::new();
    for h in handles {
        ids.push(h.await??.into_inner().image_ref);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let blob_gets = |proxy: &Proxy| {
        let seen = proxy.seen.lock().expect("seen");
        let mut counts = std::collections::BTreeMap::new();
        for (m, p, _) in seen.iter() {
            if m == "GET" && p.contains("/blobs/") {
                *counts.entry(p.clone()).or_insert(0) += 1;
            }
        }
        counts
    };
    let counts = blob_gets(&proxy);
    assert_eq!(counts.len(), 3, "config and two layers: {counts:?}");
    let layer_gets: Vec<_> = counts.values().copied().collect();
    assert!(
        layer_gets.iter().filter(|&&c| c == 1).count() >= 2,
        "layers downloaded once each: {counts:?}"
    );
    drop(server);

    // A pull killed midway (throttled to 1 MB/s), then the server restarted: the next
    // pull resumes the partial blob with a Range request and the store verifies.
    let mut server = server_with(&cfg).await?;
    proxy.mode.throttle.store(1 << 20, Ordering::Relaxed);
    proxy.seen.lock().expect("seen").clear();
    let (_, mut img) = server.client().await?;
    let n = name.clone();
    let pending = tokio::spawn(async move { img.pull_image(pull_req(&n, None)).await });
    let ingest = server.root().join("images/ingest");
    wait_for(Duration::from_secs(30), "a partial download", || {
        let ingest = ingest.clone();
        async move {
            std::fs::read_dir(&ingest)
                .ok()?
                .filter_map(|e| e.ok()?.metadata().ok())
                .any(|m| m.len() > (1 << 20))
                .then_some(())
        }
    })
    .await?;
    server.kill();
    let _ = pending.await;
    proxy.mode.throttle.store(0, Ordering::Relaxed);
    server.restart().await?;
    let (_, mut img) = server.client().await?;
    let id = img
        .pull_image(pull_req(&name, None))
        .await?
        .into_inner()
        .image_ref;
    assert_eq!(id, ids[0]);
    let ranged = proxy.seen.lock().expect("seen").iter().any(|(_, _, r)| {
        r.as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")
    });
    assert!(ranged, "the second pull resumed with a Range request");
    verify_store(&server.root())?;
    assert_eq!(std::fs::read_dir(&ingest)?.count(), 0, "no partial left");
    let snap = snapshot_of(&server, &name).await?;
    assert_eq!(std::fs::read(snap.join("big"))?.len(), big.len());
    Ok(())
}

/// A layer is unpacked while it downloads (its file grows in the half-built snapshot before the
/// blob is complete); a download that breaks and resumes under the unpacker, or that the registry
/// makes start over, still gives the right snapshot and a verified store.
#[tokio::test(flavor = "multi_thread")]
async fn layers_unpack_while_they_download_through_resumes_and_restarts() -> anyhow::Result<()> {
    let reg = TestRegistry::start()?;
    let work = tempfile::tempdir()?;
    let big = push_small_and_big(&reg, work.path(), "stream/app:1", 0x2545_f491_4f6c_dd1d)?;
    let proxy = Proxy::start(&reg.addr, ProxyMode::default()).await?;
    let cfg = config_file(work.path(), &[(&proxy.addr, vec![], true)])?;
    let name = format!("{}/stream/app:1", proxy.addr);

    // Throttled to 2 MB/s: the big file grows in the snapshot being built while the blob is
    // still arriving.
    let server = server_with(&cfg).await?;
    proxy.mode.throttle.store(2 << 20, Ordering::Relaxed);
    let (_, mut img) = server.client().await?;
    let n = name.clone();
    let pending = tokio::spawn(async move { img.pull_image(pull_req(&n, None)).await });
    let (tmp, ingest) = (
        server.root().join("images/tmp"),
        server.root().join("images/ingest"),
    );
    wait_for(
        Duration::from_secs(30),
        "a file written while its layer downloads",
        || {
            let (tmp, ingest) = (tmp.clone(), ingest.clone());
            async move {
                let unpacked = std::fs::read_dir(&tmp)
                    .ok()?
                    .filter_map(|e| std::fs::metadata(e.ok()?.path().join("big")).ok())
                    .map(|m| m.len())
                    .max()?;
                let downloading = std::fs::read_dir(&ingest)
                    .ok()?
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .any(|m| m.len() > 0);
                (unpacked > (1 << 20) && downloading).then_some(())
            }
        },
    )
    .await?;
    pending.await??;
    let snap = snapshot_of(&server, &name).await?;
    assert_eq!(std::fs::read(snap.join("big"))?, big);
    verify_store(&server.root())?;
    drop(server);

    // Broken halfway, resumed with a Range request, under the unpacker.
    for ignore_range in [false, true] {
        let server = server_with(&cfg).await?;
        proxy.mode.throttle.store(4 << 20, Ordering::Relaxed);
        proxy.mode.cut_blobs.store(1, Ordering::Relaxed);
        proxy
            .mode
            .ignore_range
            .store(ignore_range, Ordering::Relaxed);
        proxy.seen.lock().expect("seen").clear();
        let (_, mut img) = server.client().await?;
        img.pull_image(pull_req(&name, None)).await?;
        assert_eq!(
            proxy.mode.cut_blobs.load(Ordering::Relaxed),
            0,
            "a body was cut"
        );
        let resumed = proxy.seen.lock().expect("seen").iter().any(|(_, _, r)| {
            r.as_deref()
                .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")
        });
        assert!(resumed, "the download resumed with a Range request");
        let snap = snapshot_of(&server, &name).await?;
        assert_eq!(
            std::fs::read(snap.join("big"))?,
            big,
            "ignore_range: {ignore_range}"
        );
        assert_eq!(std::fs::read(snap.join("small"))?, b"s");
        verify_store(&server.root())?;
        if ignore_range {
            assert!(
                server.log().contains("unpacking it again from the blob"),
                "the layer was unpacked again after the restart: {}",
                server.log()
            );
        }
    }
    Ok(())
}
