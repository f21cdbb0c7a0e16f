//! charts/darwin-cri rendered as `helm template` would render it, for the default values and a
//! non-default set: every document deserializes into its Kubernetes type (k8s-openapi, or the
//! prometheus-operator CRD's fields), the alert rules pass promtool, the dashboard's queries
//! name metrics the server exports, and values that make the chart invalid fail rendering.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use darwin_cri_tests::helm::{Rendered, render};
use darwin_cri_tests::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use serde::Deserialize;
use serde::de::DeserializeOwned;

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/darwin-cri")
}

/// Parses `text` as `T`, and proves nothing was ignored: `T` serialized again equals the input
/// (k8s-openapi's types skip unknown fields, so a misspelt one would vanish here).
fn strict<T: DeserializeOwned + serde::Serialize>(what: &str, text: &str) -> T {
    let json: serde_json::Value =
        serde_saphyr::from_str(text).unwrap_or_else(|e| panic!("{what} is not YAML: {e}\n{text}"));
    let typed: T = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("{what} does not deserialize: {e}\n{text}"));
    let again = serde_json::to_value(&typed).expect("serialize");
    assert_eq!(again, json, "{what}: fields were dropped or changed");
    typed
}

/// ScrapeConfig (monitoring.coreos.com/v1alpha1) as far as the chart uses it; field names and
/// types from prometheus-operator's scrapeconfig_types.go (charts/darwin-cri/FIELDS.md).
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScrapeConfig {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ScrapeConfigSpec,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ScrapeConfigSpec {
    #[serde(rename = "kubernetesSDConfigs")]
    kubernetes_sd_configs: Vec<KubernetesSdConfig>,
    scheme: Scheme,
    metrics_path: String,
    scrape_interval: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scrape_timeout: Option<String>,
    relabelings: Vec<RelabelConfig>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct KubernetesSdConfig {
    role: KubernetesRole,
}

#[derive(Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
enum KubernetesRole {
    Node,
    Pod,
    Endpoints,
    Service,
    Ingress,
    EndpointSlice,
}

#[derive(Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RelabelConfig {
    action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_labels: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    regex: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target_label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replacement: Option<String>,
}

/// PrometheusRule (monitoring.coreos.com/v1), from prometheusrule_types.go.
#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PrometheusRule {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: PrometheusRuleSpec,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct PrometheusRuleSpec {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct RuleGroup {
    name: String,
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Rule {
    alert: String,
    expr: String,
    #[serde(rename = "for")]
    for_: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn nonblank(r: &Rendered, name: &str) -> Option<String> {
    r.get(name).filter(|t| !t.trim().is_empty()).cloned()
}

/// Writes the rule groups as a plain Prometheus rules file and runs `promtool check rules`.
fn promtool_check(groups: &[RuleGroup]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("rules.yml");
    let doc = serde_json::json!({ "groups": groups });
    std::fs::write(&file, serde_json::to_string(&doc).expect("json")).expect("write");
    let out = Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&file)
        .output()
        .expect("promtool (scripts/setup.sh --tests installs prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `darwin_cri_*` metric name in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("darwin_cri_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        names.insert(name);
    }
    names
}

#[test]
fn default_values_render_valid_objects_and_rules_promtool_accepts() {
    let r = render(&chart(), "", false).expect("renders");
    assert!(nonblank(&r, "validate.yaml").is_none());
    assert!(
        nonblank(&r, "example-pod.yaml").is_none(),
        "the example is off by default"
    );

    let rc: RuntimeClass = strict(
        "RuntimeClass",
        &nonblank(&r, "runtimeclass.yaml").expect("made"),
    );
    assert_eq!(rc.metadata.name.as_deref(), Some("darwin"));
    assert_eq!(rc.handler, "darwin");
    let scheduling = rc.scheduling.expect("scheduling");
    assert_eq!(
        scheduling
            .node_selector
            .expect("selector")
            .get("kubernetes.io/os")
            .map(String::as_str),
        Some("darwin")
    );
    let toleration = &scheduling.tolerations.expect("tolerations")[0];
    assert_eq!(toleration.key.as_deref(), Some("darwin-cri.io/macos"));
    assert_eq!(toleration.effect.as_deref(), Some("NoSchedule"));

    let sc: ScrapeConfig = strict(
        "ScrapeConfig",
        &nonblank(&r, "scrapeconfig.yaml").expect("made"),
    );
    assert_eq!(
        (sc.api_version.as_str(), sc.kind.as_str()),
        ("monitoring.coreos.com/v1alpha1", "ScrapeConfig")
    );
    assert_eq!(sc.spec.kubernetes_sd_configs[0].role, KubernetesRole::Node);
    assert_eq!(sc.spec.scheme, Scheme::Http);
    assert_eq!(sc.spec.metrics_path, "/metrics");
    assert!(
        sc.spec
            .relabelings
            .iter()
            .any(|l| l.replacement.as_deref() == Some("${1}:9754")
                && l.target_label.as_deref() == Some("__address__"))
    );
    assert!(sc.spec.relabelings.iter().any(|l| l.action == "keep"
        && l.source_labels.as_deref()
            == Some(&["__meta_kubernetes_node_label_kubernetes_io_os".to_string()][..])));
    assert_eq!(
        sc.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("release"))
            .map(String::as_str),
        Some("prometheus")
    );

    let pr: PrometheusRule = strict(
        "PrometheusRule",
        &nonblank(&r, "prometheusrule.yaml").expect("made"),
    );
    let alerts: Vec<&str> = pr
        .spec
        .groups
        .iter()
        .flat_map(|g| g.rules.iter().map(|r| r.alert.as_str()))
        .collect();
    for wanted in [
        "DarwinCriDown",
        "DarwinCriImagePullFailuresRising",
        "DarwinCriOOMKills",
        "DarwinCriGrpcErrorRatioHigh",
        "DarwinCriImageFilesystemNearlyFull",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} in {alerts:?}");
    }
    for rule in pr.spec.groups.iter().flat_map(|g| &g.rules) {
        assert!(rule.labels.contains_key("severity"), "{}", rule.alert);
        assert!(
            rule.annotations.contains_key("summary")
                && rule.annotations.contains_key("description")
        );
        assert!(
            rule.annotations["description"].contains("{{ $labels.")
                || rule.alert == "DarwinCriDown"
                || rule.annotations["description"].contains("{{ $value"),
            "Prometheus templating survives Helm's: {}",
            rule.annotations["description"]
        );
    }
    promtool_check(&pr.spec.groups);

    let cm: ConfigMap = strict(
        "ConfigMap",
        &nonblank(&r, "grafana-dashboard.yaml").expect("made"),
    );
    assert_eq!(
        cm.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("grafana_dashboard"))
            .map(String::as_str),
        Some("1")
    );
    let data = cm.data.expect("data");
    let dashboard: serde_json::Value =
        serde_json::from_str(data.get("darwin-cri.json").expect("dashboard")).expect("JSON");
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    assert!(
        exprs
            .iter()
            .any(|e| e.contains("{{") || e.contains("$node")),
        "Grafana's own variables are kept"
    );
}

#[test]
fn every_metric_the_rules_and_dashboard_query_is_one_the_server_exports() -> anyhow::Result<()> {
    let r = render(&chart(), "", false).expect("renders");
    let pr: PrometheusRule = strict(
        "PrometheusRule",
        &nonblank(&r, "prometheusrule.yaml").expect("made"),
    );
    let cm: ConfigMap = strict(
        "ConfigMap",
        &nonblank(&r, "grafana-dashboard.yaml").expect("made"),
    );
    let dashboard = cm
        .data
        .expect("data")
        .remove("darwin-cri.json")
        .expect("json");
    let mut wanted: BTreeSet<String> = metric_names(&dashboard);
    for rule in pr.spec.groups.iter().flat_map(|g| &g.rules) {
        wanted.extend(metric_names(&rule.expr));
    }
    assert!(wanted.len() >= 8, "{wanted:?}");

    // A server that has answered a call and failed a pull exports every family it has.
    let port = free_port()?;
    let rt = tokio::runtime::Runtime::new()?;
    let exported = rt.block_on(async {
        let server =
            Server::start_with_config(&format!("[metrics]\naddress = \"127.0.0.1:{port}\"\n"))
                .await?;
        let (_, mut img) = server.client().await?;
        let _ = img
            .pull_image(v1::PullImageRequest {
                image: Some(v1::ImageSpec {
                    image: "registry.invalid/absent:1".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await;
        http_get(port, "/metrics")
    })?;
    let samples: BTreeSet<String> = exported
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect();
    let missing: Vec<&String> = wanted.iter().filter(|n| !samples.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {samples:?}"
    );
    Ok(())
}

#[test]
fn a_non_default_set_renders_what_it_asks_for() {
    let values = r#"
runtimeClass:
  name: macos-builds
  handler: darwin
tolerations:
  - key: farm.example/mac
    operator: Exists
    effect: NoSchedule
scrapeConfig:
  create: false
dashboard:
  create: false
metrics:
  port: 9900
  scheme: https
prometheusRule:
  labels:
    team: ios
  rules:
    grpcErrorRatio: 0.2
examplePod:
  create: true
  image: registry.farm.local:5000/xcode-tools:16
  xcodeVersion: "16.2"
"#;
    let r = render(&chart(), values, true).expect("renders");
    assert!(nonblank(&r, "scrapeconfig.yaml").is_none());
    assert!(nonblank(&r, "grafana-dashboard.yaml").is_none());
    let rc: RuntimeClass = strict(
        "RuntimeClass",
        &nonblank(&r, "runtimeclass.yaml").expect("made"),
    );
    assert_eq!(rc.metadata.name.as_deref(), Some("macos-builds"));
    let tolerations = rc
        .scheduling
        .and_then(|s| s.tolerations)
        .expect("tolerations");
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].key.as_deref(), Some("farm.example/mac"));
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));

    let pr: PrometheusRule = strict(
        "PrometheusRule",
        &nonblank(&r, "prometheusrule.yaml").expect("made"),
    );
    assert_eq!(
        pr.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("ios")
    );
    let grpc = pr
        .spec
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .find(|r| r.alert == "DarwinCriGrpcErrorRatioHigh")
        .expect("alert");
    assert!(grpc.expr.contains("0.2"), "{}", grpc.expr);
    promtool_check(&pr.spec.groups);

    let pod: Pod = strict("Pod", &nonblank(&r, "example-pod.yaml").expect("made"));
    assert_eq!(
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("darwin-cri.io/run-as-user"))
            .map(String::as_str),
        Some("build"),
        "the example build runs as a build user"
    );
    let spec = pod.spec.expect("spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("macos-builds"));
    assert_eq!(
        spec.node_selector
            .as_ref()
            .and_then(|s| s.get("darwin-cri.io/xcode-16.2"))
            .map(String::as_str),
        Some("true")
    );
    let c = &spec.containers[0];
    assert_eq!(
        c.image.as_deref(),
        Some("registry.farm.local:5000/xcode-tools:16")
    );
    let res = c.resources.as_ref().expect("resources");
    let slots =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.as_ref()
                .and_then(|m| m.get("darwin-cri.io/build-slots"))
                .map(|q| q.0.clone())
        };
    assert_eq!(slots(&res.requests), Some("1".into()));
    assert_eq!(
        slots(&res.requests),
        slots(&res.limits),
        "extended resources need requests == limits"
    );
    let notes = nonblank(&r, "NOTES.txt").expect("notes");
    assert!(
        notes.contains("kubernetes_sd_configs"),
        "the plain scrape config for clusters without the operator"
    );
}

#[test]
fn values_that_make_the_chart_invalid_fail_rendering_with_a_message() {
    for (values, says) in [
        ("metrics:\n  port: 70000\n", "metrics.port"),
        ("examplePod:\n  create: true\n", "examplePod.image"),
        (
            "runtimeClass:\n  handler: Not_A_Label\n",
            "runtimeClass.handler",
        ),
        (
            "prometheusRule:\n  rules:\n    grpcErrorRatio: 3\n",
            "grpcErrorRatio",
        ),
    ] {
        let err = render(&chart(), values, false).expect_err(values);
        assert!(err.contains(says), "{values}: {err}");
    }
}
