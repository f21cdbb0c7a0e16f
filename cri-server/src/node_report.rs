//! `darwin-cri node-report`: puts this Mac's [`node_facts`](crate::node_facts) labels and its
//! build slots on its Node object, with kubelet's kubeconfig.
//!
//! Only labels under `darwin-cri.io/` are written; ones this host no longer has (an Xcode
//! removed) are deleted, and every other label is left alone. The build slots are the extended
//! resource `darwin-cri.io/build-slots` in the Node's status capacity, which kubelet carries
//! into allocatable. kubelet's own credentials may do both: NodeRestriction lets a node change
//! labels outside the kubernetes.io and k8s.io namespaces and its own status.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::config::NodeConfig;
use crate::node_facts::{self, PREFIX};

/// The extended resource the scheduler counts builds against.
pub const BUILD_SLOTS: &str = "darwin-cri.io/build-slots";

/// What one report changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub labels_set: usize,
    pub labels_removed: usize,
    pub slots_set: bool,
}

async fn client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading the kubeconfig {}", kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .with_context(|| format!("loading the kubeconfig {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("building the API client")
}

/// The Node's name: `node.name`, else this host's name as kubelet registers it (lowercased).
pub fn node_name(config: &NodeConfig) -> String {
    if !config.name.is_empty() {
        return config.name.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
        .to_lowercase()
}

/// The merge patch that makes `current` carry exactly `wanted` among the labels under
/// [`PREFIX`], or `None` when it already does.
pub fn label_patch(
    current: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
) -> Option<(Value, Changes)> {
    let mut labels = serde_json::Map::new();
    let mut changes = Changes::default();
    for (k, v) in wanted {
        if current.get(k) != Some(v) {
            labels.insert(k.clone(), json!(v));
            changes.labels_set += 1;
        }
    }
    for k in current.keys() {
        if k.starts_with(PREFIX) && !wanted.contains_key(k) {
            labels.insert(k.clone(), Value::Null);
            changes.labels_removed += 1;
        }
    }
    (!labels.is_empty()).then(|| (json!({"metadata": {"labels": labels}}), changes))
}

/// One report: reads the Node, patches its labels and its build slots where they differ.
pub async fn report_once(
    client: kube::Client,
    name: &str,
    wanted: &BTreeMap<String, String>,
    slots: u32,
) -> anyhow::Result<Changes> {
    let nodes: Api<Node> = Api::all(client);
    let node = nodes
        .get(name)
        .await
        .with_context(|| format!("reading Node {name}"))?;
    let current = node.metadata.labels.clone().unwrap_or_default();
    let mut changes = Changes::default();
    if let Some((patch, c)) = label_patch(&current, wanted) {
        nodes
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("patching the labels of Node {name}"))?;
        changes = c;
    }
    let capacity = node
        .status
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get(BUILD_SLOTS))
        .map(|q| q.0.clone());
    let slots = slots.to_string();
    if capacity.as_deref() != Some(slots.as_str()) {
        let patch = json!({"status": {"capacity": {BUILD_SLOTS: slots}}});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .with_context(|| format!("setting {BUILD_SLOTS} on Node {name}"))?;
        changes.slots_set = true;
    }
    Ok(changes)
}

/// Reads the host and reports it, once.
pub async fn report(config: &NodeConfig) -> anyhow::Result<Changes> {
    // A walk of /Applications and the simulator volumes: blocking work, off the async threads.
    let places = node_facts::Places::from_config(config);
    let labels = tokio::task::spawn_blocking(move || {
        let inventory = node_facts::inventory(&places);
        for w in &inventory.warnings {
            tracing::warn!("{w}");
        }
        node_facts::labels(&platform::host_facts(), &inventory)
    })
    .await
    .context("reading the host")?;
    let client = client(&config.kubeconfig).await?;
    report_once(client, &node_name(config), &labels, config.build_slots).await
}

/// Reports every `report_interval_seconds`; a failure is logged and retried with backoff (1 s
/// doubling to 5 min). With `once`, one attempt, whose error is returned.
pub async fn run(config: NodeConfig, once: bool) -> anyhow::Result<()> {
    let interval = Duration::from_secs(config.report_interval_seconds.max(10));
    let mut backoff = Duration::from_secs(1);
    loop {
        match report(&config).await {
            Ok(changes) => {
                tracing::info!(
                    node = node_name(&config),
                    labels_set = changes.labels_set,
                    labels_removed = changes.labels_removed,
                    build_slots_set = changes.slots_set,
                    "node report"
                );
                if once {
                    return Ok(());
                }
                backoff = Duration::from_secs(1);
                tokio::time::sleep(interval).await;
            }
            Err(e) => {
                if once {
                    return Err(e);
                }
                tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff, "node report failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(300));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;

    /// What the stand-in API server was asked: method, path, content type, body.
    type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

    /// A stand-in API server holding one Node; PATCHes are applied as JSON merge patches.
    async fn api_server(node: Value) -> (String, Seen) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let seen: Seen = Arc::default();
        let state = Arc::new(Mutex::new(node));
        let recorded = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    return;
                };
                let (seen, state) = (Arc::clone(&recorded), Arc::clone(&state));
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let (seen, state) = (Arc::clone(&seen), Arc::clone(&state));
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().path().to_string();
                            let ctype = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_string();
                            let body = req.into_body().collect().await.expect("body").to_bytes();
                            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                            seen.lock().expect("lock").push((
                                method.clone(),
                                path.clone(),
                                ctype,
                                body.clone(),
                            ));
                            let mut node = state.lock().expect("lock");
                            let answer = match (method.as_str(), path.as_str()) {
                                ("GET", "/api/v1/nodes/mac-1") => (200, node.clone()),
                                ("PATCH", "/api/v1/nodes/mac-1" | "/api/v1/nodes/mac-1/status") => {
                                    merge(&mut node, &body);
                                    (200, node.clone())
                                }
                                _ => (
                                    404,
                                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
                                ),
                            };
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(answer.0)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(answer.1.to_string())))
                                    .expect("response"),
                            )
                        }
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(conn), svc),
                );
            }
        });
        (url, seen)
    }

    /// RFC 7386 JSON merge patch.
    fn merge(target: &mut Value, patch: &Value) {
        match (target, patch) {
            (Value::Object(t), Value::Object(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
        let path = dir.join("kubelet.conf");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n\
                 users:\n- name: u\n  user:\n    token: node-token\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
                 current-context: x\n"
            ),
        )
        .expect("write");
        path
    }

    #[tokio::test]
    async fn owned_labels_are_set_stale_ones_removed_others_untouched_and_slots_set() {
        let node = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "mac-1", "labels": {
                "kubernetes.io/os": "darwin",
                "team": "ios",
                "darwin-cri.io/arch": "arm64",
                "darwin-cri.io/xcode-15.0": "true"
            }},
            "status": {"capacity": {"cpu": "12"}}
        });
        let (url, seen) = api_server(node).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let client = client(&kubeconfig(dir.path(), &url)).await.expect("client");
        let wanted: BTreeMap<String, String> = [
            ("darwin-cri.io/arch", "arm64"),
            ("darwin-cri.io/xcode-16.1", "true"),
            ("darwin-cri.io/xcode-selected", "16.1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();

        let changes = report_once(client.clone(), "mac-1", &wanted, 3)
            .await
            .expect("report");
        assert_eq!(
            changes,
            Changes {
                labels_set: 2,
                labels_removed: 1,
                slots_set: true
            }
        );
        {
            let seen = seen.lock().expect("lock");
            let patches: Vec<_> = seen.iter().filter(|r| r.0 == "PATCH").collect();
            assert_eq!(patches.len(), 2, "{seen:?}");
            assert_eq!(patches[0].1, "/api/v1/nodes/mac-1");
            assert_eq!(patches[0].2, "application/merge-patch+json");
            assert_eq!(
                patches[0].3,
                json!({"metadata": {"labels": {
                    "darwin-cri.io/xcode-16.1": "true",
                    "darwin-cri.io/xcode-selected": "16.1",
                    "darwin-cri.io/xcode-15.0": null
                }}})
            );
            assert_eq!(patches[1].1, "/api/v1/nodes/mac-1/status");
            assert_eq!(
                patches[1].3,
                json!({"status": {"capacity": {"darwin-cri.io/build-slots": "3"}}})
            );
        }

        // A second report finds nothing to change and sends no patch.
        let before = seen.lock().expect("lock").len();
        let changes = report_once(client.clone(), "mac-1", &wanted, 3)
            .await
            .expect("report");
        assert_eq!(changes, Changes::default());
        let after: Vec<_> = seen.lock().expect("lock")[before..]
            .iter()
            .map(|r| r.0.clone())
            .collect();
        assert_eq!(after, ["GET"]);

        let err = report_once(client, "other", &wanted, 3)
            .await
            .expect_err("no such node");
        assert!(format!("{err:#}").contains("reading Node other"), "{err:#}");
    }

    #[tokio::test]
    async fn a_missing_kubeconfig_is_named() {
        let config = NodeConfig {
            kubeconfig: "/nonexistent/kubelet.conf".into(),
            applications_dir: "/nonexistent".into(),
            ..NodeConfig::default()
        };
        let err = run(config, true).await.expect_err("no kubeconfig");
        assert!(
            format!("{err:#}").contains("/nonexistent/kubelet.conf"),
            "{err:#}"
        );
    }
}
