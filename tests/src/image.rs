//! The test image: an OCI layout built from the host's static busybox.

use super::*;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The OCI architecture name of this host ("amd64", "arm64").
pub fn host_arch() -> &'static str {
    platform::oci_arch()
}

fn write_blob(layout: &Path, data: &[u8]) -> anyhow::Result<String> {
    let hex = sha256_hex(data);
    std::fs::write(layout.join("blobs/sha256").join(&hex), data)?;
    Ok(format!("sha256:{hex}"))
}

/// Builds an OCI image layout at `dir` holding a busybox image made from the host's static
/// busybox: every applet as a symlink in /bin, users root, app (1000, also in group builders
/// 2000) and nobody, and `Cmd ["sh"]`.
pub fn busybox_layout(dir: &Path, name: &str) -> anyhow::Result<()> {
    busybox_layout_with_cmd(dir, name, &["sh"])
}

/// [`busybox_layout`] with another default command (`["sleep", "2147483647"]` makes a pause
/// image).
pub fn busybox_layout_with_cmd(dir: &Path, name: &str, cmd: &[&str]) -> anyhow::Result<()> {
    let layer_tar = busybox_layer()?;
    let diff_id = format!("sha256:{}", sha256_hex(&layer_tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar)?;
    let layer_gz = gz.finish()?;

    std::fs::create_dir_all(dir.join("blobs/sha256"))?;
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let layer_digest = write_blob(dir, &layer_gz)?;
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
            "WorkingDir": "/"
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    });
    let config = serde_json::to_vec(&config)?;
    let config_digest = write_blob(dir, &config)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_gz.len()}]
    });
    let manifest = serde_json::to_vec(&manifest)?;
    let manifest_digest = write_blob(dir, &manifest)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": "latest"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index)?)?;
    Ok(())
}

/// The busybox image's one layer (uncompressed tar): the host's static busybox with its
/// applets as symlinks in /bin, /etc/passwd and /etc/group with root and `app` (1000), /tmp and
/// /home/app.
pub fn busybox_layer() -> anyhow::Result<Vec<u8>> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("busybox is not installed (apt-get install busybox-static)")?;
    let applets = Command::new(&busybox).arg("--list").output()?;
    let applets = String::from_utf8(applets.stdout)?;

    let mut tar = tar::Builder::new(Vec::new());
    let dir_entry =
        |tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, uid: u64| -> anyhow::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mtime(1_700_000_000);
            h.set_size(0);
            tar.append_data(&mut h, path, std::io::empty())?;
            Ok(())
        };
    let file_entry = |tar: &mut tar::Builder<Vec<u8>>,
                      path: &str,
                      mode: u32,
                      data: &[u8]|
     -> anyhow::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        tar.append_data(&mut h, path, data)?;
        Ok(())
    };
    for (d, mode, uid) in [
        ("bin", 0o755, 0),
        ("etc", 0o755, 0),
        ("tmp", 0o1777, 0),
        ("root", 0o700, 0),
        ("home", 0o755, 0),
        ("home/app", 0o755, 1000),
    ] {
        dir_entry(&mut tar, d, mode, uid)?;
    }
    file_entry(&mut tar, "bin/busybox", 0o755, &std::fs::read(&busybox)?)?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        tar.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    file_entry(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    file_entry(
        &mut tar,
        "etc/group",
        0o644,
        b"root:x:0:\napp:x:1000:\nbuilders:x:2000:app\nnogroup:x:65534:\n",
    )?;
    Ok(tar.into_inner()?)
}
