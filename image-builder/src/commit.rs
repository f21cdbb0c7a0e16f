//! `image commit`: a container's changes since its image as one new layer on top of it. What
//! the runtime put in the root (its [`runtime::ContainerOrigin`] says what) and what is mounted
//! there are left out.

use image_service::layer::{LayerBlob, TarOptions};
use image_service::{Compression, Image, ImageStore, NewImage, NewLayer, Result};
use runtime::ContainerOrigin;

/// A committed image.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The new image.
    pub image: Image,
    /// Its new layer.
    pub layer: LayerBlob,
    /// How many entries the layer adds, changes or deletes.
    pub changes: usize,
}

/// Commits the container `origin` describes, whose image is `base`, as the image `name`.
pub fn commit(
    store: &ImageStore,
    origin: &ContainerOrigin,
    base: Image,
    name: &str,
    compression: Compression,
) -> Result<Committed> {
    let _hold = store.hold()?;
    let (source, changes) =
        crate::diff::root_changes(&origin.changed_root(), || store.rootfs(&base))?;
    let mut writer = store.layer_writer(compression, TarOptions::default())?;
    writer.changes(&source, &changes)?;
    let layer = store.store_layer(writer)?;
    let image = store.create_image(NewImage {
        base: Some(base),
        layers: vec![NewLayer {
            blob: Some(layer.clone()),
            created_by: format!("darwin-cri image commit {}", origin.container_id),
        }],
        names: vec![name.to_string()],
        ..Default::default()
    })?;
    Ok(Committed {
        image,
        layer,
        changes: changes.len(),
    })
}
