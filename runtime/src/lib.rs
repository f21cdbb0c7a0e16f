//! Pods and containers for darwin-cri.
//!
//! A pod sandbox is a directory holding the pod's shared files; a container is a writable clone of
//! its image's root with kubelet's mounts made inside it, whose process tree is started with
//! `chroot` by a detached monitor process (see [`monitor`]). State lives in a crash-safe embedded
//! store ([`store`]) and is reconciled with the live monitors when the server starts.
//!
//! This crate knows nothing of gRPC: `cri-server` adapts CRI requests to the domain types here.
#![deny(unsafe_code)]

pub mod attach;
pub mod cluster_dns;
pub mod confinement;
mod devices;
pub mod dns_proxy;
mod error;
pub mod exec;
pub mod fsutil;
pub mod host_ports;
pub mod jail;
pub mod limits;
pub mod logs;
pub mod model;
pub mod monitor;
pub mod mounts;
pub mod pool;
pub mod rootfs;
mod runtime;
pub mod stats;
pub mod step;
mod store;
mod trash;
pub mod user;

pub use confinement::UNCONFINED_HANDLER;
pub use error::{Error, Result};
pub use model::*;
pub use platform::Propagation;
pub use runtime::{
    ContainerEvent, EventKind, ExecOutput, Health, Problem, ROOT_FULL_BYTES, Runtime,
    RuntimeOptions, not_running_message,
};
