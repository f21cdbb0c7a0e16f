//! The image service on imported images: list, status, pull of a present image, remove.

use darwin_cri_tests::v1 as cri;
use darwin_cri_tests::*;

fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec {
        image: image.into(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn imported_images_list_resolve_and_remove() -> anyhow::Result<()> {
    let server = Server::start().await?;
    let (mut rt, mut img) = server.client().await?;
    let images = img
        .list_images(cri::ListImagesRequest::default())
        .await?
        .into_inner()
        .images;
    assert_eq!(images.len(), 1);
    let image = &images[0];
    assert!(
        image.id.starts_with("sha256:") && image.id.len() == 71,
        "{}",
        image.id
    );
    assert_eq!(image.repo_tags, vec![BUSYBOX.to_string()]);
    assert_eq!(image.repo_digests.len(), 1);
    assert!(image.repo_digests[0].starts_with("docker.io/library/busybox@sha256:"));
    assert!(image.size > 100_000);

    // Every name kubelet or crictl may use resolves to the same image.
    let short_id = image.id.trim_start_matches("sha256:")[..12].to_string();
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox",
        &image.id,
        &short_id,
        &image.repo_digests[0],
    ] {
        let st = img
            .image_status(cri::ImageStatusRequest {
                image: spec(name),
                verbose: true,
            })
            .await?
            .into_inner();
        assert_eq!(
            st.image.as_ref().map(|i| i.id.as_str()),
            Some(image.id.as_str()),
            "{name}"
        );
        assert!(st.info["info"].contains("chainID"));
    }
    // PullImage of a present image answers its id, which is the id ListImages reports.
    let pulled = img
        .pull_image(cri::PullImageRequest {
            image: spec("busybox"),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(pulled.image_ref, image.id);
    let e = img
        .pull_image(cri::PullImageRequest {
            image: spec("ghcr.io/nope/nothing:1"),
            ..Default::default()
        })
        .await
        .expect_err("no network to ghcr.io here");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");

    let fs = img
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await?
        .into_inner();
    let usage = &fs.image_filesystems[0];
    assert!(usage.used_bytes.as_ref().map(|u| u.value).unwrap_or(0) > 100_000);
    assert!(usage.inodes_used.as_ref().map(|u| u.value).unwrap_or(0) > 10);

    // Layers are unpacked once and shared: two containers, one snapshot.
    let logs = server.dir.path().join("logs");
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(pod_config("img", &logs)),
            runtime_handler: String::new(),
        })
        .await?
        .into_inner()
        .pod_sandbox_id;
    for name in ["a", "b"] {
        let mut config = container_config(name, "true");
        config.image = spec(&image.id);
        rt.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.clone(),
            config: Some(config),
            sandbox_config: None,
        })
        .await?;
    }
    assert_eq!(
        std::fs::read_dir(server.root().join("images/snapshots"))?.count(),
        1
    );

    // Used by (stopped) containers: the name goes at once, as with containerd; the snapshot
    // their roots are made of stays until the last of them is removed.
    img.remove_image(cri::RemoveImageRequest {
        image: spec("busybox"),
    })
    .await?;
    let snapshots = || -> anyhow::Result<usize> {
        Ok(std::fs::read_dir(server.root().join("images/snapshots"))?.count())
    };
    assert_eq!(snapshots()?, 1, "kept for the containers");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
        pod_sandbox_id: pod.clone(),
    })
    .await?;
    assert_eq!(snapshots()?, 0, "collected with the last container");
    let st = img
        .image_status(cri::ImageStatusRequest {
            image: spec(&image.id),
            verbose: false,
        })
        .await?
        .into_inner();
    assert!(st.image.is_none(), "removed right away");
    assert!(
        img.list_images(cri::ListImagesRequest::default())
            .await?
            .into_inner()
            .images
            .is_empty()
    );
    Ok(())
}
