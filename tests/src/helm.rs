//! Renders a Helm chart's templates the way `helm template` does, with the gtmpl Go-template
//! engine and the handful of Helm and Sprig functions the darwin-cri chart uses (helm itself
//! is not installable on the test machines).
//!
//! Supported: values.yaml deep-merged with an override document, `.Values`, `.Release`, `.Chart`,
//! `.Files.Get` (rewritten to a function before parsing: gtmpl passes no arguments to fields),
//! `define`/`template`/`include` across `_*.tpl` helpers, and the functions `toYaml toJson
//! nindent indent quote default required fail trunc trimSuffix lower replace hasKey empty`.
//! Anything else fails the render, which is the point: the chart may use only what is here.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gtmpl::{Context, Func, Template};
use gtmpl_value::{FuncError, Number, Value};
use serde_json::Value as Json;

thread_local! {
    /// The chart's helper templates and files, for `include` and `.Files.Get`, which gtmpl
    /// functions cannot reach otherwise (they are plain fn pointers).
    static CHART: RefCell<(String, BTreeMap<String, String>)> = RefCell::default();
}

/// One rendered template: its file name and output (empty when the template renders nothing).
pub type Rendered = BTreeMap<String, String>;

/// Renders every template of the chart at `dir` (not `_*.tpl` helpers or NOTES.txt unless
/// `with_notes`) with `values_override` (YAML, may be empty) merged onto values.yaml.
pub fn render(dir: &Path, values_override: &str, with_notes: bool) -> Result<Rendered, String> {
    let values = {
        let mut base = yaml(&std::fs::read_to_string(dir.join("values.yaml")).map_err(s)?)?;
        if !values_override.trim().is_empty() {
            merge(&mut base, yaml(values_override)?);
        }
        base
    };
    let chart = yaml(&std::fs::read_to_string(dir.join("Chart.yaml")).map_err(s)?)?;
    let context = serde_json::json!({
        "Values": values,
        "Release": {"Name": "darwin-cri", "Namespace": "monitoring", "Service": "Helm",
                    "IsInstall": true, "IsUpgrade": false, "Revision": 1},
        "Chart": {"Name": chart["name"], "Version": chart["version"],
                  "AppVersion": chart["appVersion"]},
    });
    let mut helpers = String::new();
    let mut templates = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir.join("templates"))
        .map_err(s)?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = rewrite_files_get(&std::fs::read_to_string(&path).map_err(s)?);
        if name.starts_with('_') {
            helpers.push_str(&text);
            helpers.push('\n');
        } else if name != "NOTES.txt" || with_notes {
            templates.push((name, text));
        }
    }
    let files = chart_files(dir)?;
    CHART.with(|c| *c.borrow_mut() = (helpers.clone(), files));
    let mut out = Rendered::new();
    for (name, text) in templates {
        let rendered = execute(&helpers, &text, to_value(&context))
            .map_err(|e| format!("templates/{name}: {e}"))?;
        out.insert(name, rendered);
    }
    Ok(out)
}

/// Every non-template file of the chart by its path relative to the chart, for `.Files.Get`.
fn chart_files(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(s)?.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .map_err(s)?
                .to_string_lossy()
                .to_string();
            if path.is_dir() {
                if rel != "templates" {
                    stack.push(path);
                }
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                files.insert(rel, text);
            }
        }
    }
    Ok(files)
}

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn yaml(text: &str) -> Result<Json, String> {
    serde_saphyr::from_str::<Json>(text).map_err(|e| format!("YAML: {e}"))
}

/// Helm's values merge: maps merge key by key, anything else replaces.
fn merge(base: &mut Json, top: Json) {
    match (base, top) {
        (Json::Object(b), Json::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, t) => *b = t,
    }
}

/// `.Files.Get "x"` and `$.Files.Get "x"` become `filesGet "x"`.
fn rewrite_files_get(text: &str) -> String {
    text.replace("$.Files.Get", "filesGet")
        .replace(".Files.Get", "filesGet")
}

fn execute(helpers: &str, text: &str, dot: Value) -> Result<String, String> {
    let mut t = Template::default();
    t.add_funcs(FUNCS);
    t.parse(format!("{helpers}{text}"))
        .map_err(|e| format!("parse: {e}"))?;
    t.render(&Context::from(dot)).map_err(|e| e.to_string())
}

const FUNCS: &[(&str, Func)] = &[
    ("include", include),
    ("toYaml", to_yaml),
    ("toJson", to_json),
    ("nindent", nindent),
    ("indent", indent),
    ("quote", quote),
    ("default", default),
    ("required", required),
    ("fail", fail),
    ("trunc", trunc),
    ("trimSuffix", trim_suffix),
    ("lower", lower),
    ("replace", replace),
    ("hasKey", has_key),
    ("empty", empty),
    ("filesGet", files_get),
];

fn arg<'a>(args: &'a [Value], i: usize, name: &str, n: usize) -> Result<&'a Value, FuncError> {
    if args.len() != n {
        return Err(FuncError::ExactlyXArgs(name.into(), n));
    }
    Ok(&args[i])
}

fn string(v: &Value) -> String {
    match v {
        Value::NoValue | Value::Nil => String::new(),
        other => other.to_string(),
    }
}

fn include(args: &[Value]) -> Result<Value, FuncError> {
    let name = string(arg(args, 0, "include", 2)?);
    let helpers = CHART.with(|c| c.borrow().0.clone());
    let body = format!("{{{{- template {name:?} . -}}}}");
    execute(&helpers, &body, args[1].clone())
        .map(Value::String)
        .map_err(FuncError::Generic)
}

fn files_get(args: &[Value]) -> Result<Value, FuncError> {
    let path = string(arg(args, 0, "filesGet", 1)?);
    Ok(Value::String(CHART.with(|c| {
        c.borrow().1.get(&path).cloned().unwrap_or_default()
    })))
}

fn to_yaml(args: &[Value]) -> Result<Value, FuncError> {
    let json = to_json_value(arg(args, 0, "toYaml", 1)?);
    let text = serde_saphyr::to_string(&json).map_err(|e| FuncError::Generic(e.to_string()))?;
    Ok(Value::String(text.trim_end().to_string()))
}

fn to_json(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        to_json_value(arg(args, 0, "toJson", 1)?).to_string(),
    ))
}

fn indent_by(n: &Value, text: &Value) -> Result<String, FuncError> {
    let n = match n {
        Value::Number(n) => n.as_u64().unwrap_or(0) as usize,
        _ => return Err(FuncError::UnableToConvertFromValue),
    };
    let pad = " ".repeat(n);
    Ok(string(text)
        .split('\n')
        .map(|l| format!("{pad}{l}"))
        .collect::<Vec<_>>()
        .join("\n"))
}

fn nindent(args: &[Value]) -> Result<Value, FuncError> {
    arg(args, 0, "nindent", 2)?;
    Ok(Value::String(format!(
        "\n{}",
        indent_by(&args[0], &args[1])?
    )))
}

fn indent(args: &[Value]) -> Result<Value, FuncError> {
    arg(args, 0, "indent", 2)?;
    Ok(Value::String(indent_by(&args[0], &args[1])?))
}

fn quote(args: &[Value]) -> Result<Value, FuncError> {
    let v = arg(args, 0, "quote", 1)?;
    Ok(Value::String(
        serde_json::to_string(&string(v)).unwrap_or_default(),
    ))
}

/// Sprig's emptiness: nil, false, 0, "", and empty collections.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::NoValue | Value::Nil => true,
        Value::Bool(b) => !b,
        Value::String(s) => s.is_empty(),
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) | Value::Object(m) => m.is_empty(),
        Value::Function(_) => false,
    }
}

fn default(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [fallback] => Ok(fallback.clone()),
        [fallback, v] => Ok(if is_empty(v) {
            fallback.clone()
        } else {
            v.clone()
        }),
        _ => Err(FuncError::AtLeastXArgs("default".into(), 1)),
    }
}

fn required(args: &[Value]) -> Result<Value, FuncError> {
    let v = arg(args, 1, "required", 2)?;
    if is_empty(v) {
        return Err(FuncError::Generic(string(&args[0])));
    }
    Ok(v.clone())
}

fn fail(args: &[Value]) -> Result<Value, FuncError> {
    Err(FuncError::Generic(string(arg(args, 0, "fail", 1)?)))
}

fn trunc(args: &[Value]) -> Result<Value, FuncError> {
    let n = match arg(args, 0, "trunc", 2)? {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => return Err(FuncError::UnableToConvertFromValue),
    };
    let s = string(&args[1]);
    let n = n.max(0) as usize;
    Ok(Value::String(s.chars().take(n).collect()))
}

fn trim_suffix(args: &[Value]) -> Result<Value, FuncError> {
    let suffix = string(arg(args, 0, "trimSuffix", 2)?);
    let s = string(&args[1]);
    Ok(Value::String(
        s.strip_suffix(&suffix).unwrap_or(&s).to_string(),
    ))
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        string(arg(args, 0, "lower", 1)?).to_lowercase(),
    ))
}

fn replace(args: &[Value]) -> Result<Value, FuncError> {
    let old = string(arg(args, 0, "replace", 3)?);
    let new = string(&args[1]);
    Ok(Value::String(string(&args[2]).replace(&old, &new)))
}

fn has_key(args: &[Value]) -> Result<Value, FuncError> {
    let key = string(arg(args, 1, "hasKey", 2)?);
    Ok(Value::Bool(match &args[0] {
        Value::Map(m) | Value::Object(m) => m.contains_key(&key),
        _ => false,
    }))
}

fn empty(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::Bool(is_empty(arg(args, 0, "empty", 1)?)))
}

fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Value::Number(Number::from(i)),
            (None, Some(f)) => Value::Number(Number::from(f)),
            _ => Value::Nil,
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Json::Object(o) => Value::Map(o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()),
    }
}

fn to_json_value(v: &Value) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Json::from(i),
            (None, Some(f)) => Json::from(f),
            _ => Json::Null,
        },
        Value::Array(a) => Json::Array(a.iter().map(to_json_value).collect()),
        Value::Map(m) | Value::Object(m) => {
            // Sorted keys, as Helm's toYaml writes them.
            let sorted: BTreeMap<&String, Json> =
                m.iter().map(|(k, v)| (k, to_json_value(v))).collect();
            Json::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
    }
}
