//! Making images for darwin-cri, above the runtime and the image store: the one crate that writes
//! images rather than reads them.
//!
//! - [`base`]: a base image from programs of the host and what they link (`image base`);
//! - [`build`]: Containerfile builds, each RUN a [`runtime::step`] (`image build`);
//! - [`commit`]: a container's changes as a new layer (`image commit`);
//! - [`diff`]: what changed in a root, as OCI layer changes (for commit and build);
//! - [`push`]: an image to a registry, converting layers' compression where asked (`image push`).
//!
//! The store's side (image-service) is pull, store, unpack and GC, and the create-image API this
//! crate writes through: `layer_writer` and `store_layer` put a layer blob in the store,
//! `create_image` records an image from a base and new layers. cri-server's CLI calls this
//! crate; no CRI call does.

pub mod base;
pub mod build;
pub mod commit;
pub mod diff;
pub mod push;

pub use push::{BlobOutcome, PushEvent, PushOptions, Pushed, Pusher};
