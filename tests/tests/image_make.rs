//! Making images: `image commit` of a container's changes (overlay and copied roots), `image
//! tag`, `image save` to an OCI layout that skopeo verifies, and the results seen by the CRI and
//! run as containers.

use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

/// Runs `darwin-cri image ARGS` against the server's root; stdout.
fn image_cli(server: &Server, args: &[&str]) -> anyhow::Result<String> {
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
    Ok(String::from_utf8(out.stdout)?)
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
        "cat /added /d/e/f; test -e /bin/vi || echo vi-gone; stat -c %h /added; tail -n1 /etc/group",
    );
    config.image = Some(cri::ImageSpec {
        image: "localhost/committed:1".into(),
        ..Default::default()
    });
    let second = create(&mut rt, &pod, config).await?;
    start(&mut rt, &second).await?;
    wait_exited(&mut rt, &second, Duration::from_secs(10)).await?;
    let log = std::fs::read_to_string(server.dir.path().join("logs/maker/from-commit/0.log"))?;
    for line in ["new", "deep", "vi-gone", "2", "extra"] {
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
