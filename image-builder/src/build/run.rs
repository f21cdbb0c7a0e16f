//! RUN: the step's command run as a container of this runtime ([`runtime::step`]) on the
//! stage's snapshot; what it changed becomes the step's layer.

use std::path::Path;

use anyhow::{Result, anyhow, bail};
use image_service::ImageStore;
use image_service::layer::{LayerBlob, TarOptions};
use runtime::step::StepRoot;

use super::cache::{cache_key, cached, remember};
use super::containerfile::Command;
use super::{BuildOptions, Output, StageState, add_layer, shell_of};

/// `RUN`: from the cache when the same step ran on the same parent before.
pub(super) fn run(
    store: &ImageStore,
    opts: &BuildOptions,
    state: &mut StageState,
    c: &Command,
    text: &str,
    out: Output<'_>,
) -> Result<()> {
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
        text,
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
    add_layer(store, state, blob, text)
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
    let changed = root.changed();
    let (source, changes) = crate::diff::root_changes(&changed, || Ok(root.lower().to_path_buf()))?;
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
