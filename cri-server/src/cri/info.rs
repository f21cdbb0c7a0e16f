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

pub fn status(svc: &Cri, verbose: bool) -> cri::StatusResponse {
    let condition = |kind: &str, message: &str| cri::RuntimeCondition {
        r#type: kind.into(),
        status: true,
        reason: String::new(),
        message: message.into(),
    };
    let features = Some(cri::RuntimeHandlerFeatures {
        recursive_read_only_mounts: false,
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
            })
            .to_string(),
        );
    }
    cri::StatusResponse {
        status: Some(cri::RuntimeStatus {
            conditions: vec![
                condition("RuntimeReady", ""),
                condition("NetworkReady", "pods use the host's network"),
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
