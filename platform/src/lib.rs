//! darwin-cri's operating-system layer: the only crate with `#[cfg(target_os = ...)]`, and the
//! only one with `unsafe`.
//!
//! Everything above this crate is OS-neutral. Each OS-specific function has a Linux
//! implementation (`linux/`, exercised by the tests on Linux machines) and a macOS twin
//! (`macos.rs`) of the same signature, written against documented calls; CI type-checks the macOS
//! twin for both Apple targets (scripts/check-macos.sh). What the twins share is written once,
//! in one module per job: `sandbox` (confinement), `process`, `mounts`, `sockets`, `host`
//! (facts), `io_context` and `fdpass`, all re-exported here. Where macOS behaves a certain way in a chroot, the Linux twin is made to behave the
//! same, and says so.
//!
//! This crate depends on no other crate of the workspace: callers above it (image-service,
//! runtime, cri-server) build their own abstractions from these primitives.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

pub mod fdpass;
mod host;
mod io_context;
#[cfg(target_os = "linux")]
mod linux;
mod mounts;
mod process;
mod sandbox;
mod sockets;
#[cfg(target_os = "linux")]
use linux as imp;

#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "macos")]
use macos as imp;

pub use host::*;
pub use io_context::{IoContext, IoError};
pub use mounts::*;
pub use process::*;
pub use sandbox::*;
// The Seatbelt compiler is macOS's; the Linux twin tests the profile text only.
#[cfg_attr(not(target_os = "macos"), allow(unused_imports))]
pub(crate) use sandbox::{CompiledSeatbelt, SeatbeltCompiler};
pub(crate) use sockets::bind_and_move;
pub use sockets::*;

/// The operating systems darwin-cri runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    /// The Linux twin: where the tests run.
    Linux,
    /// The product's home.
    MacOs,
}

/// The operating system this build is for. Code above this crate that must differ by OS (a
/// default, a message naming the fix) asks this value instead of a `cfg`.
pub const OS: Os = imp::OS;

/// Whether the OS has bind mounts (Linux). macOS has none: volumes go through bindfs.
pub const HAS_BIND_MOUNTS: bool = imp::HAS_BIND_MOUNTS;

/// Whether containers' roots can be layers over their image ([`layer_rootfs`]: overlayfs on
/// Linux) instead of copies (APFS clones on macOS).
pub const LAYERED_ROOTS: bool = imp::LAYERED_ROOTS;

/// Whether [`clone_tree`] can clone a whole tree in one call (APFS `clonefile` on macOS).
pub const CLONES_TREES: bool = imp::CLONES_TREES;

/// Where the host reads per-domain DNS resolvers (resolver(5): `/etc/resolver/<domain>` on
/// macOS, whose programs resolve through mDNSResponder, not a chroot's resolv.conf). Linux
/// programs read the root's resolv.conf, so the twin has none.
pub const RESOLVER_DIR: Option<&str> = imp::RESOLVER_DIR;

/// The host's OS as OCI names it (`darwin`, `linux`): the one place Rust's names become OCI's.
pub fn oci_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

/// The host's CPU architecture as OCI (and Go) names it (`arm64`, `amd64`).
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// A path as a C string, for the calls below.
pub(crate) fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

#[cfg(test)]
mod tests;
