//! `image build`: a Containerfile carried out with this runtime's own parts.
//!
//! RUN steps are containers of this runtime: a root cloned from the step's parent snapshot (an
//! overlay on Linux, an APFS clone on macOS), the same jail layout, /dev, /proc and masked
//! paths, the same monitor (`darwin-cri monitor`), user resolution and confinement as a pod's
//! container, on the host's network. Their directories live under `<root>/builds`, outside the
//! pods: the CRI never lists them, and a server starting meanwhile neither adopts nor removes
//! them. COPY and ADD write the context's files straight into the layer (no copy into a root
//! first, so a context on another file system than darwin-cri's root is no different).
//!
//! Each step that changes files is one layer, kept as a blob and unpacked as a snapshot so the
//! next step starts from it. A step's result is cached under a key of its parent ChainID, the
//! instruction as expanded, the settings a RUN sees (env, user, working directory, shell) and
//! the content of the files a COPY reads; `--no-cache` ignores the cache. A failing step stops
//! the build, naming the step and its exit code; nothing is recorded in the image store then.
//! The store is held for the whole build, so garbage collection cannot take a layer in the
//! making.

pub mod containerfile;

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use image_service::layer::{Change, LayerBlob, LayerCompression, TarOptions};
use image_service::safe_path::resolve_in_root;
use image_service::{Image, ImageStore, NewImage, NewLayer};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::error::IoContext;
use crate::model::{ContainerSpec, Pod, PodMetadata, PodSpec, PodState, ProcessSpec};
use crate::monitor::{self, Handshake};
use crate::user::{self, UserRequest};
use crate::{Error, Result};
use containerfile::{Command, Containerfile, Instruction, Kind};

/// How a build is asked for, and where it runs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub containerfile: PathBuf,
    pub context: PathBuf,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub compression: LayerCompression,
    /// `<root>/builds`: step directories and the cache.
    pub work_dir: PathBuf,
    /// The `darwin-cri` executable, run as each RUN step's monitor.
    pub monitor_exe: PathBuf,
    /// Where monitors' control sockets go (short: socket paths are limited).
    pub state_dir: PathBuf,
    /// Copy step roots instead of layering them (the Linux stand-in for macOS's clones).
    pub copy_rootfs: bool,
    pub max_log_line: usize,
    /// The host's mDNSResponder socket relayed into RUN roots (macOS), as for pods.
    pub mdns_socket: Option<PathBuf>,
    pub mach_services: Vec<String>,
}

/// Where FROM images come from when the store lacks them.
pub type Pull<'a> = &'a dyn Fn(&str) -> image_service::Result<Image>;

/// The state of a stage being built.
#[derive(Debug, Clone)]
struct StageState {
    name: Option<String>,
    base: Option<Image>,
    /// The whole image config document (its `config` object is what steps change).
    config: Value,
    /// The top ChainID (`None`: no layers yet).
    chain: Option<String>,
    layers: Vec<NewLayer>,
    /// ARGs declared in this stage, with their values.
    args: BTreeMap<String, String>,
}

impl StageState {
    fn runtime(&mut self) -> &mut serde_json::Map<String, Value> {
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        self.config["config"]
            .as_object_mut()
            .expect("made an object above")
    }

    fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn get(&self, key: &str) -> String {
        self.config["config"][key]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A variable for expansion: the stage's ENV, then its ARGs.
    fn var(&self, name: &str) -> Option<String> {
        self.env()
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
            .or_else(|| self.args.get(name).cloned())
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        env.retain(|e| !e.starts_with(&format!("{key}=")));
        env.push(format!("{key}={value}"));
        self.runtime().insert("Env".into(), json!(env));
    }

    fn empty_step(&mut self, text: &str) {
        self.layers.push(NewLayer {
            blob: None,
            created_by: text.to_string(),
        });
    }
}

fn command_json(c: &Command, shell: &[String]) -> Value {
    match c {
        Command::Exec(v) => json!(v),
        Command::Shell(s) => {
            let mut v = shell.to_vec();
            v.push(s.clone());
            json!(v)
        }
    }
}

/// The build's output stream: step headers and each RUN step's output.
pub type Output<'a> = &'a mut dyn Write;

/// Carries out the Containerfile and records the target stage's image under the tags.
pub fn build(
    store: &ImageStore,
    opts: &BuildOptions,
    pull: Pull<'_>,
    out: Output<'_>,
) -> Result<Image> {
    let text = std::fs::read_to_string(&opts.containerfile).at("reading", &opts.containerfile)?;
    let file = containerfile::parse(&text)?;
    let target = match &opts.target {
        None => file.stages.len() - 1,
        Some(t) => file
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| Error::InvalidArgument(format!("no stage named {t:?} (--target)")))?,
    };
    let ignore = DockerIgnore::load(&opts.context)?;
    let _hold = store.hold()?;
    std::fs::create_dir_all(opts.work_dir.join("cache")).at("creating", &opts.work_dir)?;
    let steps: usize = file.stages[..=target]
        .iter()
        .map(|s| s.instructions.len() + 1)
        .sum();
    let mut step = 0;
    let mut done: Vec<StageState> = Vec::new();
    let global = global_args(&file, &opts.build_args);
    for stage in &file.stages[..=target] {
        step += 1;
        let from = containerfile::expand(&stage.from, &|n| global.get(n).cloned());
        let _ = writeln!(
            out,
            "STEP {step}/{steps}: FROM {from}{}",
            stage
                .name
                .as_ref()
                .map(|n| format!(" AS {n}"))
                .unwrap_or_default()
        );
        let mut state = match done
            .iter()
            .find(|s| s.name.as_deref() == Some(from.to_ascii_lowercase().as_str()))
        {
            Some(prev) => StageState {
                name: stage.name.clone(),
                args: BTreeMap::new(),
                ..prev.clone()
            },
            None if from == "scratch" => StageState {
                name: stage.name.clone(),
                base: None,
                config: json!({"config": {}}),
                chain: None,
                layers: Vec::new(),
                args: BTreeMap::new(),
            },
            None => {
                let image = match store.resolve(&from)? {
                    Some(i) => i,
                    None => pull(&from).map_err(Error::Image)?,
                };
                let docs = store.documents(&image)?;
                let chain = store.top_chain(&image)?;
                StageState {
                    name: stage.name.clone(),
                    base: Some(image),
                    config: docs.config,
                    chain,
                    layers: Vec::new(),
                    args: BTreeMap::new(),
                }
            }
        };
        for ins in &stage.instructions {
            step += 1;
            let _ = writeln!(out, "STEP {step}/{steps}: {}", ins.text);
            run_instruction(store, opts, &ignore, &done, &global, &mut state, ins, out).map_err(
                |e| match e {
                    Error::FailedPrecondition(m) | Error::InvalidArgument(m) => {
                        Error::InvalidArgument(format!(
                            "step {step}/{steps} (line {}): {m}",
                            ins.line
                        ))
                    }
                    other => Error::Internal(format!(
                        "step {step}/{steps} (line {}, {}): {other}",
                        ins.line, ins.text
                    )),
                },
            )?;
        }
        done.push(state);
    }
    let state = done.swap_remove(target);
    let (os, arch) = (
        if platform::OS == platform::Os::MacOs {
            "darwin"
        } else {
            "linux"
        },
        match std::env::consts::ARCH {
            "aarch64" => "arm64",
            "x86_64" => "amd64",
            other => other,
        },
    );
    let image = store.create_image(NewImage {
        base: state.base.clone(),
        platform: (os.to_string(), arch.to_string(), String::new()),
        layers: state.layers.clone(),
        runtime_config: Some(state.config["config"].clone()),
        created: None,
        names: opts.tags.clone(),
    })?;
    Ok(image)
}

fn global_args(file: &Containerfile, given: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, default) in &file.global_args {
        if let Some(v) = given.get(k).cloned().or_else(|| default.clone()) {
            out.insert(k.clone(), v);
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn run_instruction(
    store: &ImageStore,
    opts: &BuildOptions,
    ignore: &DockerIgnore,
    done: &[StageState],
    global: &BTreeMap<String, String>,
    state: &mut StageState,
    ins: &Instruction,
    out: Output<'_>,
) -> Result<()> {
    let expand = |s: &str, st: &StageState| containerfile::expand(s, &|n| st.var(n));
    match &ins.kind {
        Kind::Arg(name, default) => {
            let value = opts
                .build_args
                .get(name)
                .cloned()
                .or_else(|| default.as_ref().map(|d| expand(d, state)))
                .or_else(|| global.get(name).cloned());
            if let Some(v) = value {
                state.args.insert(name.clone(), v);
            }
            state.empty_step(&ins.text);
        }
        Kind::Env(pairs) => {
            for (k, v) in pairs {
                let v = expand(v, state);
                state.set_env(k, &v);
            }
            state.empty_step(&ins.text);
        }
        Kind::Label(pairs) => {
            let labels: Vec<(String, String)> = pairs
                .iter()
                .map(|(k, v)| (expand(k, state), expand(v, state)))
                .collect();
            let rt = state.runtime();
            let entry = rt.entry("Labels").or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            for (k, v) in labels {
                entry[k] = json!(v);
            }
            state.empty_step(&ins.text);
        }
        Kind::Workdir(dir) => {
            let dir = expand(dir, state);
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
            state.empty_step(&ins.text);
        }
        Kind::User(u) => {
            let u = expand(u, state);
            state.runtime().insert("User".into(), json!(u));
            state.empty_step(&ins.text);
        }
        Kind::Entrypoint(c) | Kind::Cmd(c) => {
            let shell = shell_of(state);
            let key = if matches!(ins.kind, Kind::Cmd(_)) {
                "Cmd"
            } else {
                "Entrypoint"
            };
            let v = command_json(c, &shell);
            state.runtime().insert(key.into(), v);
            state.empty_step(&ins.text);
        }
        Kind::Expose(ports) => {
            let ports: Vec<String> = ports.iter().map(|p| expand(p, state)).collect();
            let rt = state.runtime();
            let entry = rt.entry("ExposedPorts").or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            for p in ports {
                let p = if p.contains('/') {
                    p
                } else {
                    format!("{p}/tcp")
                };
                entry[p] = json!({});
            }
            state.empty_step(&ins.text);
        }
        Kind::Volume(paths) => {
            let paths: Vec<String> = paths.iter().map(|p| expand(p, state)).collect();
            let rt = state.runtime();
            let entry = rt.entry("Volumes").or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            for p in paths {
                entry[p] = json!({});
            }
            state.empty_step(&ins.text);
        }
        Kind::StopSignal(s) => {
            let s = expand(s, state);
            state.runtime().insert("StopSignal".into(), json!(s));
            state.empty_step(&ins.text);
        }
        Kind::Shell(v) => {
            state.runtime().insert("Shell".into(), json!(v));
            state.empty_step(&ins.text);
        }
        Kind::Run(c) => {
            let argv: Vec<String> = match c {
                Command::Exec(v) => v.clone(),
                Command::Shell(s) => {
                    let mut v = shell_of(state);
                    v.push(s.clone());
                    v
                }
            };
            let mut env = state.env();
            // ARGs are in the environment of RUN steps (not of the image).
            for (k, v) in &state.args {
                if !env.iter().any(|e| e.starts_with(&format!("{k}="))) {
                    env.push(format!("{k}={v}"));
                }
            }
            if !env.iter().any(|e| e.starts_with("PATH=")) {
                env.push(crate::runtime::DEFAULT_PATH.to_string());
            }
            let key = cache_key(&[
                state.chain.as_deref().unwrap_or("scratch"),
                &ins.text,
                &serde_json::to_string(&(&argv, &env, state.get("User"), state.get("WorkingDir")))
                    .unwrap_or_default(),
            ]);
            let blob = match cached(opts, &key, store) {
                Some(b) => {
                    let _ = writeln!(out, "--> cached");
                    b
                }
                None => {
                    let Some(chain) = state.chain.clone() else {
                        return Err(Error::InvalidArgument(
                            "RUN needs a file system: the stage has no layers yet".into(),
                        ));
                    };
                    let lower = store.snapshot_path(&chain)?;
                    let blob = run_step(store, opts, &lower, state, argv, env, out)?;
                    remember(opts, &key, &blob);
                    blob
                }
            };
            add_layer(store, state, blob, &ins.text)?;
        }
        Kind::Copy {
            sources,
            dest,
            from,
            chown,
            add,
        } => {
            let source_root = match from {
                None => opts.context.clone(),
                Some(f) => {
                    let f = expand(f, state).to_ascii_lowercase();
                    let stage = done.iter().find(|s| s.name.as_deref() == Some(f.as_str()));
                    let chain = match stage {
                        Some(s) => s.chain.clone(),
                        None => {
                            let image = store.resolve(&f)?.ok_or_else(|| {
                                Error::InvalidArgument(format!(
                                    "--from={f}: no such stage or stored image"
                                ))
                            })?;
                            store.top_chain(&image)?
                        }
                    };
                    match chain {
                        Some(c) => store.snapshot_path(&c)?,
                        None => {
                            return Err(Error::InvalidArgument(format!("--from={f} has no files")));
                        }
                    }
                }
            };
            let in_context = from.is_none();
            let lower = state
                .chain
                .as_deref()
                .map(|c| store.snapshot_path(c))
                .transpose()?;
            let owner = match chown {
                None => None,
                Some(c) => Some(resolve_chown(&expand(c, state), lower.as_deref())?),
            };
            let sources: Vec<String> = sources.iter().map(|s| expand(s, state)).collect();
            let dest = expand(dest, state);
            let plan = copy_plan(
                &source_root,
                in_context,
                ignore,
                &sources,
                &dest,
                &state.get("WorkingDir"),
                lower.as_deref(),
                *add,
            )?;
            let mut key_parts = vec![
                state.chain.clone().unwrap_or_else(|| "scratch".into()),
                ins.text.clone(),
                format!("{owner:?}"),
            ];
            key_parts.push(plan.fingerprint()?);
            let refs: Vec<&str> = key_parts.iter().map(String::as_str).collect();
            let key = cache_key(&refs);
            let blob = match cached(opts, &key, store) {
                Some(b) => {
                    let _ = writeln!(out, "--> cached");
                    b
                }
                None => {
                    let mut w = store.layer_writer(
                        opts.compression,
                        TarOptions {
                            fixed_mtime: None,
                            owner,
                        },
                    )?;
                    plan.write(&mut w)?;
                    let blob = store.store_layer(w)?;
                    remember(opts, &key, &blob);
                    blob
                }
            };
            add_layer(store, state, blob, &ins.text)?;
        }
    }
    Ok(())
}

fn shell_of(state: &StageState) -> Vec<String> {
    state.config["config"]["Shell"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
}

fn add_layer(
    store: &ImageStore,
    state: &mut StageState,
    blob: LayerBlob,
    text: &str,
) -> Result<()> {
    let chain = store.add_layer_snapshot(state.chain.as_deref(), &blob)?;
    state.chain = Some(chain);
    state.layers.push(NewLayer {
        blob: Some(blob),
        created_by: text.to_string(),
    });
    Ok(())
}

fn cache_key(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn cached(opts: &BuildOptions, key: &str, store: &ImageStore) -> Option<LayerBlob> {
    if opts.no_cache {
        return None;
    }
    let text = std::fs::read_to_string(opts.work_dir.join("cache").join(key)).ok()?;
    let mut parts = text.split_whitespace();
    let (digest, diff_id, size, compression) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    store.blob_path(digest).ok()?;
    Some(LayerBlob {
        digest: digest.to_string(),
        diff_id: diff_id.to_string(),
        size: size.parse().ok()?,
        compression: LayerCompression::parse(compression)?,
    })
}

fn remember(opts: &BuildOptions, key: &str, blob: &LayerBlob) {
    let compression = match blob.compression {
        LayerCompression::Gzip => "gzip",
        LayerCompression::Zstd => "zstd",
    };
    let path = opts.work_dir.join("cache").join(key);
    let _ = crate::fsutil::write_atomic(
        &path,
        format!(
            "{} {} {} {compression}\n",
            blob.digest, blob.diff_id, blob.size
        )
        .as_bytes(),
    );
}

/// `--chown=user[:group]`: names from the image's /etc/passwd and /etc/group, or numbers.
fn resolve_chown(spec: &str, root: Option<&Path>) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = root
        .map(|r| {
            user::parse_passwd(&std::fs::read_to_string(r.join("etc/passwd")).unwrap_or_default())
        })
        .unwrap_or_default();
    let groups = root
        .map(|r| {
            user::parse_group(&std::fs::read_to_string(r.join("etc/group")).unwrap_or_default())
        })
        .unwrap_or_default();
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => passwd
            .iter()
            .find(|e| e.name == u)
            .map(|e| e.uid)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "--chown: user {u:?} is not in the image's /etc/passwd"
                ))
            })?,
    };
    let gid = match g {
        None => passwd
            .iter()
            .find(|e| e.uid == uid)
            .map(|e| e.gid)
            .unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "--chown: group {g:?} is not in the image's /etc/group"
                    ))
                })?,
        },
    };
    Ok((uid, gid))
}

/// `.dockerignore` patterns of the context (later lines win; `!` re-includes).
#[derive(Debug, Default)]
struct DockerIgnore {
    rules: Vec<(globset::GlobMatcher, bool)>,
}

impl DockerIgnore {
    fn load(context: &Path) -> Result<DockerIgnore> {
        let path = context.join(".dockerignore");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(DockerIgnore::default());
        };
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (negate, pat) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let pat = image_service::safe_path::clean_relative(Path::new(pat));
            let glob = globset::GlobBuilder::new(&pat.display().to_string())
                .literal_separator(true)
                .build()
                .map_err(|e| Error::InvalidArgument(format!(".dockerignore: {l:?}: {e}")))?;
            rules.push((glob.compile_matcher(), negate));
        }
        Ok(DockerIgnore { rules })
    }

    /// Whether `rel` (relative to the context) is left out: it or a parent directory matches.
    fn ignored(&self, rel: &Path) -> bool {
        let mut verdict = false;
        for (m, negate) in &self.rules {
            if rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| m.is_match(a))
            {
                verdict = !negate;
            }
        }
        verdict
    }
}

/// What a COPY or ADD writes: (source path, destination relative to the root), and archives
/// to unpack below a destination directory.
#[derive(Debug, Default)]
struct CopyPlan {
    entries: Vec<(PathBuf, PathBuf)>,
    archives: Vec<(PathBuf, PathBuf)>,
}

#[allow(clippy::too_many_arguments)]
fn copy_plan(
    root: &Path,
    in_context: bool,
    ignore: &DockerIgnore,
    sources: &[String],
    dest: &str,
    workdir: &str,
    lower: Option<&Path>,
    add: bool,
) -> Result<CopyPlan> {
    let dest_abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!(
            "{}/{dest}",
            if workdir.is_empty() {
                ""
            } else {
                workdir.trim_end_matches('/')
            }
        )
    };
    let dest_rel = image_service::safe_path::clean_relative(Path::new(&dest_abs));
    let dest_is_existing_dir = lower
        .and_then(|l| resolve_in_root(l, &dest_rel).ok())
        .is_some_and(|p| p.is_dir());
    let mut matched: Vec<PathBuf> = Vec::new();
    for s in sources {
        let rel = image_service::safe_path::clean_relative(Path::new(s));
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(['*', '?', '[']) {
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let glob = globset::Glob::new(&name)
                .map_err(|e| Error::InvalidArgument(format!("{s:?}: {e}")))?
                .compile_matcher();
            let dir = resolve_in_root(root, &parent).at("resolving", &parent)?;
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .at("reading", &dir)?
                .flatten()
                .filter(|e| glob.is_match(e.file_name()))
                .map(|e| parent.join(e.file_name()))
                .filter(|p| !(in_context && ignore.ignored(p)))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "no source file matches {s:?}"
                )));
            }
            matched.extend(found);
        } else {
            matched.push(rel);
        }
    }
    let many = matched.len() > 1;
    let into_dir = many || dest.ends_with('/') || dest_is_existing_dir;
    let mut plan = CopyPlan::default();
    for rel in matched {
        // The source is resolved inside its root: a symlink in the context cannot lead out.
        let src = resolve_in_root(root, &rel).at("resolving the source", &rel)?;
        let meta = std::fs::metadata(&src)
            .map_err(|e| Error::InvalidArgument(format!("source {}: {e}", rel.display())))?;
        if meta.is_dir() {
            // A directory's content goes into the destination.
            walk_into(&src, &rel, &dest_rel, in_context, ignore, &mut plan.entries)?;
            continue;
        }
        let target = if into_dir {
            dest_rel.join(rel.file_name().unwrap_or_default())
        } else {
            dest_rel.clone()
        };
        if add && is_archive(&src) {
            plan.archives.push((src, dest_rel.clone()));
        } else {
            plan.entries.push((src, target));
        }
    }
    Ok(plan)
}

fn walk_into(
    dir: &Path,
    rel: &Path,
    dest: &Path,
    in_context: bool,
    ignore: &DockerIgnore,
    out: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    if !dest.as_os_str().is_empty() {
        out.push((dir.to_path_buf(), dest.to_path_buf()));
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .at("reading", dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let child_rel = rel.join(&n);
        if in_context && ignore.ignored(&child_rel) {
            continue;
        }
        let path = dir.join(&n);
        let meta = std::fs::symlink_metadata(&path).at("stat", &path)?;
        if meta.is_dir() {
            walk_into(&path, &child_rel, &dest.join(&n), in_context, ignore, out)?;
        } else {
            out.push((path, dest.join(&n)));
        }
    }
    Ok(())
}

/// A local tar archive (plain, gzip or zstd), which ADD unpacks.
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    head[..n.min(2)] == [0x1f, 0x8b]
        || head[..n.min(4)] == [0x28, 0xb5, 0x2f, 0xfd]
        || (n >= 262 && &head[257..262] == b"ustar")
}

impl CopyPlan {
    /// What the cache key needs of the sources: names, modes, owners, sizes and contents.
    fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        for (src, dest) in self.entries.iter().chain(self.archives.iter()) {
            h.update(dest.as_os_str().as_encoded_bytes());
            h.update([0]);
            let meta = std::fs::symlink_metadata(src).at("stat", src)?;
            h.update(meta.mode().to_le_bytes());
            h.update(meta.uid().to_le_bytes());
            h.update(meta.gid().to_le_bytes());
            if meta.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(src)
                        .at("readlink", src)?
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if meta.is_file() {
                let mut f = std::fs::File::open(src).at("opening", src)?;
                std::io::copy(&mut f, &mut h).at("reading", src)?;
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn write(&self, w: &mut image_service::layer::LayerWriter) -> Result<()> {
        for (src, dest) in &self.entries {
            w.add(src, dest)?;
        }
        for (archive, dest) in &self.archives {
            let f = std::fs::File::open(archive).at("opening", archive)?;
            let mut reader = std::io::BufReader::new(f);
            let head = reader.fill_buf().at("reading", archive)?.to_vec();
            let stream: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::GzDecoder::new(reader))
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Box::new(zstd::Decoder::with_buffer(reader).at("reading", archive)?)
            } else {
                Box::new(reader)
            };
            let mut tar = tar::Archive::new(stream);
            for entry in tar.entries().at("reading", archive)? {
                let mut entry = entry.at("reading", archive)?;
                w.append_tar_entry(&mut entry, dest)?;
            }
        }
        Ok(())
    }
}

/// Runs one RUN step as a container of this runtime; its changes as a layer.
fn run_step(
    store: &ImageStore,
    opts: &BuildOptions,
    lower: &Path,
    state: &StageState,
    args: Vec<String>,
    env: Vec<String>,
    out: Output<'_>,
) -> Result<LayerBlob> {
    let id = {
        let mut b = [0u8; 16];
        let _ = getrandom::fill(&mut b);
        hex::encode(b)
    };
    let dir = opts.work_dir.join(&id);
    std::fs::create_dir_all(&dir).at("creating", &dir)?;
    let result = run_step_in(store, opts, lower, state, args, env, out, &dir, &id);
    // Whatever happened, nothing stays mounted or on disk.
    for m in platform::mounts_under(&dir)
        .unwrap_or_default()
        .into_iter()
        .rev()
    {
        let _ = platform::unmount(&m);
    }
    let _ = crate::fsutil::remove_tree(&dir);
    result
}

#[allow(clippy::too_many_arguments)]
fn run_step_in(
    store: &ImageStore,
    opts: &BuildOptions,
    lower: &Path,
    state: &StageState,
    args: Vec<String>,
    env: Vec<String>,
    out: Output<'_>,
    dir: &Path,
    id: &str,
) -> Result<LayerBlob> {
    let (rootfs, layered) = crate::rootfs::clone_rootfs(lower, &[], dir, opts.copy_rootfs, false)
        .at("making the step's root from", lower)?;
    let user = user::resolve(
        lower,
        &UserRequest {
            image_user: &state.get("User"),
            ..Default::default()
        },
    )?;
    crate::runtime::prepare_root(&rootfs, &user)?;
    let inside = |p: &str| {
        resolve_in_root(&rootfs, Path::new(p)).at("resolving in the step's root", Path::new(p))
    };
    for file in ["hosts", "resolv.conf"] {
        let target = inside(&format!("/etc/{file}"))?;
        let _ = std::fs::remove_file(&target);
        std::fs::copy(Path::new("/etc").join(file), &target).at("writing", &target)?;
    }
    let mut mounted = Vec::new();
    let proc_dir = inside("/proc")?;
    std::fs::create_dir_all(&proc_dir).at("creating", &proc_dir)?;
    match platform::mount_proc(&proc_dir) {
        Ok(()) => mounted.push(proc_dir),
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
        Err(e) => return Err(Error::io("mounting /proc in the step's root", e)),
    }
    let existing = |list: &[&str]| -> Vec<PathBuf> {
        list.iter()
            .filter_map(|p| inside(p).ok())
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect()
    };
    let masked = existing(crate::mounts::DEFAULT_MASKED_PATHS);
    let read_only = existing(crate::mounts::DEFAULT_READONLY_PATHS);
    if platform::HAS_BIND_MOUNTS {
        mounted.extend(crate::mounts::mask(dir, &masked, &read_only)?);
    }
    // Confined as a pod's container of the default handler.
    let pod = Pod {
        id: format!("build-{id}"),
        spec: PodSpec {
            metadata: PodMetadata {
                name: "build".into(),
                namespace: "build".into(),
                uid: id.into(),
                attempt: 0,
            },
            hostname: String::new(),
            log_directory: String::new(),
            dns: None,
            labels: Default::default(),
            annotations: Default::default(),
            runtime_handler: String::new(),
            network: Default::default(),
            run_as_user: None,
            run_as_group: None,
            port_mappings: Vec::new(),
        },
        state: PodState::Ready,
        created_at: 0,
        dir: dir.to_path_buf(),
    };
    let confinement = crate::confinement::policy(
        &ContainerSpec::default(),
        &pod,
        &rootfs,
        &[],
        masked,
        read_only,
        &opts.mach_services,
    )?;
    let workdir = state.get("WorkingDir");
    let cwd = if workdir.is_empty() {
        "/".to_string()
    } else {
        workdir
    };
    std::fs::create_dir_all(inside(&cwd)?).at("creating the working dir", Path::new(&cwd))?;
    let mut env = env;
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let log = dir.join("output.log");
    let process = ProcessSpec {
        args,
        env,
        cwd,
        uid: user.uid,
        gid: user.gid,
        groups: user.groups.clone(),
        rootfs: rootfs.clone(),
        log_path: Some(log.clone()),
        max_log_line: opts.max_log_line,
        tty: false,
        stdin: false,
        stdin_once: false,
        stop_signal: String::new(),
        limits: Default::default(),
        limit_interval_ms: 250,
        control_socket: opts
            .state_dir
            .join("m")
            .join(format!("b{}.sock", &id[..24])),
        confinement,
    };
    let bytes = serde_json::to_vec_pretty(&process).map_err(|e| Error::Internal(e.to_string()))?;
    crate::fsutil::write_atomic(&dir.join(monitor::PROCESS_FILE), &bytes).at("writing", dir)?;
    std::fs::create_dir_all(opts.state_dir.join("m")).at("creating", &opts.state_dir)?;

    let exit = {
        let _relay = dns_relay(opts, &rootfs);
        let monitor_log = std::fs::File::create(dir.join("monitor.log")).at("creating", dir)?;
        let mut cmd = std::process::Command::new(&opts.monitor_exe);
        cmd.arg("monitor")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(monitor_log));
        platform::inherit_only_stdio(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| {
            Error::io(
                format!("starting the monitor {}", opts.monitor_exe.display()),
                e,
            )
        })?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        }
        match serde_json::from_str::<Handshake>(line.trim()) {
            Ok(Handshake::Started(_)) => {}
            Ok(Handshake::Failed(m)) => {
                let _ = child.wait();
                return Err(Error::FailedPrecondition(format!(
                    "the step could not start: {m}"
                )));
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(dir.join("monitor.log")).unwrap_or_default();
                return Err(Error::FailedPrecondition(format!(
                    "the step's monitor did not start: {}",
                    log.trim()
                )));
            }
        }
        // The step's output as it comes (the monitor writes CRI log records).
        let mut offset = 0u64;
        loop {
            let finished = child.try_wait().ok().flatten().is_some();
            offset = stream_log(&log, offset, out);
            if finished {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        monitor::read_exit(dir)
    };
    for m in mounted.iter().rev() {
        let _ = platform::unmount(m);
    }
    let exit =
        exit.ok_or_else(|| Error::Internal("the step's monitor left no exit record".into()))?;
    if exit.exit_code != 0 {
        return Err(Error::FailedPrecondition(format!(
            "RUN {} failed with exit code {}",
            process.args.join(" "),
            exit.exit_code
        )));
    }
    // What the runtime put there is not the step's.
    let mut skip_paths: Vec<PathBuf> = Vec::new();
    for p in [
        "/etc/hosts",
        "/etc/resolv.conf",
        "/dev",
        "/proc",
        crate::dns_proxy::MDNS_SOCKET,
    ] {
        if let Ok(host) = inside(p)
            && let Ok(rel) = host.strip_prefix(&rootfs)
        {
            skip_paths.push(rel.to_path_buf());
        }
    }
    let skip_entries: Vec<PathBuf> = crate::jail::layout_paths(&user.home)
        .into_iter()
        .filter_map(|p| {
            let is_link = crate::jail::LINKS.iter().any(|(l, _)| Path::new(l) == p);
            let rel = if is_link {
                p.strip_prefix("/").ok()?.to_path_buf()
            } else {
                resolve_in_root(&rootfs, &p)
                    .ok()?
                    .strip_prefix(&rootfs)
                    .ok()?
                    .to_path_buf()
            };
            std::fs::symlink_metadata(lower.join(&rel))
                .is_err()
                .then_some(rel)
        })
        .chain(
            [PathBuf::from("tmp"), PathBuf::from("etc")]
                .into_iter()
                .filter(|r| std::fs::symlink_metadata(lower.join(r)).is_err()),
        )
        .collect();
    let skip = |p: &Path| {
        skip_paths.iter().any(|r| p.starts_with(r)) || skip_entries.iter().any(|r| p == r)
    };
    let upper = dir.join("upper");
    let (source, changes): (PathBuf, Vec<Change>) = if layered {
        (
            upper.clone(),
            image_service::diff::overlay_changes(&upper, &skip)?,
        )
    } else {
        (
            rootfs.clone(),
            image_service::diff::tree_changes(&rootfs, lower, &skip)?,
        )
    };
    let mut w = store.layer_writer(opts.compression, TarOptions::default())?;
    w.changes(&source, &changes)?;
    let blob = store.store_layer(w)?;
    let _ = writeln!(
        out,
        "--> {} changes, layer {} ({} bytes)",
        changes.len(),
        &blob.digest[..19],
        blob.size
    );
    Ok(blob)
}

/// The host's mDNSResponder relayed into the step's root (macOS), as for a pod's container.
fn dns_relay(
    opts: &BuildOptions,
    rootfs: &Path,
) -> Option<(tokio::runtime::Runtime, crate::dns_proxy::DnsProxy)> {
    let upstream = opts.mdns_socket.as_ref()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let started = (|| -> std::io::Result<crate::dns_proxy::DnsProxy> {
        let dir = resolve_in_root(rootfs, Path::new(crate::dns_proxy::ROOT_DIR))?;
        std::fs::create_dir_all(&dir)?;
        let fd = platform::open_dir_nofollow(&dir)?;
        let _guard = rt.enter();
        crate::dns_proxy::DnsProxy::start(
            upstream,
            fd,
            crate::dns_proxy::NAME,
            &opts.work_dir.join("sockets"),
        )
    })();
    match started {
        Ok(p) => Some((rt, p)),
        Err(e) => {
            tracing::warn!(error = %e, "no DNS relay in the step's root");
            None
        }
    }
}

/// Prints the messages of the CRI log records written since `offset`; the new offset.
fn stream_log(log: &Path, offset: u64, out: Output<'_>) -> u64 {
    let Ok(mut f) = std::fs::File::open(log) else {
        return offset;
    };
    if f.seek(SeekFrom::Start(offset)).is_err() {
        return offset;
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return offset;
    }
    // Only whole records: a line still being written waits for the next round.
    let Some(end) = buf.iter().rposition(|b| *b == b'\n') else {
        return offset;
    };
    for rec in buf[..end].split(|b| *b == b'\n') {
        let text = String::from_utf8_lossy(rec);
        let mut parts = text.splitn(4, ' ');
        let (_, _, tag, msg) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next().unwrap_or(""),
        );
        let _ = out.write_all(msg.as_bytes());
        if tag != Some("P") {
            let _ = out.write_all(b"\n");
        }
    }
    let _ = out.flush();
    offset + end as u64 + 1
}
