//! RunPodSandbox, StopPodSandbox, RemovePodSandbox, PodSandboxStatus, ListPodSandbox.

use std::collections::{BTreeMap, HashMap};

use k8s_cri::v1 as cri;
use runtime::{DnsConfig, NetworkMode, Pod, PodMetadata, PodSpec, PodState, PortMapping, Protocol};
use tonic::Status;

use super::status::required;

fn map(m: &HashMap<String, String>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

pub fn hash(m: &BTreeMap<String, String>) -> HashMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// What a RunPodSandbox request asks for, as the runtime's domain type. Requests for isolation
/// macOS cannot give are refused here rather than silently pretended.
pub fn pod_spec(config: cri::PodSandboxConfig, handler: String) -> Result<PodSpec, Status> {
    let m = config.metadata.ok_or_else(|| required("config.metadata"))?;
    let mut network = NetworkMode::Pod;
    let (mut run_as_user, mut run_as_group) = (None, None);
    if let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    {
        if let Some(ns) = sc.namespace_options.as_ref() {
            if ns.network == cri::NamespaceMode::Node as i32 {
                network = NetworkMode::Node;
            }
            if ns
                .userns_options
                .as_ref()
                .is_some_and(|u| u.mode == cri::NamespaceMode::Pod as i32)
            {
                return Err(Status::invalid_argument(
                    "user namespaces (hostUsers: false) are not available on darwin nodes",
                ));
            }
        }
        run_as_user = sc.run_as_user.as_ref().map(|v| v.value);
        run_as_group = sc.run_as_group.as_ref().map(|v| v.value);
        refuse_selinux(sc.selinux_options.as_ref(), "pod")?;
        // kubelet repeats the pod's profiles on each container, where they are honoured or
        // refused; a profile only the pod names must not be dropped unseen.
        if !platform::HAS_SECCOMP && is_localhost(sc.seccomp.as_ref()) {
            return Err(Status::invalid_argument(
                "seccomp profiles (Localhost) are not available on darwin nodes: macOS confines containers with Seatbelt",
            ));
        }
        if is_localhost(sc.apparmor.as_ref()) {
            return Err(Status::invalid_argument(
                "AppArmor profiles are not available on darwin nodes",
            ));
        }
        // Deprecated, and read on purpose: a profile named only there must not be dropped.
        #[allow(deprecated)]
        let deprecated_path = sc.seccomp_profile_path.as_str();
        refuse_deprecated_seccomp(deprecated_path, sc.seccomp.as_ref(), "pod")?;
    }
    if let Some(linux) = &config.linux
        && !linux.sysctls.is_empty()
    {
        let mut names: Vec<&str> = linux.sysctls.keys().map(String::as_str).collect();
        names.sort_unstable();
        return Err(Status::invalid_argument(format!(
            "sysctls ({}) are not available on darwin nodes: pods share the host's kernel settings",
            names.join(", ")
        )));
    }
    let port_mappings = config
        .port_mappings
        .iter()
        .map(port_mapping)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PodSpec {
        metadata: PodMetadata {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            attempt: m.attempt,
        },
        hostname: config.hostname,
        log_directory: config.log_directory,
        dns: config.dns_config.map(|d| DnsConfig {
            servers: d.servers,
            searches: d.searches,
            options: d.options,
        }),
        labels: map(&config.labels),
        annotations: map(&config.annotations),
        runtime_handler: handler,
        network,
        run_as_user,
        run_as_group,
        port_mappings,
    })
}

fn port(n: i32, what: &str) -> Result<u16, Status> {
    u16::try_from(n)
        .map_err(|_| Status::invalid_argument(format!("port mapping: {what} {n} is not a port")))
}

fn port_mapping(m: &cri::PortMapping) -> Result<PortMapping, Status> {
    let protocol = match cri::Protocol::try_from(m.protocol) {
        Ok(cri::Protocol::Tcp) => Protocol::Tcp,
        Ok(cri::Protocol::Udp) => Protocol::Udp,
        Ok(cri::Protocol::Sctp) => Protocol::Sctp,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "port mapping: unknown protocol {}",
                m.protocol
            )));
        }
    };
    Ok(PortMapping {
        protocol,
        container_port: port(m.container_port, "container port")?,
        host_port: port(m.host_port, "host port")?,
        host_ip: m.host_ip.clone(),
    })
}

pub fn is_localhost(p: Option<&cri::SecurityProfile>) -> bool {
    p.is_some_and(|p| p.profile_type == cri::security_profile::ProfileType::Localhost as i32)
}

/// SELinux types and levels change what a process may touch; there are no labels to give.
pub fn refuse_selinux(s: Option<&cri::SeLinuxOption>, whose: &str) -> Result<(), Status> {
    if s.is_some_and(|s| !s.r#type.is_empty() || !s.level.is_empty()) {
        return Err(Status::invalid_argument(format!(
            "SELinux options ({whose} security_context.selinux_options) are not available on darwin nodes"
        )));
    }
    Ok(())
}

/// The deprecated `seccomp_profile_path` counts only when the structured field is unset (as in
/// containerd); a `localhost/…` value there is a profile that must not be dropped.
pub fn refuse_deprecated_seccomp(
    path: &str,
    structured: Option<&cri::SecurityProfile>,
    whose: &str,
) -> Result<(), Status> {
    if structured.is_none() && path.starts_with("localhost/") {
        return Err(Status::invalid_argument(format!(
            "{whose} security_context.seccomp_profile_path {path:?}: the deprecated field is not read; \
             set seccompProfile (security_context.seccomp) instead"
        )));
    }
    Ok(())
}

fn metadata(p: &Pod) -> cri::PodSandboxMetadata {
    let m = &p.spec.metadata;
    cri::PodSandboxMetadata {
        name: m.name.clone(),
        uid: m.uid.clone(),
        namespace: m.namespace.clone(),
        attempt: m.attempt,
    }
}

fn state(p: &Pod) -> i32 {
    match p.state {
        PodState::Ready => cri::PodSandboxState::SandboxReady as i32,
        PodState::NotReady => cri::PodSandboxState::SandboxNotready as i32,
    }
}

pub fn sandbox(p: &Pod) -> cri::PodSandbox {
    cri::PodSandbox {
        id: p.id.clone(),
        metadata: Some(metadata(p)),
        state: state(p),
        created_at: p.created_at,
        labels: hash(&p.spec.labels),
        annotations: hash(&p.spec.annotations),
        runtime_handler: p.spec.runtime_handler.clone(),
    }
}

pub fn status(p: &Pod, node_ip: &str, verbose: bool) -> cri::PodSandboxStatusResponse {
    // The network mode reported is the one the pod asked for: kubelet recreates a sandbox whose
    // reported mode differs from the pod spec's, forever. Every pod in fact shares the node's
    // network; the verbose info says so, and the node's IP is the pod's IP.
    let network = match p.spec.network {
        NetworkMode::Pod => cri::NamespaceMode::Pod,
        NetworkMode::Node => cri::NamespaceMode::Node,
    } as i32;
    let mut info = HashMap::new();
    if verbose {
        info.insert(
            "info".into(),
            serde_json::json!({
                "podDir": p.dir,
                "effectiveNetwork": "host",
                "requestedNetwork": format!("{:?}", p.spec.network),
                "runtimeHandler": p.spec.runtime_handler,
            })
            .to_string(),
        );
    }
    cri::PodSandboxStatusResponse {
        status: Some(cri::PodSandboxStatus {
            id: p.id.clone(),
            metadata: Some(metadata(p)),
            state: state(p),
            created_at: p.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: node_ip.into(),
                additional_ips: vec![],
            }),
            linux: Some(cri::LinuxPodSandboxStatus {
                namespaces: Some(cri::Namespace {
                    options: Some(cri::NamespaceOption {
                        network,
                        pid: cri::NamespaceMode::Node as i32,
                        ipc: cri::NamespaceMode::Node as i32,
                        target_id: String::new(),
                        userns_options: None,
                    }),
                }),
            }),
            labels: hash(&p.spec.labels),
            annotations: hash(&p.spec.annotations),
            runtime_handler: p.spec.runtime_handler.clone(),
        }),
        info,
        containers_statuses: vec![],
        timestamp: runtime::now_nanos(),
    }
}

pub fn labels_match(labels: &BTreeMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

pub fn list(pods: Vec<Pod>, filter: Option<cri::PodSandboxFilter>) -> cri::ListPodSandboxResponse {
    let mut items: Vec<cri::PodSandbox> = pods
        .iter()
        .filter(|p| match &filter {
            None => true,
            Some(f) => {
                (f.id.is_empty() || p.id.starts_with(&f.id))
                    && f.state.as_ref().is_none_or(|s| s.state == state(p))
                    && labels_match(&p.spec.labels, &f.label_selector)
            }
        })
        .map(sandbox)
        .collect();
    items.sort_by_key(|p| std::cmp::Reverse(p.created_at));
    cri::ListPodSandboxResponse { items }
}
