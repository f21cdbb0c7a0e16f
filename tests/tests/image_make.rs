//! Making images: `image commit` of a container's changes (overlay and copied roots), `image
//! tag`, `image save` to an OCI layout that skopeo verifies, and the results seen by the CRI and
//! run as containers.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use darwin_cri_tests::registry::{Proxy, ProxyMode, TestRegistry};
use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

/// Runs `darwin-cri image ARGS` against the server's root; stdout.
fn image_cli(server: &Server, args: &[&str]) -> anyhow::Result<String> {
    Ok(image_cli_both(server, args)?.0)
}

/// Runs `darwin-cri image ARGS` against the server's root; stdout and stderr.
fn image_cli_both(server: &Server, args: &[&str]) -> anyhow::Result<(String, String)> {
    let out = Command::new(binary())
        .args(server.args())
        .arg("image")
        .args(args)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "darwin-cri image {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((
        String::from_utf8(out.stdout)?,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The entry names of the top layer of the image saved in an OCI layout.
fn top_layer_entries(layout: &Path) -> anyhow::Result<Vec<String>> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap_or_default();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob(manifest_digest))?)?;
    let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
    let top = layers.last().ok_or_else(|| anyhow::anyhow!("no layers"))?;
    let file = std::fs::File::open(blob(top["digest"].as_str().unwrap_or_default()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut names = Vec::new();
    for e in tar.entries()? {
        let mut e = e?;
        let name = e.path()?.display().to_string();
        let mut sink = Vec::new();
        e.read_to_end(&mut sink)?;
        names.push(name);
    }
    Ok(names)
}

async fn commit_round_trip(config: &str) -> anyhow::Result<()> {
    let server = Server::start_with_config(config).await?;
    let (mut rt, mut images) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "maker").await?;
    let id = create(
        &mut rt,
        &pod,
        container_config(
            "maker",
            "echo new > /added && ln /added /added-link && rm /bin/vi && mkdir -p /d/e && \
             echo deep > /d/e/f && echo extra >> /etc/group && touch /ready && sleep 1000",
        ),
    )
    .await?;
    start(&mut rt, &id).await?;
    let rt2 = rt.clone();
    wait_for(Duration::from_secs(10), "the changes", || {
        let mut rt = rt2.clone();
        let id = id.clone();
        async move {
            let r = exec(&mut rt, &id, &["test", "-f", "/ready"], 5)
                .await
                .ok()?;
            (r.exit_code == 0).then_some(())
        }
    })
    .await?;

    let image_id = image_cli(&server, &["commit", &id, "localhost/committed:1"])?;
    let image_id = image_id.trim();
    // The CRI sees it at once, under its name.
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    let committed = listed
        .iter()
        .find(|i| i.id == image_id)
        .ok_or_else(|| anyhow::anyhow!("{image_id} not in ListImages: {listed:?}"))?;
    assert_eq!(committed.repo_tags, vec!["localhost/committed:1"]);

    // The layer holds the container's changes and nothing the runtime put there.
    let layout = server.dir.path().join("saved");
    image_cli(
        &server,
        &[
            "save",
            "localhost/committed:1",
            "-o",
            &layout.display().to_string(),
        ],
    )?;
    let entries = top_layer_entries(&layout)?;
    for wanted in ["added", "added-link", "bin/.wh.vi", "d/e/f", "etc/group"] {
        assert!(
            entries.iter().any(|e| e.trim_end_matches('/') == wanted),
            "{wanted} missing: {entries:?}"
        );
    }
    // Nor the macOS layout the runtime makes where the image has nothing (jail.rs).
    for unwanted in [
        "etc/hosts",
        "etc/resolv.conf",
        "etc/hostname",
        "dev",
        "proc",
        "Library",
        "Users",
        "private",
        "var",
        "root/Library",
    ] {
        assert!(
            !entries.iter().any(|e| e.trim_end_matches('/') == unwanted),
            "{unwanted} is the runtime's, yet in the layer: {entries:?}"
        );
    }

    // A container of the new image has the changes; the hard link survives.
    let mut config = container_config(
        "from-commit",
        "cat /added /d/e/f; test -e /bin/vi || echo vi-gone; \
         test $(stat -c %i /added) = $(stat -c %i /added-link) && echo linked; tail -n1 /etc/group",
    );
    config.image = Some(cri::ImageSpec {
        image: "localhost/committed:1".into(),
        ..Default::default()
    });
    let second = create(&mut rt, &pod, config).await?;
    start(&mut rt, &second).await?;
    wait_exited(&mut rt, &second, Duration::from_secs(10)).await?;
    let log = std::fs::read_to_string(server.dir.path().join("logs/maker/from-commit/0.log"))?;
    for line in ["new", "deep", "vi-gone", "linked", "extra"] {
        assert!(
            log.lines().any(|l| l.ends_with(&format!(" {line}"))),
            "{line} missing from {log}"
        );
    }

    // Tagged, and a saved layout that skopeo reads and verifies digest by digest.
    image_cli(
        &server,
        &["tag", "localhost/committed:1", "localhost/committed:latest"],
    )?;
    let copy = server.dir.path().join("copied");
    let out = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("oci:{}:1", copy.display()))
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = images
        .image_status(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "localhost/committed:latest".into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await?
        .into_inner();
    assert_eq!(status.image.map(|i| i.id).unwrap_or_default(), image_id);
    Ok(())
}

/// An overlay root (the Linux twin's default): the changes come from the upper directory.
#[tokio::test(flavor = "multi_thread")]
async fn commit_of_an_overlay_root_keeps_the_containers_changes_only() -> anyhow::Result<()> {
    commit_round_trip("").await
}

/// A copied root (the stand-in for macOS's APFS clones): the changes come from a walk that
/// compares the root with the image's snapshot.
#[tokio::test(flavor = "multi_thread")]
async fn commit_of_a_copied_root_keeps_the_containers_changes_only() -> anyhow::Result<()> {
    commit_round_trip("[runtime]\nrootfs = \"copy\"\n").await
}

/// Runs a container of `image` in a new pod of `server` with `script`; its log.
async fn run_image(
    server: &Server,
    image: &str,
    name: &str,
    script: &str,
) -> anyhow::Result<String> {
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, server, name).await?;
    let mut config = container_config(name, script);
    config.image = Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    });
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    wait_exited(&mut rt, &id, Duration::from_secs(20)).await?;
    Ok(std::fs::read_to_string(
        server
            .dir
            .path()
            .join("logs")
            .join(name)
            .join(name)
            .join("0.log"),
    )?)
}

fn skopeo(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("skopeo").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "skopeo {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

const CHECK_SCRIPT: &str = "cat /added; test -e /bin/vi || echo vi-gone; \
     test $(stat -c %i /added) = $(stat -c %i /added-link) && echo linked";

fn assert_checked(log: &str) {
    for line in ["new", "vi-gone", "linked"] {
        assert!(
            log.lines().any(|l| l.ends_with(&format!(" {line}"))),
            "{line} missing from {log}"
        );
    }
}

/// A committed image pushed to a real registry (through a proxy that breaks an upload chunk
/// on the way) is read and verified by skopeo, pulled and run by a second darwin-cri from an
/// empty root and by containerd; a second push sends nothing; another repository of the same
/// registry gets the blobs by mount; zstd layers are converted once and kept.
#[tokio::test(flavor = "multi_thread")]
async fn pushed_images_are_read_by_skopeo_darwin_cri_and_containerd() -> anyhow::Result<()> {
    let registry = TestRegistry::start()?;
    let proxy = Proxy::start(
        &registry.addr,
        ProxyMode {
            break_patch: 3.into(),
            ..Default::default()
        },
    )
    .await?;
    // A registry that wants a bearer token, from --user.
    let guarded = Proxy::start(
        &registry.addr,
        ProxyMode {
            bearer: Some(("builder".into(), "s3cret".into())),
            ..Default::default()
        },
    )
    .await?;
    let insecure = format!(
        "[image.registries.{:?}]\ninsecure = true\n[image.registries.{:?}]\ninsecure = true\n\
         [image.registries.{:?}]\ninsecure = true\n",
        registry.addr, proxy.addr, guarded.addr
    );
    let server = Server::start_with_config(&insecure).await?;
    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "maker").await?;
    let id = create(
        &mut rt,
        &pod,
        container_config(
            "maker",
            "echo new > /added && ln /added /added-link && rm /bin/vi",
        ),
    )
    .await?;
    start(&mut rt, &id).await?;
    wait_exited(&mut rt, &id, Duration::from_secs(10)).await?;
    image_cli(&server, &["commit", &id, "localhost/tools:1"])?;

    // Chunks of 64 KiB: the busybox layer goes in a few dozen, one of which loses its answer.
    let via_proxy = format!("{}/made/tools:1", proxy.addr);
    let (_, summary) = image_cli_both(
        &server,
        &[
            "push",
            "--chunk-size",
            "65536",
            "localhost/tools:1",
            &via_proxy,
        ],
    )?;
    assert!(summary.contains("3 blobs sent"), "{summary}");
    // The third chunk was lost; the upload went on from what the registry had, 128 KiB.
    assert!(
        summary.contains("resuming") && summary.contains("offset=131072"),
        "{summary}"
    );
    assert!(
        proxy
            .mode
            .patches
            .load(std::sync::atomic::Ordering::Relaxed)
            > 10
    );

    // The tag names an index with the image's platform; the manifest is under its digest.
    let direct = format!("docker://{}/made/tools:1", registry.addr);
    let inspect = |what: &str| -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&skopeo(&[
            "inspect",
            "--raw",
            "--tls-verify=false",
            what,
        ])?)?)
    };
    let index = inspect(&direct)?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["platform"]["os"], "linux", "{index}");
    let manifest_digest = entries[0]["digest"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let raw = inspect(&format!(
        "docker://{}/made/tools@{manifest_digest}",
        registry.addr
    ))?;
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(2), "{raw}");
    let copied = server.dir.path().join("skopeo-copy");
    skopeo(&[
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &direct,
        &format!("oci:{}:1", copied.display()),
    ])?;

    // Pushed again: nothing sent. To another repository: mounted, not sent.
    let (_, again) = image_cli_both(&server, &["push", "localhost/tools:1", &via_proxy])?;
    assert!(
        again.contains("0 blobs sent") && again.contains("3 already there"),
        "{again}"
    );
    let other = format!("{}/copies/tools:1", proxy.addr);
    let (_, mounted) = image_cli_both(&server, &["push", "localhost/tools:1", &other])?;
    assert!(mounted.contains("3 mounted"), "{mounted}");
    assert!(
        proxy
            .seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(m, p, _)| m == "POST"
                && p.contains("mount=")
                && (p.contains("from=made%2Ftools") || p.contains("from=made/tools"))),
        "no mount request"
    );

    // With no destination, the name given is where it goes (not the image's first name).
    let named = format!("{}/named/tools:2", proxy.addr);
    image_cli(&server, &["tag", "localhost/tools:1", &named])?;
    let (_, summary) = image_cli_both(&server, &["push", &named])?;
    assert!(summary.contains(&format!("pushed {named}")), "{summary}");

    // An image built on a pushed one: the base's layers are mounted from where they are.
    let context = server.dir.path().join("derived");
    std::fs::create_dir_all(&context)?;
    std::fs::write(
        context.join("Containerfile"),
        "FROM localhost/tools:1\nRUN echo more > /more\n",
    )?;
    image_cli(
        &server,
        &[
            "build",
            "-t",
            "localhost/derived:1",
            &context.display().to_string(),
        ],
    )?;
    let derived = format!("{}/derived/tools:1", proxy.addr);
    let (_, summary) = image_cli_both(&server, &["push", "localhost/derived:1", &derived])?;
    assert!(
        summary.contains("2 blobs sent") && summary.contains("2 mounted"),
        "{summary}"
    );
    // The same platform pushed again to a tag: its entry in the tag's index is replaced.
    let derived_digest = image_cli(&server, &["push", "localhost/derived:1", &via_proxy])?;
    let index = inspect(&direct)?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "{index}");
    assert_eq!(entries[0]["digest"], derived_digest.trim(), "{index}");
    // Pushed as the manifest alone, the tag names the manifest.
    let plain = format!("{}/made/plain:1", registry.addr);
    image_cli(
        &server,
        &["push", "--manifest-only", "localhost/tools:1", &plain],
    )?;
    let raw = inspect(&format!("docker://{plain}"))?;
    assert_eq!(raw["layers"].as_array().map(Vec::len), Some(2), "{raw}");

    let guarded_dest = format!("{}/guarded/tools:1", guarded.addr);
    let out = Command::new(binary())
        .args(server.args())
        .args(["image", "push", "localhost/tools:1", &guarded_dest])
        .output()?;
    assert!(
        !out.status.success(),
        "anonymous push to a guarded registry"
    );
    let (_, summary) = image_cli_both(
        &server,
        &[
            "push",
            "--user",
            "builder:s3cret",
            "localhost/tools:1",
            &guarded_dest,
        ],
    )?;
    assert!(summary.contains("pushed"), "{summary}");
    assert!(
        guarded
            .seen
            .lock()
            .expect("seen")
            .iter()
            .any(|(m, p, _)| m == "PUT" && p.contains("/manifests/")),
        "the manifest went through the guarded registry"
    );

    // zstd: converted once, kept, and read by skopeo.
    let zstd_dest = format!("{}/made/tools:zstd", registry.addr);
    let push_zstd = || {
        image_cli_both(
            &server,
            &[
                "push",
                "--compression",
                "zstd",
                "localhost/tools:1",
                &zstd_dest,
            ],
        )
    };
    let (_, first) = push_zstd()?;
    assert!(first.contains("2 blobs sent"), "{first}");
    let (_, second) = push_zstd()?;
    assert!(second.contains("0 blobs sent"), "{second}");
    let index = inspect(&format!("docker://{zstd_dest}"))?;
    let digest = index["manifests"][0]["digest"].as_str().unwrap_or_default();
    let raw = inspect(&format!("docker://{}/made/tools@{digest}", registry.addr))?;
    assert!(raw.to_string().contains("tar+zstd"), "{raw}");

    // A second darwin-cri, empty, pulls and runs both.
    let fresh = Server::start_with_config(&insecure).await?;
    let (_, mut images) = fresh.client().await?;
    for reference in [format!("{}/made/tools:1", registry.addr), zstd_dest.clone()] {
        let pulled = images
            .pull_image(cri::PullImageRequest {
                image: Some(cri::ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await?
            .into_inner();
        assert!(!pulled.image_ref.is_empty());
        let name = if reference.ends_with("zstd") {
            "zstd"
        } else {
            "gzip"
        };
        assert_checked(&run_image(&fresh, &reference, name, CHECK_SCRIPT).await?);
    }

    // containerd (Debian's, with runc) pulls and runs it too.
    let out = run_in_containerd(&format!("{}/made/tools:1", registry.addr), CHECK_SCRIPT)?;
    for line in ["new", "vi-gone", "linked"] {
        assert!(
            out.lines().any(|l| l.trim() == line),
            "{line} missing from containerd's run: {out}"
        );
    }
    Ok(())
}

/// Pulls `reference` (plain HTTP) into a private containerd and runs `script` in it; stdout.
fn run_in_containerd(reference: &str, script: &str) -> anyhow::Result<String> {
    let dir = tempfile::Builder::new()
        .prefix("darwin-cri-ctrd")
        .tempdir()?;
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("config.toml"),
        format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("containerd.log"))?;
    let mut daemon = Command::new("containerd")
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    let result = (|| -> anyhow::Result<String> {
        let socket = dir.path().join("c.sock");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let ctr = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new("ctr")
                .arg("--address")
                .arg(&socket)
                .args(["-n", "darwin-cri-test"])
                .args(args)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "ctr {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        ctr(&["images", "pull", "--plain-http", reference])?;
        ctr(&[
            "run",
            "--rm",
            reference,
            "made-by-darwin-cri",
            "/bin/sh",
            "-c",
            script,
        ])
    })();
    let _ = daemon.kill();
    let _ = daemon.wait();
    let log = std::fs::read_to_string(dir.path().join("containerd.log")).unwrap_or_default();
    result.with_context(|| format!("containerd's log: {log}"))
}

/// `image base`: the host's bash and coreutils with what they load, and an /etc with root and a
/// build user (the image's USER), run as a container; the same files give the same image id.
#[tokio::test(flavor = "multi_thread")]
async fn a_base_image_of_host_files_runs_bash_and_is_reproducible() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let first = image_cli(&server, &["base", "localhost/hostbase:1"])?;
    let second = image_cli(&server, &["base", "localhost/hostbase:2"])?;
    assert_eq!(
        first.trim(),
        second.trim(),
        "the same files, the same image id"
    );

    let (mut rt, _) = server.client().await?;
    let pod = run_pod(&mut rt, &server, "based").await?;
    let mut config = container_config("bash", "");
    config.command = vec![
        "/bin/bash".into(),
        "-c".into(),
        "ls /; cat /etc/passwd; id -un; echo home=$HOME".into(),
    ];
    config.image = Some(cri::ImageSpec {
        image: "localhost/hostbase:1".into(),
        ..Default::default()
    });
    let id = create(&mut rt, &pod, config).await?;
    start(&mut rt, &id).await?;
    let st = wait_exited(&mut rt, &id, Duration::from_secs(20)).await?;
    let log = std::fs::read_to_string(server.dir.path().join("logs/based/bash/0.log"))?;
    assert_eq!(st.exit_code, 0, "{log}");
    for line in [
        "usr",
        "etc",
        "root:x:0:0:root:/root:/bin/bash",
        "build:x:1000:1000:build:/home/build:/bin/bash",
        "build",
        "home=/home/build",
    ] {
        assert!(
            log.lines().any(|l| l.ends_with(&format!(" {line}"))),
            "{line} missing from {log}"
        );
    }
    Ok(())
}

/// `image build`: a two-stage Containerfile with ARG, ENV, WORKDIR, COPY (--chown, --from, a
/// .dockerignore), ADD of a local archive, RUN, LABEL, EXPOSE, USER and CMD, from a context on
/// another file system (a tmpfs); the RUN output streams; the image runs; a rebuild comes from
/// the cache; a failing step names itself and its exit code and leaves nothing behind.
#[tokio::test(flavor = "multi_thread")]
async fn a_containerfile_builds_runs_caches_and_fails_cleanly() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let context = server.dir.path().join("context");
    std::fs::create_dir_all(&context)?;
    mount_small_tmpfs(&context, 64 << 20)?;
    std::fs::create_dir_all(context.join("files"))?;
    std::fs::write(context.join("files/a.txt"), "file-a\n")?;
    std::fs::write(context.join("files/secret.key"), "not for the image\n")?;
    std::fs::write(context.join(".dockerignore"), "files/*.key\n")?;
    let mut archive = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(context.join("bundle.tar.gz"))?,
        flate2::Compression::default(),
    ));
    let mut header = tar::Header::new_gnu();
    header.set_size(6);
    header.set_mode(0o644);
    header.set_cksum();
    archive.append_data(&mut header, "inner.txt", &b"inner\n"[..])?;
    archive.into_inner()?.finish()?;
    std::fs::write(
        context.join("Containerfile"),
        format!(
            "FROM {BUSYBOX} AS tools\n\
             RUN mkdir -p /out && echo built-in-stage-one > /out/tool && ln /out/tool /out/tool-link\n\
             FROM {BUSYBOX}\n\
             ARG GREETING=hello\n\
             ENV APP_HOME=/app MODE=$GREETING\n\
             WORKDIR $APP_HOME\n\
             COPY --chown=1000:1000 files/ ./files/\n\
             COPY --from=tools /out/ /opt/tools/\n\
             ADD bundle.tar.gz /opt/bundle/\n\
             RUN echo \"$GREETING from RUN\" > /app/greeting && rm /bin/vi && echo step-output-line\n\
             LABEL org.example.role=test\n\
             EXPOSE 8080\n\
             USER 1000\n\
             CMD [\"sh\", \"-c\", \"cat /app/greeting /app/files/a.txt /opt/tools/tool /opt/bundle/inner.txt; ls /app/files; test -e /bin/vi || echo vi-gone; stat -c %u /app/files/a.txt; test $(stat -c %i /opt/tools/tool) = $(stat -c %i /opt/tools/tool-link) && echo linked; echo mode=$MODE\"]\n"
        ),
    )?;
    let ctx = context.display().to_string();
    let build = [
        "build",
        "-t",
        "localhost/built:1",
        "--build-arg",
        "GREETING=hi",
        ctx.as_str(),
    ];
    let (id, log) = image_cli_both(&server, &build)?;
    assert!(
        log.lines().any(|l| l == "step-output-line"),
        "the RUN output streams: {log}"
    );
    assert!(log.contains("STEP 14/14: CMD"), "{log}");

    let (mut rt, mut images) = server.client().await?;
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    assert!(
        listed
            .iter()
            .any(|i| i.id == id.trim() && i.repo_tags == vec!["localhost/built:1"]),
        "{listed:?}"
    );
    let pod = run_pod(&mut rt, &server, "built").await?;
    let mut config = container_config("built", "");
    config.command = Vec::new();
    config.image = Some(cri::ImageSpec {
        image: "localhost/built:1".into(),
        ..Default::default()
    });
    let cid = create(&mut rt, &pod, config).await?;
    start(&mut rt, &cid).await?;
    wait_exited(&mut rt, &cid, Duration::from_secs(20)).await?;
    let out = std::fs::read_to_string(server.dir.path().join("logs/built/built/0.log"))?;
    for line in [
        "hi from RUN",
        "file-a",
        "built-in-stage-one",
        "inner",
        "a.txt",
        "vi-gone",
        "1000",
        "linked",
        "mode=hi",
    ] {
        assert!(
            out.lines().any(|l| l.ends_with(&format!(" {line}"))),
            "{line} missing from {out}"
        );
    }
    assert!(!out.contains("secret.key"), ".dockerignore: {out}");

    // Again: every step that makes a layer comes from the cache.
    let (rebuilt, again) = image_cli_both(&server, &build)?;
    assert_eq!(again.matches("--> cached").count(), 5, "{again}");
    assert!(
        !again.lines().any(|l| l == "step-output-line"),
        "not run again: {again}"
    );

    // RemoveImage treats it as a pulled image: the name goes at once, the content when unused (the
    // cache then misses: its layers went with the image).
    images
        .remove_image(cri::RemoveImageRequest {
            image: Some(cri::ImageSpec {
                image: "localhost/built:1".into(),
                ..Default::default()
            }),
        })
        .await?;
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    assert!(
        !listed
            .iter()
            .any(|i| i.id == rebuilt.trim() || i.repo_tags.iter().any(|t| t.contains("built:1"))),
        "{listed:?}"
    );

    // A failing step: named with its exit code; no image, no step directory, no mount left.
    std::fs::write(
        context.join("Containerfile"),
        format!("FROM {BUSYBOX}\nRUN echo before-failing && exit 7\n"),
    )?;
    let out = Command::new(binary())
        .args(server.args())
        .args(["image", "build", "-t", "localhost/broken:1", ctx.as_str()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("step 2/2") && err.contains("exit code 7"),
        "{err}"
    );
    assert!(err.contains("before-failing"), "{err}");
    let builds = server.root().join("builds");
    let left: Vec<_> = std::fs::read_dir(&builds)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "cache" && n != "sockets")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(platform::mounts_under(&builds)?.is_empty());
    let listed = images
        .list_images(cri::ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    assert!(
        !listed
            .iter()
            .any(|i| i.repo_tags.iter().any(|t| t.contains("broken")))
    );

    // An instruction it does not carry out is an error naming its line.
    std::fs::write(
        context.join("Containerfile"),
        format!("FROM {BUSYBOX}\nHEALTHCHECK CMD true\n"),
    )?;
    let out = Command::new(binary())
        .args(server.args())
        .args(["image", "build", "-t", "localhost/broken:2", ctx.as_str()])
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("line 2") && err.contains("HEALTHCHECK"),
        "{err}"
    );
    Ok(())
}
