//! `image build`: a Containerfile carried out with this runtime's own parts.
//!
//! RUN steps are containers of this runtime: a root cloned from the step's parent snapshot (an
//! overlay on Linux, an APFS clone on macOS), the same jail layout, /dev, /proc and masked
//! paths, the same monitor (the `darwin-cri-monitor` binary), user resolution and confinement as a pod's
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
use std::io::{BufRead, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use image_service::Compression;
use image_service::layer::{LayerBlob, TarOptions};
use image_service::safe_path::resolve_in_root;
use image_service::{Image, ImageStore, NewImage, NewLayer};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use anyhow::{Context, Result, anyhow, bail};
use containerfile::{Command, Containerfile, Instruction, Kind};
use runtime::step::{StepOptions, StepRoot};
use runtime::user;

/// How a build is asked for, and where it runs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub containerfile: PathBuf,
    pub context: PathBuf,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    pub no_cache: bool,
    pub compression: Compression,
    /// `<root>/builds`: step directories and the cache.
    pub work_dir: PathBuf,
    /// How RUN steps run (runtime::step).
    pub step: StepOptions,
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
    let text = std::fs::read_to_string(&opts.containerfile)
        .with_context(|| format!("reading {}", opts.containerfile.display()))?;
    let file = containerfile::parse(&text)?;
    let target = match &opts.target {
        None => file.stages.len() - 1,
        Some(t) => file
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| anyhow!("no stage named {t:?} (--target)"))?,
    };
    let ignore = DockerIgnore::load(&opts.context)?;
    let _hold = store.hold()?;
    std::fs::create_dir_all(opts.work_dir.join("cache"))
        .with_context(|| format!("creating {}", opts.work_dir.display()))?;
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
                    None => pull(&from).with_context(|| format!("pulling {from}"))?,
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
            run_instruction(store, opts, &ignore, &done, &global, &mut state, ins, out)
                .with_context(|| {
                    format!("step {step}/{steps} (line {}): {}", ins.line, ins.text)
                })?;
        }
        done.push(state);
    }
    let state = done.swap_remove(target);
    let (os, arch) = (platform::oci_os(), platform::oci_arch());
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
                        bail!("RUN needs a file system: the stage has no layers yet");
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
                                anyhow!("--from={f}: no such stage or stored image")
                            })?;
                            store.top_chain(&image)?
                        }
                    };
                    match chain {
                        Some(c) => store.snapshot_path(&c)?,
                        None => {
                            return Err(anyhow!("--from={f} has no files"));
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
        compression: Compression::parse(compression)?,
    })
}

fn remember(opts: &BuildOptions, key: &str, blob: &LayerBlob) {
    let compression = blob.compression.name();
    // Written whole, then renamed: a reader never sees half an entry.
    let path = opts.work_dir.join("cache").join(key);
    let tmp = path.with_extension(format!("new{}", std::process::id()));
    let entry = format!(
        "{} {} {} {compression}\n",
        blob.digest, blob.diff_id, blob.size
    );
    if std::fs::write(&tmp, entry)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .is_err()
    {
        let _ = std::fs::remove_file(&tmp);
    }
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
            .ok_or_else(|| anyhow!("--chown: user {u:?} is not in the image's /etc/passwd"))?,
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
                .ok_or_else(|| anyhow!("--chown: group {g:?} is not in the image's /etc/group"))?,
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
                .map_err(|e| anyhow!(".dockerignore: {l:?}: {e}"))?;
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
                .map_err(|e| anyhow!("{s:?}: {e}"))?
                .compile_matcher();
            let dir = resolve_in_root(root, &parent)
                .with_context(|| format!("resolving {}", parent.display()))?;
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .flatten()
                .filter(|e| glob.is_match(e.file_name()))
                .map(|e| parent.join(e.file_name()))
                .filter(|p| !(in_context && ignore.ignored(p)))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(anyhow!("no source file matches {s:?}"));
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
        let src = resolve_in_root(root, &rel)
            .with_context(|| format!("resolving the source {}", rel.display()))?;
        let meta = std::fs::metadata(&src).map_err(|e| anyhow!("source {}: {e}", rel.display()))?;
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
        .with_context(|| format!("reading {}", dir.display()))?
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
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
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
    Compression::sniff(&head[..n]) != Compression::None || (n >= 262 && &head[257..262] == b"ustar")
}

impl CopyPlan {
    /// What the cache key needs of the sources: names, modes, owners, sizes and contents.
    fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        for (src, dest) in self.entries.iter().chain(self.archives.iter()) {
            h.update(dest.as_os_str().as_encoded_bytes());
            h.update([0]);
            let meta = std::fs::symlink_metadata(src)
                .with_context(|| format!("stat {}", src.display()))?;
            h.update(meta.mode().to_le_bytes());
            h.update(meta.uid().to_le_bytes());
            h.update(meta.gid().to_le_bytes());
            if meta.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(src)
                        .with_context(|| format!("readlink {}", src.display()))?
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if meta.is_file() {
                let mut f = std::fs::File::open(src)
                    .with_context(|| format!("opening {}", src.display()))?;
                std::io::copy(&mut f, &mut h)
                    .with_context(|| format!("reading {}", src.display()))?;
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn write(&self, w: &mut image_service::layer::LayerWriter) -> Result<()> {
        for (src, dest) in &self.entries {
            w.add(src, dest)?;
        }
        for (archive, dest) in &self.archives {
            let f = std::fs::File::open(archive)
                .with_context(|| format!("opening {}", archive.display()))?;
            let mut reader = std::io::BufReader::new(f);
            let head = reader
                .fill_buf()
                .with_context(|| format!("reading {}", archive.display()))?
                .to_vec();
            let stream = Compression::sniff(&head)
                .decoder(reader)
                .with_context(|| format!("reading {}", archive.display()))?;
            let mut tar = tar::Archive::new(stream);
            for entry in tar
                .entries()
                .with_context(|| format!("reading {}", archive.display()))?
            {
                let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
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
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| anyhow!("no randomness for a step id: {e}"))?;
    let dir = opts.work_dir.join(hex::encode(id));
    // Dropped at the end, whatever happened: nothing stays mounted or on disk.
    let mut root = StepRoot::prepare(&opts.step, lower, &dir, &state.get("User"))?;
    let shown = args.join(" ");
    let exit = root.run(&opts.step, args, env, &state.get("WorkingDir"), out)?;
    if exit.exit_code != 0 {
        bail!("RUN {shown} failed with exit code {}", exit.exit_code);
    }
    let (source, changes) = root.changes()?;
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
