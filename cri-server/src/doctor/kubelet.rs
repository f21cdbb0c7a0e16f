//! kubelet's configuration as darwin-cri needs it.

use super::*;

/// Where kubelet's configuration file is looked for when `--kubelet-config` is not given.
pub(super) const KUBELET_CONFIGS: &[&str] = &[
    "/usr/local/etc/kubernetes/kubelet-config.yaml",
    "/etc/kubernetes/kubelet-config.yaml",
    "/var/lib/kubelet/config.yaml",
];

/// The parts of kubelet's KubeletConfiguration that matter to darwin-cri.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub(super) struct KubeletConfig {
    kind: String,
    container_runtime_endpoint: String,
    image_service_endpoint: String,
    cgroups_per_q_o_s: Option<bool>,
    feature_gates: std::collections::BTreeMap<String, bool>,
}

pub(super) fn kubelet(config: &Config, given: Option<&Path>) -> Vec<Check> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => match KUBELET_CONFIGS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
        {
            Some(p) => p,
            None => {
                return vec![Check::warn(
                    "kubelet",
                    format!(
                        "no kubelet configuration found (looked at {})",
                        KUBELET_CONFIGS.join(", ")
                    ),
                    "pass --kubelet-config PATH; deploy/kubelet-config.yaml is a starting point",
                )];
            }
        },
    };
    let parsed = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_saphyr::from_str::<KubeletConfig>(&t).map_err(|e| e.to_string()));
    let kc = match parsed {
        Ok(kc) if kc.kind == "KubeletConfiguration" => kc,
        Ok(kc) => {
            return vec![Check::fail(
                "kubelet",
                format!(
                    "{} is a {:?}, not a KubeletConfiguration",
                    path.display(),
                    kc.kind
                ),
                "point --kubelet-config at kubelet's --config file",
            )];
        }
        Err(e) => {
            return vec![Check::fail(
                "kubelet",
                format!("cannot read {}: {e}", path.display()),
                "fix the file's YAML",
            )];
        }
    };
    let want = format!("unix://{}", config.socket.display());
    let mut checks = Vec::new();
    for (field, value) in [
        ("containerRuntimeEndpoint", &kc.container_runtime_endpoint),
        ("imageServiceEndpoint", &kc.image_service_endpoint),
    ] {
        if value.is_empty() && field == "imageServiceEndpoint" {
            continue;
        }
        if value != &want {
            checks.push(Check::fail(
                "kubelet",
                format!(
                    "{} has {field}: {value:?}, not darwin-cri's socket",
                    path.display()
                ),
                format!("set {field}: {want}"),
            ));
        }
    }
    if kc.cgroups_per_q_o_s != Some(false) {
        checks.push(Check::warn(
            "kubelet",
            format!(
                "{} does not set cgroupsPerQOS: false; macOS has no cgroups",
                path.display()
            ),
            "set cgroupsPerQOS: false and enforceNodeAllocatable: []",
        ));
    }
    if kc.feature_gates.get("PodAndContainerStatsFromCRI") != Some(&true) {
        checks.push(Check::warn(
            "kubelet",
            format!(
                "{} does not enable PodAndContainerStatsFromCRI; there is no cAdvisor on macOS",
                path.display()
            ),
            "set featureGates: {PodAndContainerStatsFromCRI: true}",
        ));
    }
    if checks.is_empty() {
        checks.push(Check::ok(
            "kubelet",
            format!("{} points kubelet at {want}", path.display()),
        ));
    }
    checks
}
