//! Version, Status, RuntimeConfig, UpdateRuntimeConfig.

use std::collections::HashMap;

use k8s_cri::v1 as cri;

use super::Cri;

pub const RUNTIME_NAME: &str = "darwin-cri";
pub const CRI_VERSION: &str = "v1";

pub fn version() -> cri::VersionResponse {
    cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: CRI_VERSION.into(),
    }
}

/// A condition from the problems found: true without any, else false with the first one's
/// reason and every message.
fn condition(kind: &str, problems: &[runtime::Problem], ok: &str) -> cri::RuntimeCondition {
    match problems.first() {
        None => cri::RuntimeCondition {
            r#type: kind.into(),
            status: true,
            reason: String::new(),
            message: ok.into(),
        },
        Some(first) => cri::RuntimeCondition {
            r#type: kind.into(),
            status: false,
            reason: first.reason.clone(),
            message: problems
                .iter()
                .map(|p| p.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        },
    }
}

/// The condition type, beside kubelet's two, that says whether darwin-cri's root is on a nosuid
/// file system (informational: kubelet acts on RuntimeReady and NetworkReady only).
pub const ROOT_NOSUID: &str = "RootNosuid";

pub fn status(svc: &Cri, verbose: bool) -> cri::StatusResponse {
    // Measured at each call (kubelet asks every few seconds): a full disk or a monitor binary
    // gone makes the node NotReady instead of failing every start (issue #26, 16).
    let health = svc.runtime.health();
    let nosuid = if health.root_nosuid {
        vec![]
    } else {
        vec![runtime::Problem {
            reason: "RootNotNosuid".into(),
            message: format!(
                "darwin-cri's root {} is not on a nosuid file system: a setuid file kept in a \
                 container's root (image.keep_setuid, a copied root) works there; the layered \
                 roots of the Linux twin are nosuid mounts of their own",
                svc.runtime.root().display()
            ),
        }]
    };
    let features = Some(cri::RuntimeHandlerFeatures {
        // Every read-only mount is recursive (container.rs).
        recursive_read_only_mounts: true,
        user_namespaces: false,
    });
    let mut handlers = vec![cri::RuntimeHandler {
        name: String::new(),
        features,
    }];
    handlers.extend(
        svc.runtime
            .runtime_handlers()
            .iter()
            .map(|name| cri::RuntimeHandler {
                name: name.clone(),
                features,
            }),
    );
    let mut info = HashMap::new();
    if verbose {
        info.insert(
            "config".into(),
            serde_json::json!({
                "root": svc.runtime.root(),
                "nodeIP": svc.runtime.node_ip(),
                "network": "host: pods share the node's network (macOS has no network namespaces)",
                "platform": svc.platform,
                "eventSubscribers": svc.runtime.subscriber_count(),
                "podCIDR": svc.runtime.pod_cidr(),
            })
            .to_string(),
        );
    }
    cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", &health.runtime, ""),
                condition(
                    "NetworkReady",
                    &health.network,
                    "pods use the host's network",
                ),
                condition(ROOT_NOSUID, &nosuid, ""),
            ],
        }),
        info,
        runtime_handlers: handlers,
        features: Some(cri::RuntimeFeatures {
            supplemental_groups_policy: true,
        }),
    }
}

pub fn runtime_config() -> cri::RuntimeConfigResponse {
    // There are no cgroups on macOS; kubelet only reads the driver on Linux. cgroupfs is what a
    // kubelet configured without systemd expects.
    cri::RuntimeConfigResponse {
        linux: Some(cri::LinuxRuntimeConfiguration {
            cgroup_driver: cri::CgroupDriver::Cgroupfs as i32,
        }),
    }
}
