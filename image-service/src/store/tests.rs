use super::*;
use crate::testutil::{BuiltImage, LayerBuilder, LayoutBuilder, sha};
use crate::tree::CopyCloner;
use serde_json::{Value, json};

fn linux_amd64() -> Platform {
    Platform::parse("linux/amd64").unwrap()
}

fn open_store(root: &Path, platform: Platform) -> ImageStore {
    ImageStore::open(root, platform, Arc::new(CopyCloner)).unwrap()
}

fn layer1() -> Vec<u8> {
    LayerBuilder::new()
        .dir("bin/", 0o755)
        .file("bin/busybox", b"busybox binary", 0o755)
        .symlink("bin/sh", "busybox")
        .dir("etc/", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .file("etc/remove-me", b"old", 0o644)
        .file("var/cache/old", b"old", 0o644)
        .build()
}

fn layer2(extra: &str) -> Vec<u8> {
    LayerBuilder::new()
        .whiteout("etc/remove-me")
        .file("etc/new-file", extra.as_bytes(), 0o600)
        .opaque("var/cache")
        .file("var/cache/fresh", b"fresh", 0o644)
        .build()
}

fn config() -> Value {
    json!({
        "User": "1000:1000",
        "Env": ["PATH=/bin", "FOO=bar"],
        "Entrypoint": ["/bin/sh", "-c"],
        "Cmd": ["echo hi"],
        "WorkingDir": "/work",
        "Labels": {"a": "b"},
        "StopSignal": "SIGINT",
    })
}

fn simple_layout(dir: &Path, name: &str, extra: &str) -> BuiltImage {
    let lb = LayoutBuilder::new(dir);
    let img = lb.image(&[layer1(), layer2(extra)], true, "linux", "amd64", config());
    lb.index_json(vec![LayoutBuilder::manifest_desc(
        &img,
        None,
        json!({ANNOTATION: name}),
    )]);
    img
}

const ANNOTATION: &str = "io.containerd.image.name";

fn count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

#[test]
fn import_resolve_remove() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("images");
    let store = open_store(&root, linux_amd64());
    // a second store on the same root, as the CLI would be: primed before the import
    let other = open_store(&root, linux_amd64());
    assert!(other.list().unwrap().is_empty());

    let built = simple_layout(&t.path().join("layout"), "busybox:1.36", "new");
    let img = store
        .import_oci_layout(&t.path().join("layout"), None)
        .unwrap();
    assert_eq!(img.id, built.config_digest);
    assert_eq!(img.repo_tags, vec!["docker.io/library/busybox:1.36"]);
    assert_eq!(
        img.repo_digests,
        vec![format!(
            "docker.io/library/busybox@{}",
            built.manifest_digest
        )]
    );
    assert_eq!(img.manifest_digest, built.manifest_digest);
    assert_eq!(img.size, built.size);
    assert_eq!(img.platform, "linux/amd64");
    let chain2 = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(
            format!("{} {}", built.diff_ids[0], built.diff_ids[1]).as_bytes()
        ))
    );
    assert_eq!(img.chain_id, chain2);
    assert_eq!(
        img.config,
        ImageConfig {
            user: "1000:1000".into(),
            env: vec!["PATH=/bin".into(), "FOO=bar".into()],
            entrypoint: vec!["/bin/sh".into(), "-c".into()],
            cmd: vec!["echo hi".into()],
            working_dir: "/work".into(),
            labels: [("a".to_string(), "b".to_string())].into_iter().collect(),
            stop_signal: "SIGINT".into(),
        }
    );

    // rootfs content
    let rootfs = store.rootfs(&img).unwrap();
    assert_eq!(rootfs, root.join("snapshots").join(&chain2[7..]));
    assert_eq!(fs::read(rootfs.join("etc/new-file")).unwrap(), b"new");
    assert!(!rootfs.join("etc/remove-me").exists());
    assert!(!rootfs.join("var/cache/old").exists());
    assert!(rootfs.join("var/cache/fresh").exists());
    assert_eq!(
        fs::read_link(rootfs.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    // the lower snapshot still has the removed file
    let lower = root.join("snapshots").join(&built.diff_ids[0][7..]);
    assert!(lower.join("etc/remove-me").exists());
    assert_eq!(count(&root.join("snapshots")), 2);
    assert_eq!(count(&root.join("blobs/sha256")), 4);
    assert_eq!(count(&root.join("tmp")), 0);

    // every form resolves
    let hexid = &img.id[7..];
    let d = &built.manifest_digest;
    for r in [
        img.id.clone(),
        hexid.to_string(),
        hexid[..12].to_string(),
        format!("sha256:{}", &hexid[..12]),
        "busybox:1.36".into(),
        "docker.io/library/busybox:1.36".into(),
        format!("busybox@{d}"),
        format!("docker.io/library/busybox@{d}"),
        format!("busybox:1.36@{d}"),
        format!("busybox:other@{d}"),
    ] {
        assert_eq!(store.resolve(&r).unwrap().as_ref(), Some(&img), "{r}");
    }
    for r in [
        "busybox",
        "busybox:latest",
        "alpine:1.36",
        "Not A Reference!",
        "",
        &hexid[..11],
        &format!("ghcr.io/x/busybox@{d}"),
        &format!("busybox@{}", sha(b"nope")),
        &sha(b"nope"),
    ] {
        assert_eq!(store.resolve(r).unwrap(), None, "{r}");
    }

    // the other store instance sees the import
    assert_eq!(other.list().unwrap(), vec![img.clone()]);

    // re-import is a no-op
    let again = store
        .import_oci_layout(&t.path().join("layout"), None)
        .unwrap();
    assert_eq!(again, img);
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(count(&root.join("snapshots")), 2);
    assert_eq!(count(&root.join("tmp")), 0);

    let usage = store.fs_usage().unwrap();
    assert!(usage.used_bytes > 0 && usage.inodes_used > 10, "{usage:?}");

    // remove + gc
    assert!(!store.remove("alpine").unwrap());
    assert!(store.remove("busybox:1.36").unwrap());
    assert!(store.list().unwrap().is_empty());
    assert!(other.list().unwrap().is_empty());
    assert_eq!(store.resolve(&img.id).unwrap(), None);
    assert!(!store.remove(&img.id).unwrap());
    for sub in ["snapshots", "blobs/sha256", "meta", "refs", "tmp"] {
        assert_eq!(count(&root.join(sub)), 0, "{sub} not empty after remove");
    }
    assert!(matches!(store.rootfs(&img), Err(Error::NotFound(_))));
}

#[test]
fn tag_moves_and_shared_layers_survive_gc() {
    let t = tempfile::tempdir().unwrap();
    let store = open_store(&t.path().join("images"), linux_amd64());
    simple_layout(&t.path().join("l1"), "ignored:1", "v1");
    simple_layout(&t.path().join("l2"), "ignored:2", "v2");
    let a = store
        .import_oci_layout(&t.path().join("l1"), Some("app:v1"))
        .unwrap();
    assert_eq!(a.repo_tags, vec!["docker.io/library/app:v1"]);
    let b = store
        .import_oci_layout(&t.path().join("l2"), Some("app:v1"))
        .unwrap();
    assert_ne!(a.id, b.id, "different layers, different config");
    assert_eq!(
        store.resolve("app:v1").unwrap().map(|i| i.id),
        Some(b.id.clone())
    );
    let a_now = store.resolve(&a.id).unwrap().unwrap();
    assert!(a_now.repo_tags.is_empty(), "tag moved away from a");
    assert_eq!(a_now.repo_digests.len(), 1, "a keeps its repo digest");
    // layer 1 is shared: 3 snapshots in total
    assert_eq!(count(&t.path().join("images/snapshots")), 3);

    assert!(store.remove(&a.id).unwrap());
    assert_eq!(count(&t.path().join("images/snapshots")), 2);
    let rootfs = store.rootfs(&b).unwrap();
    assert_eq!(fs::read(rootfs.join("etc/new-file")).unwrap(), b"v2");
    assert_eq!(
        fs::read(rootfs.join("bin/busybox")).unwrap(),
        b"busybox binary"
    );
    assert_eq!(store.list().unwrap().len(), 1);
}

fn multi_platform(dir: &Path, nested: bool) -> (BuiltImage, BuiltImage) {
    let lb = LayoutBuilder::new(dir);
    let amd = lb.image(&[layer1()], false, "linux", "amd64", config());
    let arm = lb.image(
        &[layer1(), layer2("arm")],
        true,
        "linux",
        "arm64",
        json!({}),
    );
    let descs = vec![
        LayoutBuilder::manifest_desc(&amd, Some(("linux", "amd64")), Value::Null),
        LayoutBuilder::manifest_desc(&arm, Some(("linux", "arm64")), Value::Null),
    ];
    if nested {
        let idx = lb.nested_index(descs, json!({ANNOTATION: "ghcr.io/x/multi:2"}));
        lb.index_json(vec![idx]);
    } else {
        let mut descs = descs;
        for d in &mut descs {
            d["annotations"] = json!({ANNOTATION: "ghcr.io/x/multi:2"});
        }
        lb.index_json(descs);
    }
    (amd, arm)
}

#[test]
fn platform_selection() {
    let t = tempfile::tempdir().unwrap();
    for nested in [false, true] {
        let layout = t.path().join(format!("layout-{nested}"));
        let (amd, arm) = multi_platform(&layout, nested);
        let store = open_store(&t.path().join(format!("s-amd-{nested}")), linux_amd64());
        let img = store.import_oci_layout(&layout, None).unwrap();
        assert_eq!(img.manifest_digest, amd.manifest_digest);
        assert_eq!(img.repo_tags, vec!["ghcr.io/x/multi:2"]);
        let store = open_store(
            &t.path().join(format!("s-arm-{nested}")),
            Platform::parse("linux/arm64/v8").unwrap(),
        );
        let img = store.import_oci_layout(&layout, None).unwrap();
        assert_eq!(img.manifest_digest, arm.manifest_digest);
        assert_eq!(img.platform, "linux/arm64");
        assert_eq!(img.config, ImageConfig::default());
        assert!(store.rootfs(&img).unwrap().join("var/cache/fresh").exists());

        let store = open_store(
            &t.path().join(format!("s-darwin-{nested}")),
            Platform::parse("darwin/arm64").unwrap(),
        );
        let err = store.import_oci_layout(&layout, None).unwrap_err();
        assert!(matches!(err, Error::NoMatchingPlatform { .. }));
        assert_eq!(
            err.to_string(),
            "no manifest for darwin/arm64 in ghcr.io/x/multi:2; available: linux/amd64, linux/arm64"
        );
        assert!(store.list().unwrap().is_empty());
    }
    // without platform in index.json the config decides
    let layout = t.path().join("noplat");
    simple_layout(&layout, "x:1", "x");
    let store = open_store(
        &t.path().join("s-noplat"),
        Platform::parse("darwin/arm64").unwrap(),
    );
    let err = store.import_oci_layout(&layout, None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no manifest for darwin/arm64 in x:1; available: linux/amd64"
    );
}

#[test]
fn names_from_annotations() {
    let t = tempfile::tempdir().unwrap();
    let store = open_store(&t.path().join("images"), linux_amd64());
    let layout = t.path().join("l");
    let lb = LayoutBuilder::new(&layout);
    let img = lb.image(&[layer1()], true, "linux", "amd64", config());
    lb.index_json(vec![LayoutBuilder::manifest_desc(
        &img,
        None,
        json!({"org.opencontainers.image.ref.name": "1.36"}),
    )]);
    let err = store.import_oci_layout(&layout, None).unwrap_err();
    assert!(matches!(err, Error::InvalidReference(_)), "{err}");
    let i = store
        .import_oci_layout(&layout, Some("registry.local:5000/team/app"))
        .unwrap();
    assert_eq!(i.repo_tags, vec!["registry.local:5000/team/app:latest"]);
    assert!(matches!(
        store.import_oci_layout(&layout, Some("Bad Name")),
        Err(Error::InvalidReference(_))
    ));

    lb.index_json(vec![LayoutBuilder::manifest_desc(
        &img,
        None,
        json!({"org.opencontainers.image.ref.name": "quay.io/a/b:3"}),
    )]);
    let i = store.import_oci_layout(&layout, None).unwrap();
    assert_eq!(
        i.repo_tags,
        vec!["quay.io/a/b:3", "registry.local:5000/team/app:latest"]
    );
}

#[test]
fn corrupt_layouts_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("images");
    let store = open_store(&root, linux_amd64());

    // DiffID mismatch: config announces a different diff_id
    let layout = t.path().join("badiff");
    let lb = LayoutBuilder::new(&layout);
    let l = layer1();
    let gz = crate::testutil::gzip(&l);
    let layer_digest = lb.blob(&gz);
    let cfg = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [sha(b"wrong")]}});
    let cfg_bytes = serde_json::to_vec(&cfg).unwrap();
    let cfg_digest = lb.blob(&cfg_bytes);
    let manifest = json!({"schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_bytes.len()},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer_digest, "size": gz.len()}]});
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = lb.blob(&mb);
    lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(), "annotations": {ANNOTATION: "bad:1"}})]);
    let err = store.import_oci_layout(&layout, None).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(count(&root.join("snapshots")), 0);
    assert_eq!(count(&root.join("tmp")), 0);
    assert!(store.list().unwrap().is_empty());

    // zstd layers
    let manifest = json!({"schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_bytes.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": layer_digest, "size": gz.len()}]});
    let mb = serde_json::to_vec(&manifest).unwrap();
    let md = lb.blob(&mb);
    lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(), "annotations": {ANNOTATION: "bad:1"}})]);
    // A gzip blob labelled zstd: the decoder refuses it and nothing is published.
    let err = store.import_oci_layout(&layout, None).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_eq!(count(&root.join("snapshots")), 0);

    // tampered blob
    let layout = t.path().join("tampered");
    let built = simple_layout(&layout, "t:1", "t");
    let _ = built;
    let img = LayoutBuilder {
        dir: layout.clone(),
    };
    let layer_path = fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| fs::read(p).unwrap().starts_with(&[0x1f, 0x8b]))
        .unwrap();
    let mut data = fs::read(&layer_path).unwrap();
    let n = data.len();
    data[n - 5] ^= 0x55;
    fs::write(&layer_path, data).unwrap();
    // (a fresh store: the other one already holds verified copies of these layers)
    let fresh = open_store(&t.path().join("images2"), linux_amd64());
    let err = fresh.import_oci_layout(&img.dir, None).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert_eq!(count(&t.path().join("images2/tmp")), 0);

    // garbage JSON, missing files, missing blobs
    let layout = t.path().join("garbage");
    let lb = LayoutBuilder::new(&layout);
    fs::write(layout.join("index.json"), b"{not json").unwrap();
    assert!(matches!(
        store.import_oci_layout(&layout, None),
        Err(Error::InvalidLayout(_))
    ));
    lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(b"x"), "size": 1})]);
    let err = store.import_oci_layout(&layout, Some("x")).unwrap_err();
    assert!(matches!(err, Error::InvalidLayout(_)), "{err}");
    lb.index_json(vec![json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../../etc/passwd", "size": 1})]);
    assert!(store.import_oci_layout(&layout, Some("x")).is_err());
    lb.index_json(vec![]);
    assert!(matches!(
        store.import_oci_layout(&layout, Some("x")),
        Err(Error::InvalidLayout(_))
    ));
    assert!(matches!(
        store.import_oci_layout(&t.path().join("nonexistent"), Some("x")),
        Err(Error::InvalidLayout(_))
    ));
    assert_eq!(count(&root.join("tmp")), 0);
}

#[test]
fn concurrent_imports_of_the_same_image() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("images");
    let layout = t.path().join("l");
    simple_layout(&layout, "busybox:1", "c");
    let stores: Vec<_> = (0..4)
        .map(|_| Arc::new(open_store(&root, linux_amd64())))
        .collect();
    let handles: Vec<_> = stores
        .iter()
        .map(|s| {
            let s = s.clone();
            let layout = layout.clone();
            std::thread::spawn(move || s.import_oci_layout(&layout, None).unwrap())
        })
        .collect();
    let images: Vec<Image> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(images.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(count(&root.join("snapshots")), 2);
    assert_eq!(count(&root.join("tmp")), 0);
    let rootfs = stores[0].rootfs(&images[0]).unwrap();
    assert_eq!(fs::read(rootfs.join("etc/new-file")).unwrap(), b"c");
}

#[test]
fn platform_parse_and_host() {
    let p = Platform::parse("darwin/arm64/v8").unwrap();
    assert_eq!(p.to_string(), "darwin/arm64/v8");
    assert_eq!(p.variant.as_deref(), Some("v8"));
    for bad in ["linux", "linux/", "/amd64", "a/b/c/d", ""] {
        assert!(Platform::parse(bad).is_err(), "{bad}");
    }
    let h = Platform::host();
    assert_ne!(h.os, "macos");
    assert!(!["x86_64", "aarch64"].contains(&h.architecture.as_str()));
}

#[test]
fn store_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<ImageStore>();
    assert_send_sync::<Arc<dyn TreeCloner>>();
}

#[test]
fn chain_ids_follow_the_spec() {
    let a = sha(b"a");
    let b = sha(b"b");
    let c = chain_ids(&[a.clone(), b.clone()]);
    assert_eq!(c[0], a);
    assert_eq!(c[1], sha(format!("{a} {b}").as_bytes()));
    assert!(chain_ids(&[]).is_empty());
}

#[test]
fn a_multi_member_gzip_layer_converts_whole() {
    // A layer of two gzip members end to end (pigz and some builders write them): the tar's
    // first entry in the first member, the second and the end in the next.
    let tar = LayerBuilder::new()
        .file("first", b"1", 0o644)
        .file("second", b"2", 0o644)
        .build();
    let (a, b) = tar.split_at(1024);
    let blob = [crate::testutil::gzip(a), crate::testutil::gzip(b)].concat();
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path(), linux_amd64());
    let digest = sha(&blob);
    fs::create_dir_all(store.blobs_dir()).unwrap();
    fs::write(store.blobs_dir().join(&digest["sha256:".len()..]), &blob).unwrap();
    let (converted, _) = store
        .converted_layer(&digest, crate::Compression::Gzip, crate::Compression::Zstd)
        .unwrap();
    let zst = fs::read(store.blob_path(&converted).unwrap()).unwrap();
    let mut out = tar::Archive::new(zstd::Decoder::new(&zst[..]).unwrap());
    let names: Vec<String> = out
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert_eq!(names, ["first", "second"]);
}
