//! CreateContainer, StartContainer, StopContainer, RemoveContainer, ContainerStatus,
//! ListContainers, ExecSync.

use std::collections::HashMap;

use k8s_cri::v1 as cri;
use runtime::{Container, ContainerMetadata, ContainerSpec, ContainerState, MountSpec};
use tonic::Status;

use super::sandbox::{hash, labels_match};
use super::status::required;

fn map(m: HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    m.into_iter().collect()
}

pub fn container_spec(config: cri::ContainerConfig) -> Result<ContainerSpec, Status> {
    let image = config.image.ok_or_else(|| required("config.image"))?;
    let mut spec = ContainerSpec {
        metadata: config.metadata.map(|m| ContainerMetadata {
            name: m.name,
            attempt: m.attempt,
        }),
        user_specified_image: image.user_specified_image,
        image: image.image,
        command: config.command,
        args: config.args,
        working_dir: config.working_dir,
        envs: config
            .envs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect(),
        mounts: Vec::with_capacity(config.mounts.len()),
        labels: map(config.labels),
        annotations: map(config.annotations),
        log_path: config.log_path,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        ..Default::default()
    };
    for m in config.mounts {
        if m.image.as_ref().is_some_and(|i| !i.image.is_empty()) {
            return Err(Status::invalid_argument(format!(
                "mount {:?}: image volumes are not supported on darwin nodes",
                m.container_path
            )));
        }
        let propagation = match cri::MountPropagation::try_from(m.propagation) {
            Ok(cri::MountPropagation::PropagationPrivate) => runtime::Propagation::Private,
            Ok(cri::MountPropagation::PropagationHostToContainer) => {
                runtime::Propagation::HostToContainer
            }
            Ok(cri::MountPropagation::PropagationBidirectional) => {
                runtime::Propagation::Bidirectional
            }
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "mount {:?}: unknown propagation {}",
                    m.container_path, m.propagation
                )));
            }
        };
        // Every read-only mount is read-only throughout, submounts included (bindfs -o ro on
        // macOS, and the twin alike): a recursive one is what any read-only mount gives. As the
        // CRI asks, it must say read-only and propagate nothing.
        if m.recursive_read_only && (!m.readonly || propagation != runtime::Propagation::Private) {
            return Err(Status::invalid_argument(format!(
                "mount {:?}: a recursive read-only mount must be read-only with private propagation",
                m.container_path
            )));
        }
        spec.mounts.push(MountSpec {
            container_path: m.container_path,
            host_path: m.host_path,
            readonly: m.readonly,
            propagation,
        });
    }
    // A darwin kubelet sends no Linux config: its keys stand for it (kubelet_annotations.rs).
    // Either way the kubelet sent the pod's securityContext, which error messages then name.
    let from_cri = config.linux.is_some();
    let linux = match config.linux {
        Some(linux) => Some(linux),
        None => super::kubelet_annotations::linux_config(&spec.annotations)?,
    };
    spec.security.from_linux_kubelet = linux.is_some();
    let linux = linux.unwrap_or_default();
    spec.linux_resources = linux.resources.as_ref().map(linux_resources);
    if let Some(sc) = linux.security_context {
        spec.run_as_user = sc.run_as_user.map(|v| v.value);
        spec.run_as_group = sc.run_as_group.map(|v| v.value);
        spec.run_as_username = sc.run_as_username;
        spec.supplemental_groups = sc.supplemental_groups;
        spec.supplemental_groups_strict =
            sc.supplemental_groups_policy == cri::SupplementalGroupsPolicy::Strict as i32;
        super::sandbox::refuse_selinux(sc.selinux_options.as_ref(), "container")?;
        // Deprecated, and read on purpose: a profile named only there must not be dropped.
        #[allow(deprecated)]
        let (seccomp_path, apparmor_profile) = (
            sc.seccomp_profile_path.as_str(),
            sc.apparmor_profile.as_str(),
        );
        super::sandbox::refuse_deprecated_seccomp(seccomp_path, sc.seccomp.as_ref(), "container")?;
        if sc.apparmor.is_none() && apparmor_profile.starts_with("localhost/") {
            return Err(Status::invalid_argument(format!(
                "container security_context.apparmor_profile {apparmor_profile:?}: AppArmor profiles are not available on darwin nodes"
            )));
        }
        let localhost = cri::security_profile::ProfileType::Localhost as i32;
        spec.security.privileged = sc.privileged;
        spec.security.readonly_rootfs = sc.readonly_rootfs;
        spec.security.no_new_privs = sc.no_new_privs;
        if let Some(caps) = &sc.capabilities {
            spec.security.add_capabilities = caps.add_capabilities.clone();
            spec.security.drop_capabilities = caps.drop_capabilities.clone();
            if !caps.add_ambient_capabilities.is_empty() {
                return Err(Status::invalid_argument(
                    "ambient capabilities are not supported by darwin-cri",
                ));
            }
        }
        spec.security.masked_paths = sc.masked_paths.clone();
        spec.security.readonly_paths = sc.readonly_paths.clone();
        spec.security.seccomp = match &sc.seccomp {
            Some(p) if p.profile_type == localhost => {
                if !p.localhost_ref.starts_with('/') {
                    return Err(Status::invalid_argument(format!(
                        "seccomp profile {:?}: an absolute path on the node is expected",
                        p.localhost_ref
                    )));
                }
                runtime::SeccompProfile::Localhost(p.localhost_ref.clone().into())
            }
            Some(p)
                if p.profile_type == cri::security_profile::ProfileType::RuntimeDefault as i32 =>
            {
                runtime::SeccompProfile::RuntimeDefault
            }
            _ => runtime::SeccompProfile::Unconfined,
        };
        if sc
            .apparmor
            .as_ref()
            .is_some_and(|p| p.profile_type == localhost)
        {
            return Err(Status::invalid_argument(
                "AppArmor profiles are not available on darwin nodes",
            ));
        }
    }
    if spec.run_as_username.is_empty()
        && let Some(w) = config.windows.and_then(|w| w.security_context)
    {
        spec.run_as_username = w.run_as_username;
    }
    // A Linux kubelet always names the user (the image's when the pod does not), so a group
    // alone is a malformed request, refused as containerd and CRI-O do. A darwin kubelet's keys
    // leave the user out when the pod does: the image's user then runs with the pod's group.
    if from_cri
        && spec.run_as_group.is_some()
        && spec.run_as_user.is_none()
        && spec.run_as_username.is_empty()
    {
        return Err(Status::invalid_argument(format!(
            "container {:?}: security_context.run_as_group is set without run_as_user or \
             run_as_username",
            spec.metadata
                .as_ref()
                .map(|m| m.name.as_str())
                .unwrap_or_default()
        )));
    }
    Ok(spec)
}

pub fn linux_resources(r: &cri::LinuxContainerResources) -> runtime::limits::LinuxResources {
    runtime::limits::LinuxResources {
        cpu_period: r.cpu_period,
        cpu_quota: r.cpu_quota,
        cpu_shares: r.cpu_shares,
        memory_limit_in_bytes: r.memory_limit_in_bytes,
    }
}

pub fn state(c: &Container) -> i32 {
    (match c.state {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
        ContainerState::Unknown => cri::ContainerState::ContainerUnknown,
    }) as i32
}

fn metadata(c: &Container) -> cri::ContainerMetadata {
    cri::ContainerMetadata {
        name: c.name.clone(),
        attempt: c.attempt,
    }
}

/// The image as containerd reports it: its name (first repo tag) where it has one, and the
/// name the pod spec used.
fn image_spec(c: &Container) -> cri::ImageSpec {
    let or = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    cri::ImageSpec {
        image: or(&c.image_name, &c.spec.image),
        user_specified_image: or(&c.spec.user_specified_image, &c.spec.image),
        ..Default::default()
    }
}

pub fn container(c: &Container) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.pod_id.clone(),
        metadata: Some(metadata(c)),
        image: Some(image_spec(c)),
        image_ref: c.image_ref.clone(),
        state: state(c),
        created_at: c.created_at,
        labels: hash(&c.spec.labels),
        annotations: hash(&c.spec.annotations),
        image_id: c.image_id.clone(),
    }
}

pub fn status(c: &Container, verbose: bool) -> cri::ContainerStatusResponse {
    let mut info = HashMap::new();
    if verbose {
        info.insert(
            "info".into(),
            serde_json::json!({
                "pid": c.pid,
                "monitorPid": c.monitor_pid,
                "monitorProtocol": c.monitor_protocol,
                "rootfs": c.process.rootfs,
                "args": c.process.args,
                "cwd": c.process.cwd,
            })
            .to_string(),
        );
    }
    cri::ContainerStatusResponse {
        status: Some(cri::ContainerStatus {
            id: c.id.clone(),
            metadata: Some(metadata(c)),
            state: state(c),
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            image: Some(image_spec(c)),
            image_ref: c.image_ref.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            labels: hash(&c.spec.labels),
            annotations: hash(&c.spec.annotations),
            mounts: c
                .spec
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.clone(),
                    readonly: m.readonly,
                    // What the mount is: every read-only one is read-only throughout.
                    recursive_read_only: m.readonly,
                    propagation: match m.propagation {
                        runtime::Propagation::Private => cri::MountPropagation::PropagationPrivate,
                        runtime::Propagation::HostToContainer => {
                            cri::MountPropagation::PropagationHostToContainer
                        }
                        runtime::Propagation::Bidirectional => {
                            cri::MountPropagation::PropagationBidirectional
                        }
                    } as i32,
                    ..Default::default()
                })
                .collect(),
            log_path: c.log_path(),
            resources: Some(cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources {
                    memory_limit_in_bytes: c.process.limits.memory_bytes.unwrap_or(0) as i64,
                    cpu_shares: c.spec.linux_resources.map(|r| r.cpu_shares).unwrap_or(0),
                    cpu_quota: c.spec.linux_resources.map(|r| r.cpu_quota).unwrap_or(0),
                    cpu_period: c.spec.linux_resources.map(|r| r.cpu_period).unwrap_or(0),
                    ..Default::default()
                }),
                windows: None,
            }),
            image_id: c.image_id.clone(),
            user: Some(cri::ContainerUser {
                linux: Some(cri::LinuxContainerUser {
                    uid: c.process.uid.into(),
                    gid: c.process.gid.into(),
                    supplemental_groups: c.process.groups.iter().map(|g| i64::from(*g)).collect(),
                }),
            }),
        }),
        info,
    }
}

pub fn list(
    rt: &runtime::Runtime,
    filter: Option<cri::ContainerFilter>,
) -> cri::ListContainersResponse {
    let wanted = |c: &Container| match &filter {
        None => true,
        Some(f) => {
            (f.id.is_empty() || c.id.starts_with(&f.id))
                && (f.pod_sandbox_id.is_empty() || c.pod_id.starts_with(&f.pod_sandbox_id))
                && f.state.as_ref().is_none_or(|s| s.state == state(c))
                && labels_match(&c.spec.labels, &f.label_selector)
        }
    };
    let mut out: Vec<cri::Container> = rt.map_containers(|c| wanted(c).then(|| container(c)));
    out.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    cri::ListContainersResponse { containers: out }
}

/// A container event as kubelet's evented PLEG reads it: the pod's status and the statuses of
/// all its containers, as they were when the event happened.
pub fn event(rt: &runtime::Runtime, e: runtime::ContainerEvent) -> cri::ContainerEventResponse {
    use runtime::EventKind;
    let kind = match e.kind {
        EventKind::Created => cri::ContainerEventType::ContainerCreatedEvent,
        EventKind::Started => cri::ContainerEventType::ContainerStartedEvent,
        EventKind::Stopped => cri::ContainerEventType::ContainerStoppedEvent,
        EventKind::Deleted => cri::ContainerEventType::ContainerDeletedEvent,
    };
    let containers_statuses = e
        .containers
        .iter()
        .filter_map(|c| status(c, false).status)
        .collect();
    cri::ContainerEventResponse {
        container_id: e.container_id,
        container_event_type: kind as i32,
        created_at: e.created_at,
        pod_sandbox_status: e
            .pod
            .and_then(|p| super::sandbox::status(&p, rt.node_ip(), false).status),
        containers_statuses,
    }
}
