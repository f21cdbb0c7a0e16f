//! One confinement policy per container, built from the CRI request and the operator's
//! configuration, applied by the monitor before exec (see `platform::confine`): a Seatbelt
//! profile on macOS, Landlock, seccomp and capabilities on the Linux twin.
//!
//! Root is opt-in: root in a chroot is root on the Mac. A container whose process would run as
//! uid 0 is refused unless it is privileged, its pod's namespace is allowed, or the operator
//! allows root everywhere. Privileged containers, and those of pods on the `darwin-unconfined`
//! runtime handler (builds that apply a sandbox of their own, which macOS refuses inside
//! another), are not confined; the other rules still hold for the latter.
//!
//! How this fits with the /proc of the Linux twin's roots: /proc/PID/root of a process outside
//! the container would lead out of the chroot, but Landlock grants nothing outside the root and
//! the volumes, and its ptrace scoping keeps a container from the processes /proc names.

use std::path::{Path, PathBuf};

use crate::model::{ContainerSpec, Pod, SeccompProfile};
use crate::{Error, Result};

/// The runtime handler whose pods' containers are not confined (root is still refused).
pub const UNCONFINED_HANDLER: &str = "darwin-unconfined";

/// A pod or container annotation choosing the (non-root) user containers run as: how a darwin
/// kubelet, which sends no securityContext, asks for a user other than the image's.
pub const RUN_AS_USER_ANNOTATION: &str = "darwin-cri.io/run-as-user";

/// The Mach services a confined container may look up by default on macOS: what command-line
/// builds need, each for a reason (docs/seatbelt.md has the same list).
pub const DEFAULT_MACH_SERVICES: &[&str] = &[
    // notify(3): libSystem learns of time-zone, user-database and log-level changes.
    "com.apple.system.notification_center",
    // Users and groups (getpwnam, getgrgid): `id`, ssh, git and every tool that names its user.
    "com.apple.system.opendirectoryd.libinfo",
    // Logging: os_log (logd) from every Apple library, and the older asl (logger).
    "com.apple.system.logger",
    "com.apple.logd",
    // Certificate trust for TLS: curl, git, SwiftPM and Homebrew downloads.
    "com.apple.trustd",
    "com.apple.trustd.agent",
    // Name resolution: the DNS configuration and the resolver (getaddrinfo).
    "com.apple.SystemConfiguration.DNSConfiguration",
    "com.apple.dnssd.service",
    "com.apple.mDNSResponder",
];

/// Mach services a build may need that are left out of [`DEFAULT_MACH_SERVICES`], with what
/// they give: the operator adds them to `runtime.seatbelt_mach_services` as a named choice
/// (docs/seatbelt.md#mach-services).
pub const OPT_IN_MACH_SERVICES: &[(&str, &str)] = &[
    (
        "com.apple.SecurityServer",
        "code signing and keychains (codesign, security): securityd, which holds the Mac's          keychains",
    ),
    (
        "com.apple.coreservices.launchservicesd",
        "Launch Services (open, app registration): starts programs outside the sandbox",
    ),
    (
        "com.apple.CoreServices.coreservicesd",
        "Core Services (file type and app bindings): starts programs outside the sandbox",
    ),
    (
        "com.apple.diagnosticd",
        "log streaming (log stream, activity tracing): every process's log messages",
    ),
];

/// The capability set of a root process in a confined container: containerd's default set
/// without `NET_RAW`. Every pod here shares the host's network (there is no network namespace),
/// so raw sockets would be raw sockets on the Mac's (the node's) interfaces: packet capture and
/// forged packets for the whole host, not for one pod. A container that needs them (ping as
/// root, a packet tool) asks for `NET_RAW` in `capabilities.add`, which the operator must allow
/// (`runtime.allowed_capabilities`).
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// What the operator's configuration says about root and confinement.
#[derive(Debug, Clone, Default)]
pub struct RootRules<'a> {
    pub allow_root: bool,
    pub allow_root_namespaces: &'a [String],
}

/// What the operator's configuration says about confined containers.
#[derive(Debug, Clone, Copy, Default)]
pub struct PolicyRules<'a> {
    /// Mach services a confined container may look up on macOS
    /// (`runtime.seatbelt_mach_services`).
    pub mach_services: &'a [String],
    /// Capabilities a non-privileged container may add beyond [`DEFAULT_CAPABILITIES`]
    /// (`runtime.allowed_capabilities`; "ALL" allows every one).
    pub allowed_capabilities: &'a [String],
}

/// The policy as the monitor receives it, in the container's process spec: the platform
/// layer's value itself.
pub type Policy = platform::Confinement;

/// Whether the container's processes are confined.
pub fn is_confined(spec: &ContainerSpec, pod: &Pod) -> bool {
    !spec.security.privileged && pod.spec.runtime_handler != UNCONFINED_HANDLER
}

/// The user the run-as-user annotation asks for (the container's own first, then its pod's),
/// when the request names none itself: (uid, name), one of them set. Root is refused here:
/// the annotation may only choose a non-root user.
pub fn annotated_user(spec: &ContainerSpec, pod: &Pod) -> Result<Option<(Option<i64>, String)>> {
    if spec.run_as_user.is_some() || !spec.run_as_username.is_empty() {
        return Ok(None);
    }
    let Some(value) = spec
        .annotations
        .get(RUN_AS_USER_ANNOTATION)
        .or_else(|| pod.spec.annotations.get(RUN_AS_USER_ANNOTATION))
    else {
        return Ok(None);
    };
    let value = value.trim();
    if value.is_empty() || value == "root" || value == "0" {
        return Err(Error::InvalidArgument(format!(
            "annotation {RUN_AS_USER_ANNOTATION}={value:?}: it may only choose a non-root user \
             (a name from the image's /etc/passwd or a uid above 0)"
        )));
    }
    Ok(Some(match value.parse::<i64>() {
        Ok(uid) if uid > 0 => (Some(uid), String::new()),
        Ok(_) => {
            return Err(Error::InvalidArgument(format!(
                "annotation {RUN_AS_USER_ANNOTATION}={value:?} is not a user id"
            )));
        }
        Err(_) => (None, value.to_string()),
    }))
}

/// Refuses a non-privileged container whose process would run as root, unless the operator
/// allows it; the message names the fixes that work for the kubelet that sent the request.
pub fn check_root(spec: &ContainerSpec, pod: &Pod, uid: u32, rules: &RootRules<'_>) -> Result<()> {
    if uid != 0
        || spec.security.privileged
        || rules.allow_root
        || rules
            .allow_root_namespaces
            .contains(&pod.spec.metadata.namespace)
    {
        return Ok(());
    }
    let name = spec
        .metadata
        .as_ref()
        .map(|m| m.name.as_str())
        .unwrap_or_default();
    let user_fix = if spec.security.from_linux_kubelet {
        "set securityContext.runAsUser (or runAsNonRoot with a USER in the image)"
    } else {
        "darwin kubelets send no securityContext: give the image a non-root USER, or annotate \
         the pod with darwin-cri.io/run-as-user=<user>"
    };
    Err(Error::FailedPrecondition(format!(
        "container {name:?} of pod {}/{} would run as root (uid 0): darwin-cri runs containers as \
         root only when allowed, since root in a chroot is root on the Mac. Fix: {user_fix}; or \
         let this namespace run as root (runtime.allow_root_namespaces = [{:?}]), or every pod \
         (runtime.allow_root = true){}",
        pod.spec.metadata.namespace,
        pod.spec.metadata.name,
        pod.spec.metadata.namespace,
        if spec.security.from_linux_kubelet {
            ", or make the container privileged"
        } else {
            ""
        }
    )))
}

/// The capabilities a root process of a confined container keeps: [`DEFAULT_CAPABILITIES`],
/// plus what the request adds, minus what it drops ("ALL" in either means every capability).
///
/// An add beyond the default set must be one the operator allows (`allowed`, from
/// `runtime.allowed_capabilities`; "ALL" there allows every one): otherwise the request is
/// refused with InvalidArgument naming the capability. Without this check a non-root container
/// could ask for SYS_ADMIN or NET_ADMIN and keep them in its bounding set, for a setuid program
/// (on a volume) to pick up; and with the host's network shared by every pod, NET_ADMIN is the
/// host's. Privileged containers are not confined and never reach this.
pub fn capabilities(spec: &ContainerSpec, allowed: &[String]) -> Result<Vec<String>> {
    let sec = &spec.security;
    if platform::capability_number("CHOWN").is_none() {
        // macOS has no capabilities: root is root. A request to drop some cannot be honoured.
        if !sec.add_capabilities.is_empty() || !sec.drop_capabilities.is_empty() {
            return Err(Error::InvalidArgument(
                "capabilities are not available on darwin nodes (root is not divided there)".into(),
            ));
        }
        return Ok(Vec::new());
    }
    let canonical = |name: &str| -> Result<String> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("CAP_").unwrap_or(&upper).to_string();
        if bare != "ALL" && platform::capability_number(&bare).is_none() {
            return Err(Error::InvalidArgument(format!(
                "unknown capability {name:?}"
            )));
        }
        Ok(bare)
    };
    let add = sec
        .add_capabilities
        .iter()
        .map(|c| canonical(c))
        .collect::<Result<Vec<_>>>()?;
    let drop = sec
        .drop_capabilities
        .iter()
        .map(|c| canonical(c))
        .collect::<Result<Vec<_>>>()?;
    let allowed = allowed
        .iter()
        .map(|c| canonical(c))
        .collect::<Result<Vec<_>>>()?;
    let allows_all = allowed.iter().any(|c| c == "ALL");
    let refused: Vec<&String> = add
        .iter()
        .filter(|c| {
            !DEFAULT_CAPABILITIES.contains(&c.as_str()) && !allows_all && !allowed.contains(c)
        })
        .collect();
    if !refused.is_empty() {
        let name = spec
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or_default();
        let list = refused
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Error::InvalidArgument(format!(
            "container {name:?} asks for capabilities.add {list}: a non-privileged container \
             gets only the default set ({}) and what the operator allows beyond it \
             (runtime.allowed_capabilities = {:?}). Fix: drop the add, list the capability in \
             runtime.allowed_capabilities (\"ALL\" allows every one), or make the container \
             privileged",
            DEFAULT_CAPABILITIES.join(", "),
            allowed,
        )));
    }
    let mut kept: Vec<String> = if add.iter().any(|c| c == "ALL") {
        platform::capability_names()
            .iter()
            .map(|c| c.to_string())
            .collect()
    } else {
        DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect()
    };
    for c in add {
        if c != "ALL" && !kept.contains(&c) {
            kept.push(c);
        }
    }
    if drop.iter().any(|c| c == "ALL") {
        kept.clear();
    } else {
        kept.retain(|c| !drop.contains(c));
    }
    Ok(kept)
}

/// The request's seccomp profile as (also refuse Docker's defaults, a profile to add).
pub fn seccomp(spec: &ContainerSpec) -> Result<(bool, Option<String>)> {
    match &spec.security.seccomp {
        SeccompProfile::Unconfined => Ok((false, None)),
        SeccompProfile::RuntimeDefault => Ok((platform::HAS_SECCOMP, None)),
        SeccompProfile::Localhost(path) => {
            if !platform::HAS_SECCOMP {
                return Err(Error::InvalidArgument(
                    "seccomp profiles (Localhost) are not available on darwin nodes: macOS \
                     confines containers with Seatbelt"
                        .into(),
                ));
            }
            let text = std::fs::read(path).map_err(|e| {
                Error::InvalidArgument(format!("seccomp profile {}: {e}", path.display()))
            })?;
            let json = docker_profile_to_seccompiler(&text).map_err(|e| {
                Error::InvalidArgument(format!("seccomp profile {}: {e}", path.display()))
            })?;
            platform::check_seccomp_profile(&json).map_err(|e| {
                Error::InvalidArgument(format!("seccomp profile {}: {e}", path.display()))
            })?;
            Ok((false, Some(json)))
        }
    }
}

/// A seccomp profile in Docker's (and Kubernetes') JSON format as seccompiler's JSON: one filter
/// named "main". Every rule must share one action that differs from the default (an allow list
/// under a refusing default, or a deny list under an allowing one); calls unknown on this
/// architecture are left out, as libseccomp does.
pub fn docker_profile_to_seccompiler(text: &[u8]) -> std::result::Result<String, String> {
    use serde_json::{Value, json};
    let doc: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let default_errno = doc
        .get("defaultErrnoRet")
        .and_then(Value::as_u64)
        .unwrap_or(libc::EPERM as u64);
    let action = |name: &str, errno: Option<u64>| -> std::result::Result<Value, String> {
        Ok(match name {
            "SCMP_ACT_ALLOW" => json!("allow"),
            "SCMP_ACT_ERRNO" => json!({ "errno": errno.unwrap_or(default_errno) }),
            "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => json!("kill_thread"),
            "SCMP_ACT_KILL_PROCESS" => json!("kill_process"),
            "SCMP_ACT_TRAP" => json!("trap"),
            "SCMP_ACT_LOG" => json!("log"),
            other => return Err(format!("action {other} is not supported")),
        })
    };
    let default = action(
        doc.get("defaultAction")
            .and_then(Value::as_str)
            .ok_or("no defaultAction")?,
        None,
    )?;
    let mut rule_action: Option<Value> = None;
    let mut filter = Vec::new();
    for rule in doc
        .get("syscalls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let a = action(
            rule.get("action")
                .and_then(Value::as_str)
                .ok_or("a rule without action")?,
            rule.get("errnoRet").and_then(Value::as_u64),
        )?;
        if a == default {
            continue;
        }
        match &rule_action {
            Some(r) if *r != a => {
                return Err(
                    "its rules use more than one action besides the default: not supported".into(),
                );
            }
            _ => rule_action = Some(a),
        }
        let mut args = Vec::new();
        for arg in rule
            .get("args")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let index = arg
                .get("index")
                .and_then(Value::as_u64)
                .ok_or("an arg without index")?;
            let value = arg.get("value").and_then(Value::as_u64).unwrap_or(0);
            let op = match arg.get("op").and_then(Value::as_str).unwrap_or("") {
                "SCMP_CMP_EQ" => json!("eq"),
                "SCMP_CMP_NE" => json!("ne"),
                "SCMP_CMP_LT" => json!("lt"),
                "SCMP_CMP_LE" => json!("le"),
                "SCMP_CMP_GT" => json!("gt"),
                "SCMP_CMP_GE" => json!("ge"),
                "SCMP_CMP_MASKED_EQ" => json!({ "masked_eq": value }),
                other => return Err(format!("argument comparison {other:?} is not supported")),
            };
            let val = if arg.get("op").and_then(Value::as_str) == Some("SCMP_CMP_MASKED_EQ") {
                arg.get("valueTwo").and_then(Value::as_u64).unwrap_or(0)
            } else {
                value
            };
            args.push(json!({ "index": index, "type": "qword", "op": op, "val": val }));
        }
        let names = rule
            .get("names")
            .and_then(Value::as_array)
            .map(|n| n.iter().filter_map(Value::as_str).collect::<Vec<_>>())
            .or_else(|| rule.get("name").and_then(Value::as_str).map(|n| vec![n]))
            .unwrap_or_default();
        for name in names {
            if !platform::known_syscall(name) {
                continue;
            }
            let mut r = json!({ "syscall": name });
            if !args.is_empty() {
                r["args"] = Value::Array(args.clone());
            }
            filter.push(r);
        }
    }
    let Some(rule_action) = rule_action else {
        if default == json!("allow") {
            // Allows everything: nothing to add to the built-in filter.
            return Ok(json!({ "main": { "mismatch_action": "allow", "match_action": "log", "filter": [] } }).to_string());
        }
        return Err("it refuses every call".into());
    };
    Ok(json!({ "main": { "mismatch_action": default, "match_action": rule_action, "filter": filter } })
        .to_string())
}

/// The container's policy, `None` when it is not confined. `rootfs` is the root's host path,
/// `volumes` each mount's host path inside the root with whether it is read-only, and
/// `masked`/`read_only` the request's masked and read-only paths resolved inside the root
/// (those that exist).
/// An unconfined container (privileged, or of the darwin-unconfined handler) gets no Landlock,
/// seccomp or Seatbelt profile, so a security setting that only confinement applies would be
/// dropped unseen; it is refused instead. Privileged containers keep their privileges as under
/// containerd (capability drops and seccomp do not apply to them), but a read-only root is
/// something they ask to lose, not to have.
fn refuse_unconfined_asks(spec: &ContainerSpec) -> Result<()> {
    let sec = &spec.security;
    let mut asked = Vec::new();
    if sec.readonly_rootfs {
        asked.push("readOnlyRootFilesystem");
    }
    if !sec.privileged {
        if !sec.drop_capabilities.is_empty() {
            asked.push("capabilities.drop");
        }
        if matches!(sec.seccomp, SeccompProfile::Localhost(_)) {
            asked.push("a Localhost seccomp profile");
        }
        if sec.no_new_privs {
            asked.push("allowPrivilegeEscalation: false");
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let who = if sec.privileged {
        "a privileged container"
    } else {
        "a container of the darwin-unconfined runtime handler"
    };
    Err(Error::InvalidArgument(format!(
        "{who} runs without confinement, so {} cannot be applied; use the default runtime handler",
        asked.join(", ")
    )))
}

pub fn policy(
    spec: &ContainerSpec,
    pod: &Pod,
    rootfs: &Path,
    volumes: &[(PathBuf, bool)],
    masked: Vec<PathBuf>,
    read_only: Vec<PathBuf>,
    rules: &PolicyRules<'_>,
) -> Result<Option<Policy>> {
    if !is_confined(spec, pod) {
        refuse_unconfined_asks(spec)?;
        return Ok(None);
    }
    let sec = &spec.security;
    let (runtime_default_seccomp, seccomp_profile) = seccomp(spec)?;
    let mut read = vec![rootfs.to_path_buf()];
    let mut write = Vec::new();
    if sec.readonly_rootfs {
        // A program still needs to write /dev/null and friends.
        write.push(rootfs.join("dev"));
    } else {
        write.push(rootfs.to_path_buf());
    }
    for (path, ro) in volumes {
        if *ro {
            read.push(path.clone());
        } else {
            write.push(path.clone());
        }
    }
    Ok(Some(Policy {
        read,
        write,
        deny: masked,
        read_only,
        no_new_privs: sec.no_new_privs,
        capabilities: capabilities(spec, rules.allowed_capabilities)?,
        runtime_default_seccomp,
        seccomp_profile,
        network: true,
        mach_services: rules.mach_services.to_vec(),
        // The caller's, from runtime.landlock_best_effort.
        landlock_best_effort: false,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{PodMetadata, PodSpec, PodState, SecuritySpec};

    fn pod(namespace: &str, handler: &str) -> Pod {
        Pod {
            id: "p".into(),
            spec: PodSpec {
                metadata: PodMetadata {
                    name: "build".into(),
                    namespace: namespace.into(),
                    uid: "u".into(),
                    attempt: 0,
                },
                runtime_handler: handler.into(),
                ..Default::default()
            },
            state: PodState::Ready,
            created_at: 0,
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn root_is_refused_unless_allowed_and_the_message_names_the_fixes() {
        let spec = ContainerSpec::default();
        let p = pod("ci", "");
        let none = RootRules::default();
        let e = check_root(&spec, &p, 0, &none).expect_err("root refused");
        let msg = e.to_string();
        assert!(matches!(e, Error::FailedPrecondition(_)));
        assert!(msg.contains("darwin-cri.io/run-as-user"), "{msg}");
        assert!(msg.contains("allow_root_namespaces = [\"ci\"]"), "{msg}");
        assert!(
            check_root(&spec, &p, 501, &none).is_ok(),
            "non-root is fine"
        );
        let ns = vec!["ci".to_string()];
        let rules = RootRules {
            allow_root: false,
            allow_root_namespaces: &ns,
        };
        assert!(check_root(&spec, &p, 0, &rules).is_ok());
        assert!(check_root(&spec, &pod("other", ""), 0, &rules).is_err());
        let all = RootRules {
            allow_root: true,
            allow_root_namespaces: &[],
        };
        assert!(check_root(&spec, &p, 0, &all).is_ok());
        let mut linux = spec.clone();
        linux.security.from_linux_kubelet = true;
        let msg = check_root(&linux, &p, 0, &none)
            .expect_err("refused")
            .to_string();
        assert!(
            msg.contains("runAsUser") && msg.contains("privileged"),
            "{msg}"
        );
        linux.security.privileged = true;
        assert!(check_root(&linux, &p, 0, &none).is_ok());
    }

    #[test]
    fn the_annotation_chooses_only_non_root_users() {
        let mut p = pod("ci", "");
        let spec = ContainerSpec::default();
        assert_eq!(annotated_user(&spec, &p).expect("none"), None);
        p.spec
            .annotations
            .insert(RUN_AS_USER_ANNOTATION.into(), "build".into());
        assert_eq!(
            annotated_user(&spec, &p).expect("name"),
            Some((None, "build".to_string()))
        );
        let mut own = spec.clone();
        own.annotations
            .insert(RUN_AS_USER_ANNOTATION.into(), "501".into());
        assert_eq!(
            annotated_user(&own, &p).expect("uid"),
            Some((Some(501), String::new()))
        );
        for root in ["root", "0", ""] {
            own.annotations
                .insert(RUN_AS_USER_ANNOTATION.into(), root.into());
            assert!(annotated_user(&own, &p).is_err(), "{root:?}");
        }
        let mut explicit = spec.clone();
        explicit.run_as_user = Some(0);
        assert_eq!(annotated_user(&explicit, &p).expect("request wins"), None);
    }

    #[test]
    fn capabilities_follow_the_defaults_with_allowed_adds_and_drops() {
        if platform::capability_number("CHOWN").is_none() {
            return;
        }
        let mut spec = ContainerSpec::default();
        let kept = capabilities(&spec, &[]).expect("default");
        assert_eq!(kept.len(), DEFAULT_CAPABILITIES.len());
        assert!(
            !kept.contains(&"NET_RAW".to_string()) && !kept.contains(&"SYS_RAWIO".to_string()),
            "pods share the host's network: no raw sockets by default; no raw I/O: {kept:?}"
        );
        spec.security = SecuritySpec {
            add_capabilities: vec!["CAP_NET_ADMIN".into(), "sys_time".into()],
            drop_capabilities: vec!["MKNOD".into(), "CAP_SYS_CHROOT".into()],
            ..Default::default()
        };
        // Adds beyond the defaults are the operator's to allow.
        let e = capabilities(&spec, &[]).expect_err("not allowed");
        assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("NET_ADMIN") && msg.contains("SYS_TIME"),
            "{msg}"
        );
        assert!(msg.contains("runtime.allowed_capabilities"), "{msg}");
        let e = capabilities(&spec, &["NET_ADMIN".into()]).expect_err("one of two allowed");
        assert!(e.to_string().contains("SYS_TIME") && !e.to_string().contains("add NET_ADMIN"));
        let allowed = vec!["cap_net_admin".to_string(), "SYS_TIME".into()];
        let kept = capabilities(&spec, &allowed).expect("changed");
        assert!(kept.contains(&"NET_ADMIN".to_string()) && kept.contains(&"SYS_TIME".to_string()));
        assert!(!kept.contains(&"MKNOD".to_string()) && !kept.contains(&"SYS_CHROOT".to_string()));
        // Adding what the defaults hold needs no allowance.
        spec.security.add_capabilities = vec!["KILL".into()];
        assert!(capabilities(&spec, &[]).is_ok());
        // ALL: refused unless allowed, every capability when it is.
        spec.security.add_capabilities = vec!["ALL".into()];
        spec.security.drop_capabilities.clear();
        let e = capabilities(&spec, &["NET_ADMIN".into()]).expect_err("ALL not allowed");
        assert!(e.to_string().contains("ALL"), "{e}");
        let all = capabilities(&spec, &["ALL".into()]).expect("ALL allowed");
        assert_eq!(all.len(), platform::capability_names().len());
        spec.security.add_capabilities = vec!["SYS_RAWIO".into()];
        assert!(capabilities(&spec, &["ALL".into()]).is_ok());
        spec.security.drop_capabilities = vec!["ALL".into()];
        spec.security.add_capabilities.clear();
        assert!(capabilities(&spec, &[]).expect("none").is_empty());
        spec.security.drop_capabilities = vec!["CAP_WHATEVER".into()];
        assert!(matches!(
            capabilities(&spec, &[]),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn docker_profiles_become_one_filter_or_a_clear_error() {
        if !platform::HAS_SECCOMP {
            return;
        }
        let allow_list = br#"{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["read", "write", "exit_group", "no_such_call_anywhere"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                          "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]}]}"#;
        let json = docker_profile_to_seccompiler(allow_list).expect("converts");
        assert!(
            json.contains("\"read\"") && !json.contains("no_such_call"),
            "{json}"
        );
        platform::check_seccomp_profile(&json).expect("compiles");
        let deny_list = br#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}]}"#;
        let json = docker_profile_to_seccompiler(deny_list).expect("converts");
        assert!(json.contains("13"), "{json}");
        platform::check_seccomp_profile(&json).expect("compiles");
        let mixed = br#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                         {"names": ["write"], "action": "SCMP_ACT_KILL"}]}"#;
        assert!(docker_profile_to_seccompiler(mixed).is_err());
        assert!(docker_profile_to_seccompiler(b"{").is_err());
        assert!(docker_profile_to_seccompiler(br#"{"syscalls": []}"#).is_err());
    }

    #[test]
    fn the_policy_follows_the_request() {
        let root = Path::new("/r/c/rootfs");
        let mut spec = ContainerSpec::default();
        let p = pod("ci", "");
        let vols = vec![(root.join("data"), false), (root.join("cfg"), true)];
        let policy = policy(
            &spec,
            &p,
            root,
            &vols,
            vec![],
            vec![],
            &PolicyRules::default(),
        )
        .expect("policy")
        .expect("confined");
        assert_eq!(policy.write, vec![root.to_path_buf(), root.join("data")]);
        assert_eq!(policy.read, vec![root.to_path_buf(), root.join("cfg")]);
        spec.security.readonly_rootfs = true;
        let ro = super::policy(
            &spec,
            &p,
            root,
            &vols,
            vec![],
            vec![],
            &PolicyRules::default(),
        )
        .expect("policy")
        .expect("confined");
        assert_eq!(ro.write, vec![root.join("dev"), root.join("data")]);
        spec.security.privileged = true;
        assert!(
            super::policy(
                &spec,
                &p,
                root,
                &vols,
                vec![],
                vec![],
                &PolicyRules::default()
            )
            .is_err(),
            "an unconfined read-only root is refused, not pretended"
        );
        spec.security.readonly_rootfs = false;
        assert_eq!(
            super::policy(
                &spec,
                &p,
                root,
                &vols,
                vec![],
                vec![],
                &PolicyRules::default()
            )
            .expect("p"),
            None
        );
        spec.security.privileged = false;
        let unconfined = pod("ci", UNCONFINED_HANDLER);
        assert_eq!(
            super::policy(
                &spec,
                &unconfined,
                root,
                &vols,
                vec![],
                vec![],
                &PolicyRules::default()
            )
            .expect("p"),
            None
        );
    }

    #[test]
    fn unconfined_containers_refuse_what_only_confinement_applies() {
        let pod = pod("ci", UNCONFINED_HANDLER);
        let root = Path::new("/r");
        let ask = |f: fn(&mut SecuritySpec)| {
            let mut spec = ContainerSpec::default();
            f(&mut spec.security);
            policy(
                &spec,
                &pod,
                root,
                &[],
                vec![],
                vec![],
                &PolicyRules::default(),
            )
        };
        assert!(ask(|_| {}).expect("nothing asked").is_none());
        for (f, named) in [
            (
                (|s: &mut SecuritySpec| s.readonly_rootfs = true) as fn(&mut SecuritySpec),
                "readOnlyRootFilesystem",
            ),
            (
                |s| s.drop_capabilities = vec!["NET_RAW".into()],
                "capabilities.drop",
            ),
            (|s| s.no_new_privs = true, "allowPrivilegeEscalation"),
            (
                |s| s.seccomp = SeccompProfile::Localhost("/p.json".into()),
                "Localhost seccomp",
            ),
        ] {
            let err = ask(f).expect_err("refused").to_string();
            assert!(
                err.contains(named) && err.contains("darwin-unconfined"),
                "{err}"
            );
        }
        // A privileged container keeps its privileges whatever it drops, as under containerd.
        assert!(
            ask(|s| {
                s.privileged = true;
                s.drop_capabilities = vec!["ALL".into()];
            })
            .expect("privileged")
            .is_none()
        );
    }
}
