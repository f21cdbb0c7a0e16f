//! deploy/: the launchd plist, install.sh, the Mac configuration, kubelet's configuration and
//! the newsyslog entry, checked as the tools that read them would.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use darwin_cri_tests::{binary, wait_for};
use serde::Deserialize;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn the_launchd_plist_parses_and_runs_the_server_as_a_kept_alive_root_daemon() -> anyhow::Result<()>
{
    let plist = plist::Value::from_file(deploy().join("io.darwin-cri.plist"))?;
    let d = plist.as_dictionary().expect("a dictionary");
    let s = |k: &str| {
        d.get(k)
            .and_then(|v| v.as_string())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(s("Label"), "io.darwin-cri");
    assert_eq!(s("UserName"), "root");
    let args: Vec<&str> = d
        .get("ProgramArguments")
        .and_then(|v| v.as_array())
        .expect("ProgramArguments")
        .iter()
        .filter_map(|v| v.as_string())
        .collect();
    assert_eq!(
        args,
        [
            "/usr/local/bin/darwin-cri",
            "--config",
            "/usr/local/etc/darwin-cri/config.toml",
            "serve"
        ]
    );
    assert_eq!(d.get("KeepAlive").and_then(|v| v.as_boolean()), Some(true));
    assert_eq!(d.get("RunAtLoad").and_then(|v| v.as_boolean()), Some(true));
    assert!(s("StandardErrorPath").starts_with("/var/log/darwin-cri/"));
    for limits in ["SoftResourceLimits", "HardResourceLimits"] {
        let files = d
            .get(limits)
            .and_then(|v| v.as_dictionary())
            .and_then(|l| l.get("NumberOfFiles"))
            .and_then(|v| v.as_signed_integer())
            .expect(limits);
        assert!(files >= 65536, "{limits}: {files}");
    }
    Ok(())
}

#[test]
fn install_sh_passes_shellcheck() -> anyhow::Result<()> {
    let out = Command::new("shellcheck")
        .arg(deploy().join("install.sh"))
        .output()
        .map_err(|e| anyhow::anyhow!("shellcheck (scripts/setup.sh --tests installs it): {e}"))?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    Ok(())
}

/// Every file under `dir` with its mode, owner and content digest, for comparing two installs.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u32, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let m = std::fs::symlink_metadata(e.path()).expect("stat");
            let content = if m.is_file() {
                std::fs::read(e.path()).expect("read")
            } else {
                Vec::new()
            };
            out.insert(
                e.path().strip_prefix(dir).expect("under").to_path_buf(),
                (m.mode(), m.uid(), content),
            );
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn install_sh(args: &[&str]) -> anyhow::Result<(bool, String)> {
    let out = Command::new("bash")
        .arg(deploy().join("install.sh"))
        .args(args)
        .output()?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

#[test]
fn install_sh_dry_run_changes_nothing_and_installs_are_idempotent_and_undone() -> anyhow::Result<()>
{
    let bin = binary();
    let bin = bin.to_str().expect("utf-8");
    let (ok, out) = install_sh(&["--dry-run", "--binary", bin, "--no-kubelet"])?;
    assert!(ok, "{out}");
    for action in [
        "/usr/local/bin/darwin-cri",
        "/usr/local/bin/darwin-cri-monitor",
        "/Library/LaunchDaemons/io.darwin-cri.plist",
        "/etc/newsyslog.d/darwin-cri.conf",
        "/var/lib/darwin-cri",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("+ ") && l.contains(action)),
            "{action}: {out}"
        );
    }
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    let dir = tempfile::tempdir()?;
    let prefix = dir.path().to_str().expect("utf-8");
    let (ok, out) = install_sh(&[
        "--dry-run",
        "--prefix",
        prefix,
        "--binary",
        bin,
        "--no-kubelet",
    ])?;
    assert!(ok && out.contains(prefix), "{out}");
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "a dry run makes nothing"
    );

    let (ok, out) = install_sh(&["--prefix", prefix, "--binary", bin, "--no-kubelet"])?;
    assert!(ok, "{out}");
    let first = tree(dir.path());
    let installed = |p: &str| dir.path().join(p.trim_start_matches('/'));
    let config = installed("/usr/local/etc/darwin-cri/config.toml");
    assert_eq!(
        std::fs::read(&config)?,
        std::fs::read(deploy().join("darwin-cri.toml"))?
    );
    for bin in [
        "/usr/local/bin/darwin-cri",
        "/usr/local/bin/darwin-cri-monitor",
    ] {
        assert_eq!(
            std::fs::metadata(installed(bin))?.permissions().mode() & 0o777,
            0o755,
            "{bin}"
        );
    }
    assert_eq!(
        std::fs::metadata(installed("/var/lib/darwin-cri"))?
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(installed("/Library/LaunchDaemons/io.darwin-cri.plist"))?
            .permissions()
            .mode()
            & 0o777,
        0o644
    );

    // Again, after the operator edited the config: same tree, the edit kept.
    std::fs::write(&config, "# edited\n")?;
    let expected = tree(dir.path());
    assert_eq!(
        expected.len(),
        first.len(),
        "only the config's content changed"
    );
    let (ok, out) = install_sh(&["--prefix", prefix, "--binary", bin, "--no-kubelet"])?;
    assert!(ok, "{out}");
    assert_eq!(
        tree(dir.path()),
        expected,
        "a second install changes nothing"
    );

    let (ok, out) = install_sh(&["uninstall", "--prefix", prefix, "--no-kubelet"])?;
    assert!(ok, "{out}");
    for gone in [
        "/usr/local/bin/darwin-cri",
        "/usr/local/bin/darwin-cri-monitor",
        "/Library/LaunchDaemons/io.darwin-cri.plist",
        "/etc/newsyslog.d/darwin-cri.conf",
    ] {
        assert!(!installed(gone).exists(), "{gone} removed");
    }
    assert_eq!(
        std::fs::read_to_string(&config)?,
        "# edited\n",
        "the config is kept"
    );
    let (ok, out) = install_sh(&["uninstall", "--prefix", prefix])?;
    assert!(ok, "uninstalling twice is fine: {out}");
    let (ok, out) = install_sh(&["--prefix", prefix, "--bogus"])?;
    assert!(!ok && out.contains("--bogus"), "{out}");
    Ok(())
}

/// The kubelet's launchd job, as launchd reads it.
#[test]
fn the_kubelet_plist_runs_the_kubelet_with_tls_bootstrapping_kept_alive() -> anyhow::Result<()> {
    let plist = plist::Value::from_file(deploy().join("io.darwin-cri.kubelet.plist"))?;
    let d = plist.as_dictionary().expect("a dictionary");
    let s = |k: &str| {
        d.get(k)
            .and_then(|v| v.as_string())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(s("Label"), "io.darwin-cri.kubelet");
    assert_eq!(s("UserName"), "root");
    assert_eq!(program_arguments(&plist), KUBELET_ARGS);
    assert_eq!(d.get("KeepAlive").and_then(|v| v.as_boolean()), Some(true));
    assert_eq!(d.get("RunAtLoad").and_then(|v| v.as_boolean()), Some(true));
    // How it waits for darwin-cri: launchd restarts it, at most once every ThrottleInterval.
    let throttle = d
        .get("ThrottleInterval")
        .and_then(|v| v.as_signed_integer());
    assert!(matches!(throttle, Some(1..=30)), "{throttle:?}");
    // In darwin-cri's log directory, which install.sh creates and newsyslog rotates.
    assert_eq!(s("StandardErrorPath"), "/var/log/darwin-cri/kubelet.log");
    assert_eq!(s("StandardOutPath"), s("StandardErrorPath"));
    let rotation = std::fs::read_to_string(deploy().join("newsyslog.d/darwin-cri.conf"))?;
    assert!(
        rotation
            .lines()
            .any(|l| l.starts_with("/var/log/darwin-cri/kubelet.log ")),
        "{rotation}"
    );
    // The paths the plist names are the ones kubelet-config.yaml's comments give.
    let config = std::fs::read_to_string(deploy().join("kubelet-config.yaml"))?;
    for path in [
        "/var/lib/kubelet/config.yaml",
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kubelet",
    ] {
        assert!(config.contains(path), "{path}");
    }
    Ok(())
}

/// The kubelet's arguments in the shipped plist, in order.
const KUBELET_ARGS: [&str; 5] = [
    "/usr/local/bin/kubelet",
    "--bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf",
    "--kubeconfig=/etc/kubernetes/kubelet.conf",
    "--config=/var/lib/kubelet/config.yaml",
    "--root-dir=/var/lib/kubelet",
];

fn program_arguments(plist: &plist::Value) -> Vec<String> {
    plist
        .as_dictionary()
        .and_then(|d| d.get("ProgramArguments"))
        .and_then(|v| v.as_array())
        .expect("ProgramArguments")
        .iter()
        .filter_map(|v| v.as_string().map(str::to_string))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// install.sh with the kubelet and a join: the kubelet's binary, config, plist (with this node's
/// arguments), the bootstrap kubeconfig and the cluster CA, in a dry run and under --prefix, then
/// uninstalled and purged.
#[test]
fn install_sh_installs_the_kubelet_and_joins_with_a_bootstrap_token() -> anyhow::Result<()> {
    let bin = binary();
    let bin = bin.to_str().expect("utf-8");
    let inputs = tempfile::tempdir()?;
    // Any executable stands in for the kubelet: install.sh copies it, never runs it.
    let kubelet = inputs.path().join("kubelet");
    std::fs::write(&kubelet, "#!/bin/sh\necho kubelet\n")?;
    std::fs::set_permissions(&kubelet, std::fs::Permissions::from_mode(0o755))?;
    let ca = inputs.path().join("ca.crt");
    let ca_pem = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAVMRMwEQYDVQQDEwprdWJlcm5ldGVz\n-----END CERTIFICATE-----\n";
    std::fs::write(&ca, ca_pem)?;
    let (kubelet, ca) = (
        kubelet.to_str().expect("utf-8"),
        ca.to_str().expect("utf-8"),
    );
    let secret = "0123456789abcdef";
    let token = format!("abcdef.{secret}");
    let server = "https://10.0.0.1:6443";
    let join = [
        "--binary",
        bin,
        "--kubelet",
        kubelet,
        "--node-name",
        "mac-mini-01",
        "--node-ip",
        "192.168.64.2",
        "--join-server",
        server,
        "--join-token",
        token.as_str(),
        "--join-ca",
        ca,
    ];

    let args = |extra: &[&str]| -> Vec<String> {
        extra
            .iter()
            .chain(join.iter())
            .map(|s| s.to_string())
            .collect()
    };
    let run = |extra: &[&str]| {
        let a = args(extra);
        install_sh(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let (ok, out) = run(&["--dry-run"])?;
    assert!(ok, "{out}");
    for action in [
        "/usr/local/bin/kubelet",
        "/Library/LaunchDaemons/io.darwin-cri.kubelet.plist",
        "/var/lib/kubelet/config.yaml",
        "/etc/kubernetes/bootstrap-kubelet.conf",
        "/etc/kubernetes/pki/ca.crt",
        // darwin-cri is installed beside it.
        "/Library/LaunchDaemons/io.darwin-cri.plist",
    ] {
        assert!(
            out.lines()
                .any(|l| l.starts_with("+ ") && l.ends_with(action)),
            "{action}: {out}"
        );
    }
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(
        !out.contains(secret),
        "the token's secret is never printed: {out}"
    );

    let dir = tempfile::tempdir()?;
    let prefix = dir.path().to_str().expect("utf-8");
    let (ok, out) = run(&["--dry-run", "--prefix", prefix])?;
    assert!(ok && out.contains(prefix), "{out}");
    assert_eq!(
        std::fs::read_dir(dir.path())?.count(),
        0,
        "a dry run makes nothing"
    );

    let (ok, out) = run(&["--prefix", prefix])?;
    assert!(ok, "{out}");
    assert!(!out.contains(secret), "{out}");
    let installed = |p: &str| dir.path().join(p.trim_start_matches('/'));
    for (path, want) in [
        ("/usr/local/bin/kubelet", 0o755),
        ("/usr/local/bin/darwin-cri", 0o755),
        ("/Library/LaunchDaemons/io.darwin-cri.kubelet.plist", 0o644),
        ("/var/lib/kubelet", 0o750),
        ("/var/lib/kubelet/config.yaml", 0o644),
        ("/etc/kubernetes/pki/ca.crt", 0o644),
        // The bootstrap token is a credential: root only.
        ("/etc/kubernetes/bootstrap-kubelet.conf", 0o600),
    ] {
        assert_eq!(mode(&installed(path)), want, "{path}");
    }
    assert_eq!(
        std::fs::read(installed("/var/lib/kubelet/config.yaml"))?,
        std::fs::read(deploy().join("kubelet-config.yaml"))?
    );
    assert_eq!(
        std::fs::read_to_string(installed("/etc/kubernetes/pki/ca.crt"))?,
        ca_pem
    );
    // The installed plist: the shipped arguments, then this node's.
    let plist = plist::Value::from_file(installed(
        "/Library/LaunchDaemons/io.darwin-cri.kubelet.plist",
    ))?;
    let mut want: Vec<String> = KUBELET_ARGS.iter().map(|s| s.to_string()).collect();
    want.push("--hostname-override=mac-mini-01".into());
    want.push("--node-ip=192.168.64.2".into());
    assert_eq!(program_arguments(&plist), want);

    // The bootstrap kubeconfig, as client-go reads it (kubectl config view).
    let bootstrap = installed("/etc/kubernetes/bootstrap-kubelet.conf");
    let view = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&bootstrap)
        .args(["config", "view", "--raw", "-o", "json"])
        .output()
        .map_err(|e| anyhow::anyhow!("kubectl (scripts/setup.sh --tests installs it): {e}"))?;
    assert!(view.status.success(), "{view:?}");
    let kc: serde_json::Value = serde_json::from_slice(&view.stdout)?;
    let context_name = kc["current-context"].as_str().expect("a current context");
    let context = kc["contexts"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == context_name))
        .expect("the current context")["context"]
        .clone();
    let cluster = kc["clusters"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == context["cluster"]))
        .expect("the context's cluster")["cluster"]
        .clone();
    let user = kc["users"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == context["user"]))
        .expect("the context's user")["user"]
        .clone();
    assert_eq!(cluster["server"], server);
    use base64::Engine;
    let ca_data = base64::engine::general_purpose::STANDARD.decode(
        cluster["certificate-authority-data"]
            .as_str()
            .expect("certificate-authority-data"),
    )?;
    assert_eq!(ca_data, ca_pem.as_bytes());
    assert_eq!(user["token"], token.as_str());

    // Again, after the operator edited kubelet's config: the same tree, the edit kept.
    let config = installed("/var/lib/kubelet/config.yaml");
    std::fs::write(&config, "# edited\n")?;
    let expected = tree(dir.path());
    let (ok, out) = run(&["--prefix", prefix])?;
    assert!(ok, "{out}");
    assert_eq!(
        tree(dir.path()),
        expected,
        "a second install changes nothing"
    );

    // Uninstall removes the kubelet and its job, and keeps its config and credentials ...
    let (ok, out) = install_sh(&["uninstall", "--prefix", prefix])?;
    assert!(ok, "{out}");
    for gone in [
        "/usr/local/bin/kubelet",
        "/Library/LaunchDaemons/io.darwin-cri.kubelet.plist",
        "/usr/local/bin/darwin-cri",
    ] {
        assert!(!installed(gone).exists(), "{gone} removed");
    }
    assert_eq!(std::fs::read_to_string(&config)?, "# edited\n");
    assert!(bootstrap.exists());
    // ... which --purge removes: the node joins again from scratch.
    let (ok, out) = install_sh(&["uninstall", "--purge", "--prefix", prefix])?;
    assert!(ok, "{out}");
    for gone in ["/var/lib/kubelet", "/etc/kubernetes", "/var/log/darwin-cri"] {
        assert!(!installed(gone).exists(), "{gone} purged: {out}");
    }

    // The join options go together, and a token has the bootstrap token's form.
    let (ok, out) = install_sh(&["--dry-run", "--join-server", server])?;
    assert!(!ok && out.contains("go together"), "{out}");
    let bad = join
        .iter()
        .map(|a| if *a == token { "abcdef:0123" } else { a })
        .collect::<Vec<_>>();
    let (ok, out) = install_sh(&[&["--dry-run"][..], &bad[..]].concat())?;
    assert!(!ok && out.contains("--join-token"), "{out}");
    Ok(())
}

/// install.sh as on a Mac, with stand-ins for uname, scutil and launchctl (which says the jobs
/// named in $LOADED are loaded): the order of launchd steps, and the node name from LocalHostName.
#[test]
fn install_sh_on_a_mac_stops_kubelet_first_and_starts_it_after_darwin_cri_and_doctor()
-> anyhow::Result<()> {
    let stubs = tempfile::tempdir()?;
    for (name, body) in [
        ("uname", "[ \"$1\" = -m ] && echo arm64 || echo Darwin"),
        ("scutil", "echo Mac-Mini-07"),
        (
            "launchctl",
            "case \"$1\" in print) case \" $LOADED \" in *\" ${2#system/} \"*) exit 0;; esac; exit 1;; esac",
        ),
    ] {
        let path = stubs.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    let path = format!(
        "{}:{}",
        stubs.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let kubelet = stubs.path().join("kubelet");
    std::fs::write(&kubelet, "#!/bin/sh\n")?;
    std::fs::set_permissions(&kubelet, std::fs::Permissions::from_mode(0o755))?;
    let ca = stubs.path().join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n",
    )?;
    let bin = binary();
    let mac = |loaded: &str, args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = Command::new("bash")
            .arg(deploy().join("install.sh"))
            .args(args)
            .env("PATH", &path)
            .env("LOADED", loaded)
            .output()?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let launchd_steps = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("+ launchctl") || l.contains(" doctor"))
            .map(|l| l.trim_start_matches("+ ").to_string())
            .collect()
    };
    let (kubelet, ca) = (
        kubelet.to_str().expect("utf-8"),
        ca.to_str().expect("utf-8"),
    );
    let bin_arg = bin.to_str().expect("utf-8");
    let (ok, out) = mac(
        "io.darwin-cri io.darwin-cri.kubelet",
        &[
            "--dry-run",
            "--binary",
            bin_arg,
            "--kubelet",
            kubelet,
            "--join-server",
            "https://10.0.0.1:6443",
            "--join-token",
            "abcdef.0123456789abcdef",
            "--join-ca",
            ca,
        ],
    )?;
    assert!(ok, "{out}");
    assert_eq!(
        launchd_steps(&out),
        [
            "launchctl bootout system/io.darwin-cri.kubelet",
            "launchctl bootout system/io.darwin-cri",
            "launchctl enable system/io.darwin-cri",
            "launchctl bootstrap system /Library/LaunchDaemons/io.darwin-cri.plist",
            "/usr/local/bin/darwin-cri --config /usr/local/etc/darwin-cri/config.toml doctor --kubelet-config /var/lib/kubelet/config.yaml",
            "launchctl enable system/io.darwin-cri.kubelet",
            "launchctl bootstrap system /Library/LaunchDaemons/io.darwin-cri.kubelet.plist",
        ],
        "{out}"
    );
    assert!(
        out.contains("node name: mac-mini-07"),
        "the LocalHostName, in lower case: {out}"
    );

    // Uninstall: kubelet stops first.
    let (ok, out) = mac(
        "io.darwin-cri io.darwin-cri.kubelet",
        &["uninstall", "--dry-run"],
    )?;
    assert!(ok, "{out}");
    assert_eq!(
        launchd_steps(&out),
        [
            "launchctl bootout system/io.darwin-cri.kubelet",
            "launchctl bootout system/io.darwin-cri",
        ],
        "{out}"
    );
    Ok(())
}

#[test]
fn the_mac_configuration_loads() -> anyhow::Result<()> {
    let out = Command::new(binary())
        .arg("--config")
        .arg(deploy().join("darwin-cri.toml"))
        .args(["config", "show"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("Bindfs") && text.contains("0.0.0.0:9754"),
        "{text}"
    );
    Ok(())
}

/// KubeletConfiguration (kubelet.config.k8s.io/v1beta1) as far as deploy/kubelet-config.yaml uses
/// it, field names and types from upstream's types.go (deploy/kubelet-config-fields.txt): an
/// unknown or misspelt field, or a value of the wrong type, fails to parse.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletConfiguration {
    api_version: String,
    kind: String,
    container_runtime_endpoint: String,
    image_service_endpoint: String,
    runtime_request_timeout: GoDuration,
    feature_gates: BTreeMap<String, bool>,
    #[serde(rename = "cgroupsPerQOS")]
    cgroups_per_qos: Option<bool>,
    enforce_node_allocatable: Vec<String>,
    fail_swap_on: Option<bool>,
    system_reserved: BTreeMap<String, Quantity>,
    kube_reserved: BTreeMap<String, Quantity>,
    max_pods: i32,
    pod_logs_dir: String,
    local_storage_capacity_isolation: Option<bool>,
    volume_plugin_dir: String,
    container_log_max_size: Quantity,
    container_log_max_files: Option<i32>,
    register_with_taints: Vec<Taint>,
    serialize_image_pulls: Option<bool>,
    max_parallel_image_pulls: Option<i32>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    image_gc_high_threshold_percent: Option<i32>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    image_gc_low_threshold_percent: Option<i32>,
    #[serde(rename = "imageMinimumGCAge")]
    image_minimum_gc_age: GoDuration,
    eviction_hard: BTreeMap<String, String>,
    read_only_port: i32,
    authentication: KubeletAuthentication,
    authorization: KubeletAuthorization,
    rotate_certificates: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletAuthentication {
    x509: KubeletX509Authentication,
    webhook: KubeletWebhookAuthentication,
    anonymous: KubeletAnonymousAuthentication,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletX509Authentication {
    #[serde(rename = "clientCAFile")]
    client_ca_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletWebhookAuthentication {
    enabled: Option<bool>,
    #[serde(rename = "cacheTTL")]
    cache_ttl: GoDuration,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletAnonymousAuthentication {
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletAuthorization {
    mode: AuthorizationMode,
    webhook: KubeletWebhookAuthorization,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum AuthorizationMode {
    AlwaysAllow,
    Webhook,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct KubeletWebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL")]
    cache_authorized_ttl: GoDuration,
    #[serde(rename = "cacheUnauthorizedTTL")]
    cache_unauthorized_ttl: GoDuration,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct Taint {
    key: String,
    value: String,
    effect: TaintEffect,
}

#[derive(Debug, Deserialize)]
#[allow(dead_code)]
enum TaintEffect {
    NoSchedule,
    PreferNoSchedule,
    NoExecute,
}

/// A Go duration string ("10m", "2m30s", "500ms").
#[derive(Debug)]
struct GoDuration;

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut rest = s.as_str();
        let mut parts = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(rest.len());
            let unit_end = rest[digits..]
                .find(|c: char| c.is_ascii_digit())
                .map_or(rest.len(), |i| digits + i);
            let ok = digits > 0
                && rest[..digits].parse::<f64>().is_ok()
                && ["ns", "us", "µs", "ms", "s", "m", "h"].contains(&&rest[digits..unit_end]);
            if !ok {
                return Err(serde::de::Error::custom(format!(
                    "{s:?} is not a Go duration"
                )));
            }
            rest = &rest[unit_end..];
            parts += 1;
        }
        if parts == 0 {
            return Err(serde::de::Error::custom("empty duration"));
        }
        Ok(GoDuration)
    }
}

/// A Kubernetes quantity ("1", "500m", "2Gi", "50Mi").
#[derive(Debug)]
struct Quantity;

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let digits = s
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len());
        let suffixes = [
            "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
        ];
        if digits == 0 || s[..digits].parse::<f64>().is_err() || !suffixes.contains(&&s[digits..]) {
            return Err(serde::de::Error::custom(format!("{s:?} is not a quantity")));
        }
        Ok(Quantity)
    }
}

#[test]
fn the_kubelet_configuration_is_a_kubelet_configuration_for_darwin_cri() -> anyhow::Result<()> {
    let text = std::fs::read_to_string(deploy().join("kubelet-config.yaml"))?;
    let kc: KubeletConfiguration = serde_saphyr::from_str(&text)?;
    assert_eq!(kc.api_version, "kubelet.config.k8s.io/v1beta1");
    assert_eq!(kc.kind, "KubeletConfiguration");
    assert_eq!(
        kc.container_runtime_endpoint,
        "unix:///var/run/darwin-cri/darwin-cri.sock"
    );
    assert_eq!(kc.image_service_endpoint, kc.container_runtime_endpoint);
    assert_eq!(kc.cgroups_per_qos, Some(false));
    assert!(kc.enforce_node_allocatable.is_empty());
    assert_eq!(kc.fail_swap_on, Some(false));
    assert_eq!(
        kc.feature_gates.get("PodAndContainerStatsFromCRI"),
        Some(&true)
    );
    assert!(kc.eviction_hard.contains_key("imagefs.available"));
    assert!(
        kc.register_with_taints
            .iter()
            .any(|t| t.key == "darwin-cri.io/macos")
    );
    for (signal, value) in &kc.eviction_hard {
        assert!(
            value.ends_with('%')
                || value.parse::<u64>().is_ok()
                || value.ends_with("Gi")
                || value.ends_with("Mi"),
            "{signal}: {value}"
        );
    }
    // The strict parse is what refuses a misspelt field.
    let typo = text.replace("cgroupsPerQOS:", "cgroupsPerQoS:");
    assert!(serde_saphyr::from_str::<KubeletConfiguration>(&typo).is_err());

    // And darwin-cri's doctor reads the same file as pointing at its socket.
    let dir = tempfile::tempdir()?;
    let out = Command::new(binary())
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--socket")
        .arg("/var/run/darwin-cri/darwin-cri.sock")
        .arg("--state-dir")
        .arg(dir.path().join("run"))
        .arg("doctor")
        .arg("--kubelet-config")
        .arg(deploy().join("kubelet-config.yaml"))
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("ok")
            && l.contains("kubelet")
            && l.contains("points kubelet at")),
        "{text}"
    );
    Ok(())
}

#[test]
fn newsyslog_rotation_is_followed_by_the_server_reopening_its_log() -> anyhow::Result<()> {
    // The entry: `logfile owner:group mode count size when flags [pid_file [signal]]`.
    let conf = std::fs::read_to_string(deploy().join("newsyslog.d/darwin-cri.conf"))?;
    let entries: Vec<Vec<&str>> = conf
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let main = entries
        .iter()
        .find(|e| e[0] == "/var/log/darwin-cri/darwin-cri.log")
        .expect("an entry for the server's log");
    assert_eq!(main.len(), 9, "{main:?}");
    assert!(main[1].contains(':') && u32::from_str_radix(main[2], 8).is_ok());
    assert!(main[3].parse::<u32>().is_ok() && main[4].parse::<u32>().is_ok());
    assert!(
        main[6].chars().all(|c| "BCDGJNUXYZpbnw".contains(c)),
        "flags {}",
        main[6]
    );
    assert_eq!(
        (main[7], main[8]),
        ("/var/run/darwin-cri/darwin-cri.pid", "1")
    );
    for e in &entries {
        assert!(e.len() >= 7, "{e:?}");
    }

    // What newsyslog does: rename the file, then SIGHUP the pid in the pid file.
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let log = dir.path().join("log/darwin-cri.log");
        let config = dir.path().join("c.toml");
        std::fs::write(
            &config,
            format!("[log]\nfile = {:?}\n", log.display().to_string()),
        )?;
        let server = Command::new(binary())
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(dir.path().join("root"))
            .arg("--state-dir")
            .arg(dir.path().join("run"))
            .arg("--socket")
            .arg(dir.path().join("run/s.sock"))
            .arg("serve")
            .spawn()?;
        // Killed if an assertion below fails.
        let mut server = KillOnDrop(server);
        let pid_file = dir.path().join("run/darwin-cri.pid");
        let log2 = log.clone();
        wait_for(
            Duration::from_secs(20),
            "the server to log that it serves",
            || {
                let text = std::fs::read_to_string(&log2).unwrap_or_default();
                async move { text.contains("darwin-cri serving").then_some(()) }
            },
        )
        .await?;
        let pid: i32 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
        assert_eq!(pid, server.0.id() as i32);
        std::fs::rename(&log, dir.path().join("log/darwin-cri.log.0"))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGHUP)?;
        let log3 = log.clone();
        wait_for(Duration::from_secs(10), "a new log file", || {
            let text = std::fs::read_to_string(&log3).unwrap_or_default();
            async move { text.contains("log file reopened").then_some(()) }
        })
        .await?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGTERM)?;
        server.0.wait()?;
        assert!(!pid_file.exists(), "the pid file goes with the server");
        let old = std::fs::read_to_string(dir.path().join("log/darwin-cri.log.0"))?;
        assert!(
            old.contains("darwin-cri serving") && !old.contains("reopened"),
            "{old}"
        );
        Ok::<(), anyhow::Error>(())
    })
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The Homebrew formula, loaded by Ruby against a stand-in for Homebrew's DSL
/// (tests/fixtures/formula_check.rb): it builds the checkout it sits in, the cargo command names
/// a package and feature that exist, every file it installs is in the repository, and its test
/// block's commands pass against the real binary.
#[test]
fn the_homebrew_formula_builds_this_checkout_and_names_only_files_that_exist() -> anyhow::Result<()>
{
    let repo = deploy().join("..").canonicalize()?;
    let formula = deploy().join("homebrew/darwin-cri.rb");
    let syntax = Command::new("ruby").arg("-c").arg(&formula).output()?;
    assert!(syntax.status.success(), "{syntax:?}");
    let out = Command::new("ruby")
        .arg(repo.join("tests/fixtures/formula_check.rb"))
        .arg(&formula)
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(
        seen["head"].as_str(),
        Some(format!("file://{}", repo.display()).as_str()),
        "the head URL is this checkout"
    );
    let calls = seen["calls"].as_array().expect("calls");
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut cargo = 0;
    let mut installed = 0;
    let mut commands = 0;
    let dir = tempfile::tempdir()?;
    let default_toml = dir.path().join("default.toml");
    for call in calls {
        let call_strings = strings(call);
        match call_strings.first().map(String::as_str) {
            Some("system") => {
                let args = &call_strings[1..];
                assert_eq!(&args[..2], ["cargo", "install"], "{args:?}");
                let package = args
                    .iter()
                    .position(|a| a == "--path")
                    .and_then(|i| args.get(i + 1))
                    .expect("--path");
                let manifest = std::fs::read_to_string(repo.join(package).join("Cargo.toml"))?;
                assert!(manifest.contains("name = \"darwin-cri\""), "{package}");
                if let Some(i) = args.iter().position(|a| a == "--features") {
                    for feature in args[i + 1].split(',') {
                        assert!(
                            manifest.contains(&format!("\n{feature} = ")),
                            "feature {feature}"
                        );
                    }
                }
                cargo += 1;
            }
            Some("install") => {
                for file in strings(&call[2]) {
                    assert!(repo.join(&file).is_file(), "{file} is in the repository");
                    installed += 1;
                }
            }
            Some("shell_output") => {
                let cmd = call_strings[1]
                    .replace("<bin>/darwin-cri", &binary().display().to_string())
                    .replace(
                        "<testpath>/default.toml",
                        &default_toml.display().to_string(),
                    )
                    .replace(
                        "<pkgshare>/darwin-cri.toml",
                        &deploy().join("darwin-cri.toml").display().to_string(),
                    );
                assert!(!cmd.contains('<'), "a path the test cannot map: {cmd}");
                let out = Command::new("sh").arg("-c").arg(&cmd).output()?;
                assert!(out.status.success(), "{cmd}: {out:?}");
                if cmd.ends_with("config default") {
                    std::fs::write(&default_toml, &out.stdout)?;
                }
                commands += 1;
            }
            other => panic!("an unexpected call {other:?}"),
        }
    }
    assert_eq!((cargo, installed, commands), (1, 7, 4), "{calls:?}");
    Ok(())
}
