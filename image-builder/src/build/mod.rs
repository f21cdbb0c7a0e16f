//! `image build`: a Containerfile carried out with this runtime's own parts.
//!
//! RUN steps are containers of this runtime: a root cloned from the step's parent snapshot (an
//! overlay on Linux, an APFS clone on macOS), the same jail layout, /dev, /proc and masked
//! paths, the same monitor (the `darwin-cri-monitor` binary), user resolution and confinement as
//! a pod's container, on the host's network. Their directories live under `<root>/builds`, outside the
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

mod cache;
mod config;
pub mod containerfile;
mod copy;
mod run;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use image_service::Compression;
use image_service::layer::LayerBlob;
use image_service::{Image, ImageStore, NewImage, NewLayer};
use serde_json::{Value, json};

use anyhow::{Context, Result, anyhow};
use containerfile::{Command, Containerfile, Instruction, Kind};
use runtime::step::StepOptions;

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

    /// `$VAR` and `${VAR}` in `s`, from the stage's ENV and ARGs.
    fn expand(&self, s: &str) -> String {
        containerfile::expand(s, &|n| self.var(n))
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
    let ignore = copy::DockerIgnore::load(&opts.context)?;
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

/// Carries out one instruction: each kind in the module named for it (config for the ones that
/// only change the image's config, run for RUN, copy for COPY and ADD).
#[allow(clippy::too_many_arguments)]
fn run_instruction(
    store: &ImageStore,
    opts: &BuildOptions,
    ignore: &copy::DockerIgnore,
    done: &[StageState],
    global: &BTreeMap<String, String>,
    state: &mut StageState,
    ins: &Instruction,
    out: Output<'_>,
) -> Result<()> {
    match &ins.kind {
        Kind::Run(c) => return run::run(store, opts, state, c, &ins.text, out),
        Kind::Copy {
            sources,
            dest,
            from,
            chown,
            add,
        } => {
            let copy = copy::Copy {
                sources,
                dest,
                from: from.as_deref(),
                chown: chown.as_deref(),
                add: *add,
            };
            return copy::copy(store, opts, ignore, done, state, &copy, &ins.text, out);
        }
        Kind::Arg(name, default) => config::arg(opts, global, state, name, default.as_deref()),
        Kind::Env(pairs) => config::env(state, pairs),
        Kind::Label(pairs) => config::label(state, pairs),
        Kind::Workdir(dir) => config::workdir(state, dir),
        Kind::User(u) => config::user(state, u),
        Kind::Entrypoint(c) => config::command(state, "Entrypoint", c),
        Kind::Cmd(c) => config::command(state, "Cmd", c),
        Kind::Expose(ports) => config::expose(state, ports),
        Kind::Volume(paths) => config::volume(state, paths),
        Kind::StopSignal(s) => config::stop_signal(state, s),
        Kind::Shell(v) => config::shell(state, v),
    }
    // What only changes the config is an empty layer in the history, as Docker records it.
    state.empty_step(&ins.text);
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
