//! The instructions that only change the image's config (ARG, ENV, LABEL, WORKDIR, USER,
//! ENTRYPOINT, CMD, EXPOSE, VOLUME, STOPSIGNAL, SHELL): no layer, an empty step in the history.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::containerfile::Command;
use super::{BuildOptions, StageState, command_json, shell_of};

/// `ARG name[=default]`: the build's `--build-arg`, else the default, else the global ARG.
pub(super) fn arg(
    opts: &BuildOptions,
    global: &BTreeMap<String, String>,
    state: &mut StageState,
    name: &str,
    default: Option<&str>,
) {
    let value = opts
        .build_args
        .get(name)
        .cloned()
        .or_else(|| default.map(|d| state.expand(d)))
        .or_else(|| global.get(name).cloned());
    if let Some(v) = value {
        state.args.insert(name.to_string(), v);
    }
}

/// `ENV k=v ...`.
pub(super) fn env(state: &mut StageState, pairs: &[(String, String)]) {
    for (k, v) in pairs {
        let v = state.expand(v);
        state.set_env(k, &v);
    }
}

/// The config's object `key` (`Labels`, `ExposedPorts`, `Volumes`), made one if it is not.
fn object<'a>(state: &'a mut StageState, key: &str) -> &'a mut Value {
    let entry = state.runtime().entry(key).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry
}

/// `LABEL k=v ...`.
pub(super) fn label(state: &mut StageState, pairs: &[(String, String)]) {
    let labels: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (state.expand(k), state.expand(v)))
        .collect();
    let entry = object(state, "Labels");
    for (k, v) in labels {
        entry[k] = json!(v);
    }
}

/// `WORKDIR dir`: relative to the current one.
pub(super) fn workdir(state: &mut StageState, dir: &str) {
    let dir = state.expand(dir);
    let cur = state.get("WorkingDir");
    let joined = if dir.starts_with('/') {
        dir
    } else {
        format!(
            "{}/{dir}",
            if cur.is_empty() {
                ""
            } else {
                cur.trim_end_matches('/')
            }
        )
    };
    state.runtime().insert("WorkingDir".into(), json!(joined));
}

/// `USER user[:group]`.
pub(super) fn user(state: &mut StageState, u: &str) {
    let u = state.expand(u);
    state.runtime().insert("User".into(), json!(u));
}

/// `ENTRYPOINT` or `CMD` (`key`), a shell form through the stage's SHELL.
pub(super) fn command(state: &mut StageState, key: &str, c: &Command) {
    let shell = shell_of(state);
    let v = command_json(c, &shell);
    state.runtime().insert(key.into(), v);
}

/// `EXPOSE port[/proto] ...` (tcp unless said).
pub(super) fn expose(state: &mut StageState, ports: &[String]) {
    let ports: Vec<String> = ports.iter().map(|p| state.expand(p)).collect();
    let entry = object(state, "ExposedPorts");
    for p in ports {
        let p = if p.contains('/') {
            p
        } else {
            format!("{p}/tcp")
        };
        entry[p] = json!({});
    }
}

/// `VOLUME path ...`.
pub(super) fn volume(state: &mut StageState, paths: &[String]) {
    let paths: Vec<String> = paths.iter().map(|p| state.expand(p)).collect();
    let entry = object(state, "Volumes");
    for p in paths {
        entry[p] = json!({});
    }
}

/// `STOPSIGNAL signal`.
pub(super) fn stop_signal(state: &mut StageState, s: &str) {
    let s = state.expand(s);
    state.runtime().insert("StopSignal".into(), json!(s));
}

/// `SHELL ["exe", "args"]`.
pub(super) fn shell(state: &mut StageState, v: &[String]) {
    state.runtime().insert("Shell".into(), json!(v));
}
