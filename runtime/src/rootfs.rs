//! A container's writable root over its image's snapshot: an overlay where the OS has one, a
//! copy-on-write clone (or a plain copy) elsewhere.

use std::path::{Path, PathBuf};

/// Makes `dir/rootfs` a writable root whose initial content is `snapshot`'s with `layers` (read-
/// only directories, the uppermost first) over it, and returns it and whether `layers` are in it.
///
/// Where the OS offers a copy-on-write layer that needs no copy at all (overlayfs on Linux) it
/// is used unless `copy` is set; otherwise `snapshot` alone is cloned with [`image_service::tree::native_cloner`] (APFS
/// clones on macOS, reflinks or a plain copy on Linux) and `layers` are left out. A layered root
/// is a mount below `dir`: it goes with the other mounts when the container directory is removed.
///
/// With `nosuid`, setuid and setgid bits in the layered root grant nothing. A copied root is
/// no mount of its own and stays as it is, as an APFS clone on macOS does: there the volume
/// holding darwin-cri's root is to be mounted nosuid (doctor checks), and on both systems
/// layers lose their setuid bits at unpack unless `image.keep_setuid` names the image. (A
/// nosuid bind of a copied root on itself would turn kubelet's hard-linked file mounts into
/// copies: links cannot cross mounts.)
pub fn clone_rootfs(
    snapshot: &Path,
    layers: &[&Path],
    dir: &Path,
    copy: bool,
    nosuid: bool,
) -> std::io::Result<(PathBuf, bool)> {
    let rootfs = dir.join("rootfs");
    if !copy {
        match overlay(snapshot, layers, dir, nosuid) {
            Ok(rootfs) => return Ok((rootfs, true)),
            Err(e) => tracing::debug!(error = %e, "no copy-on-write layer for the rootfs; copying"),
        }
    }
    image_service::tree::native_cloner().clone_tree(snapshot, &rootfs)?;
    Ok((rootfs, false))
}

/// `dir/rootfs` as a copy-on-write layer (its changes in `dir/upper`) over `layers` and
/// `snapshot`, or an error (and nothing left) where the OS has no such layer.
pub fn overlay(
    snapshot: &Path,
    layers: &[&Path],
    dir: &Path,
    nosuid: bool,
) -> std::io::Result<PathBuf> {
    let rootfs = dir.join("rootfs");
    let mut lowers = layers.to_vec();
    lowers.push(snapshot);
    match platform::layer_rootfs(&lowers, dir, &rootfs, nosuid) {
        Ok(()) => Ok(rootfs),
        Err(e) => {
            for leftover in [dir.join("upper"), dir.join("work"), rootfs] {
                let _ = std::fs::remove_dir_all(leftover);
            }
            Err(e)
        }
    }
}
