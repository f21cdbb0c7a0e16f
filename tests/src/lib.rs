//! Test harness for darwin-cri: an OCI image built from the host's static busybox, the real
//! `darwin-cri` binary on a temporary socket and root, and a CRI client over the unix socket.
#![forbid(unsafe_code)]

pub mod helm;
pub mod registry;
pub mod streaming;

mod cri_calls;
mod host;
mod image;
mod server;
mod util;

pub use cri_calls::*;
pub use host::*;
pub use image::*;
pub use server::*;
pub use util::*;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

/// The image name the fixture imports.
pub const BUSYBOX: &str = "docker.io/library/busybox:latest";

/// The `darwin-cri` binary next to the test executable (target/<profile>/darwin-cri), or
/// `DARWIN_CRI_BIN`; `darwin-cri-monitor` must be beside it.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("DARWIN_CRI_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join("darwin-cri");
    // The tests run containers under the small monitor, as an installed node does.
    for needed in [&bin, &dir.join("darwin-cri-monitor")] {
        assert!(
            needed.exists(),
            "{} is missing: build it first with `cargo build --bins` (scripts/test.sh does)",
            needed.display()
        );
    }
    bin
}

// ----- CRI call helpers ---------------------------------------------------------------------

// ----- /proc readings for tests and benchmarks ------------------------------------------------

/// A file system of `bytes` at `dir`, for the disk-full tests.
#[cfg(not(target_os = "linux"))] // the disk-full tests run on the Linux twin only
pub fn mount_small_tmpfs(_dir: &Path, _bytes: u64) -> anyhow::Result<()> {
    bail!("a size-limited file system for the disk-full tests is made on Linux only")
}
