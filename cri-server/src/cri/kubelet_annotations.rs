//! What this project's darwin kubelet sends in place of `ContainerConfig.linux`
//! (kubelet/pkg/contract): the pod's security context and the container's limits as
//! `kubelet.darwin-cri.io/` annotations on the ContainerConfig. A darwin kubelet sends no Linux
//! config (cgroups, namespaces, capabilities and seccomp mean nothing on a Mac), so these keys are
//! the only way its runAsUser, runAsGroup, supplemental groups, privileged, readOnlyRootFilesystem,
//! allowPrivilegeEscalation and CPU and memory limits reach darwin-cri.
//!
//! They are read only from the ContainerConfig's annotations (which kubelet writes; a pod's own
//! annotations, which users write, reach the sandbox config only) and only when
//! `ContainerConfig.linux` is absent: a Linux kubelet's own fields always win. They become the
//! same `LinuxContainerConfig` a Linux kubelet would send, so one path enforces both.

use std::collections::BTreeMap;

use k8s_cri::v1 as cri;
use tonic::Status;

/// The prefix of every key.
pub const PREFIX: &str = "kubelet.darwin-cri.io/";

const KEYS: &[&str] = &[
    "run-as-user",
    "run-as-group",
    "supplemental-groups",
    "privileged",
    "readonly-rootfs",
    "no-new-privs",
    "cpu-limit",
    "memory-limit",
];

/// The CFS period the CPU limit is expressed in (kubelet's default).
const CPU_PERIOD: i64 = 100_000;

fn bad(key: &str, value: &str, what: &str) -> Status {
    Status::invalid_argument(format!(
        "annotation {PREFIX}{key}={value:?}: {what} (this project's kubelet writes it; see docs/cri.md)"
    ))
}

fn id(key: &str, value: &str) -> Result<i64, Status> {
    match value.parse::<i64>() {
        Ok(v) if (0..=i64::from(u32::MAX)).contains(&v) => Ok(v),
        _ => Err(bad(key, value, "not a user or group id")),
    }
}

fn flag(key: &str, value: &str) -> Result<bool, Status> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad(key, value, "not true or false")),
    }
}

fn positive(key: &str, value: &str) -> Result<i64, Status> {
    match value.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(bad(key, value, "not a positive whole number")),
    }
}

/// The Linux config the kubelet annotations stand for, if there are any. Unknown keys under the
/// prefix are refused (a newer kubelet asking for something this darwin-cri would ignore).
pub fn linux_config(
    annotations: &BTreeMap<String, String>,
) -> Result<Option<cri::LinuxContainerConfig>, Status> {
    let ours: Vec<(&str, &str)> = annotations
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|k| (k, v.trim())))
        .collect();
    if ours.is_empty() {
        return Ok(None);
    }
    let mut sc = cri::LinuxContainerSecurityContext::default();
    let mut resources: Option<cri::LinuxContainerResources> = None;
    for (key, value) in ours {
        match key {
            "run-as-user" => {
                sc.run_as_user = Some(cri::Int64Value {
                    value: id(key, value)?,
                })
            }
            "run-as-group" => {
                sc.run_as_group = Some(cri::Int64Value {
                    value: id(key, value)?,
                })
            }
            "supplemental-groups" => {
                sc.supplemental_groups = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|g| id(key, g))
                    .collect::<Result<_, _>>()?;
            }
            "privileged" => sc.privileged = flag(key, value)?,
            "readonly-rootfs" => sc.readonly_rootfs = flag(key, value)?,
            "no-new-privs" => sc.no_new_privs = flag(key, value)?,
            "cpu-limit" => {
                let milli = positive(key, value)?;
                let r = resources.get_or_insert_with(Default::default);
                r.cpu_period = CPU_PERIOD;
                r.cpu_quota = milli
                    .checked_mul(CPU_PERIOD / 1000)
                    .ok_or_else(|| bad(key, value, "too large"))?;
            }
            "memory-limit" => {
                resources
                    .get_or_insert_with(Default::default)
                    .memory_limit_in_bytes = positive(key, value)?;
            }
            _ => {
                return Err(bad(
                    key,
                    value,
                    &format!("unknown key; this darwin-cri knows {}", KEYS.join(", ")),
                ));
            }
        }
    }
    Ok(Some(cri::LinuxContainerConfig {
        resources,
        security_context: Some(sc),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
            .collect()
    }

    #[test]
    fn a_build_pods_keys_become_its_linux_config() {
        let mut a = ann(&[
            ("run-as-user", "1000"),
            ("run-as-group", "20"),
            ("supplemental-groups", "5000,12"),
            ("readonly-rootfs", "true"),
            ("no-new-privs", "true"),
            ("cpu-limit", "1500"),
            ("memory-limit", "8589934592"),
        ]);
        a.insert("io.kubernetes.container.hash".into(), "abc".into());
        let l = linux_config(&a).expect("valid").expect("some");
        let sc = l.security_context.expect("sc");
        assert_eq!(sc.run_as_user.map(|v| v.value), Some(1000));
        assert_eq!(sc.run_as_group.map(|v| v.value), Some(20));
        assert_eq!(sc.supplemental_groups, vec![5000, 12]);
        assert!(sc.readonly_rootfs && sc.no_new_privs && !sc.privileged);
        let r = l.resources.expect("resources");
        assert_eq!((r.cpu_quota, r.cpu_period), (150_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 8 << 30);
    }

    #[test]
    fn none_without_keys_and_nonsense_is_refused_by_name() {
        let mut other = BTreeMap::new();
        other.insert("darwin-cri.io/run-as-user".to_string(), "1000".to_string());
        assert!(linux_config(&other).expect("ok").is_none());
        for (k, v) in [
            ("run-as-user", "-1"),
            ("run-as-user", "bob"),
            ("run-as-group", "99999999999"),
            ("supplemental-groups", "1,x"),
            ("privileged", "yes"),
            ("cpu-limit", "0"),
            ("memory-limit", "1Gi"),
            ("cpu-limit", "9223372036854775807"),
            ("sysctls", "x"),
        ] {
            let e = linux_config(&ann(&[(k, v)])).expect_err(k);
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains(k), "{}", e.message());
        }
    }
}
