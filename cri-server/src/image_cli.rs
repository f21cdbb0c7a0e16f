//! `darwin-cri image ...`: the image store from the command line, in process (the store is
//! shared safely with a running server: every write is atomic, collection is locked).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use image_builder::{BlobOutcome, PushEvent, PushOptions, Pusher};
use image_service::registry::{Credentials, Registry};
use image_service::{Image, Platform, PullEvent, PullOptions, Puller};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::Config;
use crate::serve;

/// `image pull REF`: prints the image id; a progress bar on a terminal.
pub fn pull(
    config: &Config,
    reference: &str,
    platform: Option<&str>,
    user: Option<&str>,
    quiet: bool,
) -> anyhow::Result<()> {
    let store = serve::open_images(config)?;
    let credentials = credentials(user)?;
    let platform = platform
        .map(|p| Platform::parse(p).with_context(|| format!("--platform {p:?}")))
        .transpose()?;
    let registry =
        Registry::new(config.image.registry()).context("setting up the registry client")?;
    let puller = Puller::new(store, registry, config.image.max_concurrent_downloads);

    let bar = progress_bar(quiet);
    bar.set_message("resolving");
    let layers: Arc<Mutex<HashMap<String, bool>>> = Arc::default();
    let (b, l) = (bar.clone(), Arc::clone(&layers));
    let progress = Arc::new(move |e: PullEvent| match e {
        PullEvent::Resolved { layers, .. } => {
            b.set_length(layers.iter().map(|l| l.1).sum());
            b.set_message(format!("{} layers", layers.len()));
            let mut m = l.lock().unwrap_or_else(|e| e.into_inner());
            for (d, _) in layers {
                m.insert(d, false);
            }
        }
        PullEvent::Progress { bytes, .. } => b.inc(bytes),
        PullEvent::BlobDone { digest, downloaded } => {
            let mut m = l.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(done) = m.get_mut(&digest) {
                *done = true;
            }
            let finished = m.values().filter(|d| **d).count();
            if !downloaded {
                b.set_message(format!("{finished}/{} layers (cached)", m.len()));
            } else {
                b.set_message(format!("{finished}/{} layers", m.len()));
            }
        }
        PullEvent::Unpacked { .. } => {}
    });
    let opts = PullOptions {
        credentials,
        platform,
        progress: Some(progress),
    };
    let started = std::time::Instant::now();
    let image = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(puller.pull(reference, opts))
        .with_context(|| format!("pulling {reference}"))?;
    bar.finish_and_clear();
    if !quiet {
        eprintln!(
            "pulled {reference} ({}, {}) in {:.1}s",
            image.platform,
            human(image.size),
            started.elapsed().as_secs_f64()
        );
    }
    println!("{}", image.id);
    Ok(())
}

/// `--user USER[:PASSWORD]`; default: docker config.json, else anonymous.
fn credentials(user: Option<&str>) -> anyhow::Result<Credentials> {
    let Some(u) = user else {
        return Ok(Credentials::default());
    };
    let (name, pass) = match u.split_once(':') {
        Some((n, p)) => (n.to_string(), p.to_string()),
        None => (
            u.to_string(),
            std::env::var("DARWIN_CRI_REGISTRY_PASSWORD").context(
                "--user without :PASSWORD reads the password from DARWIN_CRI_REGISTRY_PASSWORD",
            )?,
        ),
    };
    Ok(Credentials {
        username: name,
        password: pass,
        ..Default::default()
    })
}

fn progress_bar(quiet: bool) -> ProgressBar {
    let bar = if quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

/// What `image push` is asked.
#[derive(Debug)]
pub struct PushArgs<'a> {
    pub source: &'a str,
    pub dest: Option<&'a str>,
    pub user: Option<&'a str>,
    pub compression: Option<image_service::Compression>,
    pub chunk_size: usize,
    pub manifest_only: bool,
    pub quiet: bool,
}

/// `image push NAME [DEST]`: prints the manifest digest; a progress bar on a terminal.
pub fn push(config: &Config, args: PushArgs<'_>) -> anyhow::Result<()> {
    let PushArgs {
        source,
        dest,
        user,
        compression,
        chunk_size,
        manifest_only,
        quiet,
    } = args;
    let store = serve::open_images(config)?;
    let registry =
        Registry::new(config.image.registry()).context("setting up the registry client")?;
    let pusher = Pusher::new(store, registry);
    let bar = progress_bar(quiet);
    bar.set_message("preparing");
    let b = bar.clone();
    let progress = Arc::new(move |e: PushEvent| match e {
        PushEvent::Started { blobs } => {
            b.set_length(blobs.iter().map(|(_, s)| s).sum());
            b.set_message(format!("{} blobs", blobs.len()));
        }
        PushEvent::Progress { bytes } => b.inc(bytes),
        PushEvent::BlobDone { digest, outcome } => {
            if outcome != BlobOutcome::Sent {
                b.set_message(format!("{} {:?}", &digest[..19.min(digest.len())], outcome));
            }
        }
    });
    let opts = PushOptions {
        credentials: credentials(user)?,
        compression,
        chunk_size,
        manifest_only,
        progress: Some(progress),
    };
    let started = std::time::Instant::now();
    let pushed = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(pusher.push(source, dest, opts))
        .with_context(|| format!("pushing {source}"))?;
    bar.finish_and_clear();
    if !quiet {
        let count = |o: BlobOutcome| pushed.blobs.iter().filter(|(_, x)| *x == o).count();
        eprintln!(
            "pushed {} in {:.1}s: {} blobs sent ({}), {} already there, {} mounted",
            pushed.name,
            started.elapsed().as_secs_f64(),
            count(BlobOutcome::Sent),
            human(pushed.sent_bytes),
            count(BlobOutcome::Existed),
            count(BlobOutcome::Mounted),
        );
        if let Some(index) = &pushed.index_digest {
            eprintln!("the tag names index {index}");
        }
    }
    println!("{}", pushed.manifest_digest);
    Ok(())
}

fn human(bytes: u64) -> String {
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn short_id(image: &Image) -> &str {
    let hex = image.id.strip_prefix("sha256:").unwrap_or(&image.id);
    &hex[..hex.len().min(13)]
}

/// `image ls`: one line per name (untagged images once, as `<none>`).
pub fn list(config: &Config) -> anyhow::Result<()> {
    let store = serve::open_images(config)?;
    let images = store.list().context("listing images")?;
    println!("{:<60} {:<13} {:>10}  PLATFORM", "IMAGE", "ID", "SIZE");
    for i in &images {
        let names: Vec<&str> = if i.repo_tags.is_empty() {
            i.repo_digests.iter().map(|d| d.as_str()).take(1).collect()
        } else {
            i.repo_tags.iter().map(|t| t.as_str()).collect()
        };
        let names = if names.is_empty() {
            vec!["<none>"]
        } else {
            names
        };
        for n in names {
            println!(
                "{:<60} {:<13} {:>10}  {}",
                n,
                short_id(i),
                human(i.size),
                i.platform
            );
        }
    }
    Ok(())
}

/// `image rm REF...`: untags, or removes the image with its last tag.
pub fn remove(config: &Config, references: &[String]) -> anyhow::Result<()> {
    let store = serve::open_images(config)?;
    let mut missing = Vec::new();
    for r in references {
        if store.remove(r).with_context(|| format!("removing {r}"))? {
            println!("removed {r}");
        } else {
            missing.push(r.as_str());
        }
    }
    if !missing.is_empty() {
        bail!("no such image: {}", missing.join(", "));
    }
    Ok(())
}

/// `image import DIR`.
pub fn import(config: &Config, dir: &Path, name: Option<&str>) -> anyhow::Result<()> {
    let images = serve::open_images(config)?;
    let image = images
        .import_oci_layout(dir, name)
        .with_context(|| format!("importing {}", dir.display()))?;
    println!("{}", image.id);
    for tag in &image.repo_tags {
        println!("{tag}");
    }
    Ok(())
}
