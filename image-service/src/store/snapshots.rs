//! Snapshots: one unpacked tree per layer ChainID, each a clone of its parent plus the layer,
//! published atomically.

use std::io::Read;

use super::*;

impl ImageStore {
    /// The unpacked top snapshot of an image (read-only by convention: clone it).
    pub fn rootfs(&self, image: &Image) -> Result<PathBuf> {
        let hex = sha256_hex(&image.chain_id)?;
        let path = self.snapshots_dir().join(hex);
        if path.is_dir() {
            Ok(path)
        } else {
            Err(Error::NotFound(format!("{} (snapshot missing)", image.id)))
        }
    }

    pub(super) fn ensure_empty_snapshot(&self, chain: &str) -> Result<()> {
        let final_path = self.snapshots_dir().join(sha256_hex(chain)?);
        if final_path.is_dir() {
            return Ok(());
        }
        let tmp = self.new_work_dir()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
            .ctx(|| format!("chmod {}", tmp.display()))?;
        self.publish_snapshot(&tmp, &final_path)
    }

    pub(super) fn publish_snapshot(&self, tmp: &Path, final_path: &Path) -> Result<()> {
        if let Err(e) = fs::rename(tmp, final_path) {
            // Someone else built it meanwhile: keep theirs.
            let _ = fs::remove_dir_all(tmp);
            if !final_path.is_dir() {
                return Err(e)
                    .ctx(|| format!("publish snapshot {}", final_path.display()))
                    .map_err(Into::into);
            }
        }
        Ok(())
    }

    pub(crate) fn ensure_snapshot(
        &self,
        parent: Option<&str>,
        chain: &str,
        layer: &Path,
        compression: crate::Compression,
        diff_id: &str,
        keep_setuid: bool,
    ) -> Result<()> {
        if self.snapshots_dir().join(sha256_hex(chain)?).is_dir() {
            return Ok(());
        }
        let file = File::open(layer).ctx(|| format!("open layer {}", layer.display()))?;
        self.ensure_snapshot_from(
            parent,
            chain,
            BufReader::with_capacity(256 << 10, file),
            compression,
            diff_id,
            keep_setuid,
        )
    }

    /// [`ImageStore::ensure_snapshot`] from a stream of the layer's (compressed) bytes: a pull
    /// applies a layer while it downloads.
    pub(crate) fn ensure_snapshot_from<R: Read + Send>(
        &self,
        parent: Option<&str>,
        chain: &str,
        layer: R,
        compression: crate::Compression,
        diff_id: &str,
        keep_setuid: bool,
    ) -> Result<()> {
        let final_path = self.snapshots_dir().join(sha256_hex(chain)?);
        if final_path.is_dir() {
            return Ok(());
        }
        let tmp = self
            .tmp_dir()
            .join(random_name().ctx(|| "random name".to_string())?);
        let result = (|| {
            match parent {
                None => {
                    fs::create_dir(&tmp).ctx(|| format!("create {}", tmp.display()))?;
                    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))
                        .ctx(|| format!("chmod {}", tmp.display()))?;
                }
                Some(p) => {
                    let src = self.snapshots_dir().join(sha256_hex(p)?);
                    self.cloner
                        .clone_tree(&src, &tmp)
                        .ctx(|| format!("clone snapshot {p}"))?;
                }
            }
            crate::unpack::apply_layer_with(&tmp, layer, compression, diff_id, keep_setuid)
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        self.publish_snapshot(&tmp, &final_path)
    }
}
