//! Making images from the command line: `image commit` (a container's changes as a new layer),
//! `image base`, `image build`, `image tag`, `image save`. They work on the store in process,
//! beside a running server or without one, as `image pull` does; the making itself is
//! image-builder's.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use image_service::Compression;
use runtime::{ContainerOrigin, ORIGIN_FILE};

use crate::config::Config;
use crate::serve;

/// `--compression`: gzip (what every registry and runtime reads), zstd or none.
pub fn compression(name: &str) -> anyhow::Result<Compression> {
    Compression::parse(name).with_context(|| format!("--compression {name:?}: gzip, zstd or none"))
}

/// The directory and origin record of the container whose id starts with `query`.
fn find_container(root: &Path, query: &str) -> anyhow::Result<(PathBuf, ContainerOrigin)> {
    if query.len() < 3 || !query.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{query:?} is not a container id (or the start of one)");
    }
    let pods = root.join("pods");
    let mut found = Vec::new();
    for pod in std::fs::read_dir(&pods)
        .with_context(|| format!("reading {}", pods.display()))?
        .flatten()
    {
        let Ok(containers) = std::fs::read_dir(pod.path().join("containers")) else {
            continue;
        };
        for c in containers.flatten() {
            if c.file_name().to_string_lossy().starts_with(query) {
                found.push(c.path());
            }
        }
    }
    let dir = match found.as_slice() {
        [one] => one.clone(),
        [] => bail!("no container {query}"),
        _ => bail!(
            "{query} names {} containers: give more of the id",
            found.len()
        ),
    };
    let path = dir.join(ORIGIN_FILE);
    let origin: ContainerOrigin =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (containers made before 0.2 cannot be committed)",
                path.display()
            )
        })?)
        .with_context(|| format!("parsing {}", path.display()))?;
    Ok((dir, origin))
}

/// `image commit CONTAINER NAME`: the container's changes since its image, as one new layer on
/// top of it. What the runtime put in the root and what is mounted there are left out.
pub fn commit(
    config: &Config,
    container: &str,
    name: &str,
    compression: Compression,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store = serve::open_images(config)?;
    let (_, origin) = find_container(&config.root, container)?;
    let image = store.resolve(&origin.image_id)?.with_context(|| {
        format!(
            "the container's image {} is no longer stored",
            origin.image_id
        )
    })?;
    let committed = image_builder::commit::commit(&store, &origin, image, name, compression)?;
    let (blob, image) = (committed.layer, committed.image);
    eprintln!(
        "committed {} changes of {} as {} ({} layer, {} bytes) in {:.1}s",
        committed.changes,
        &origin.container_id[..12.min(origin.container_id.len())],
        image.repo_tags.first().map(String::as_str).unwrap_or(name),
        blob.digest,
        blob.size,
        started.elapsed().as_secs_f64()
    );
    println!("{}", image.id);
    Ok(())
}

/// `image tag SOURCE TARGET`.
pub fn tag(config: &Config, source: &str, target: &str) -> anyhow::Result<()> {
    let store = serve::open_images(config)?;
    let image = store
        .tag(source, target)
        .with_context(|| format!("tagging {source} as {target}"))?;
    println!("{}", image.id);
    Ok(())
}

/// `image save NAME -o DIR`: an OCI image layout, for farms without a registry.
pub fn save(config: &Config, reference: &str, dir: &Path) -> anyhow::Result<()> {
    let store = serve::open_images(config)?;
    let image = store
        .save_oci_layout(reference, dir)
        .with_context(|| format!("saving {reference} to {}", dir.display()))?;
    println!("{}", image.id);
    Ok(())
}

/// What `image base` is asked.
#[derive(Debug)]
pub struct BaseArgs<'a> {
    pub name: &'a str,
    pub programs: &'a [String],
    pub add: &'a [PathBuf],
    pub user: &'a str,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub keep_mtimes: bool,
    pub compression: Compression,
}

/// `image base NAME`: the host's own files as a base image.
pub fn base(config: &Config, args: BaseArgs<'_>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let macos = platform::OS == platform::Os::MacOs;
    let uid = args.uid.unwrap_or(if macos { 501 } else { 1000 });
    let gid = args.gid.unwrap_or(if macos { 20 } else { uid });
    let home = if macos {
        format!("/Users/{}", args.user)
    } else {
        format!("/home/{}", args.user)
    };
    let store = serve::open_images(config)?;
    let opts = image_builder::base::BaseOptions {
        name: args.name.to_string(),
        programs: args.programs.to_vec(),
        add: args.add.to_vec(),
        user: (args.user.to_string(), uid, gid, home),
        keep_mtimes: args.keep_mtimes,
        compression: args.compression,
    };
    let (image, missing) = image_builder::base::make_base(&store, &opts)
        .with_context(|| format!("making the base image {}", args.name))?;
    if !missing.is_empty() {
        eprintln!("not on this host, left out: {}", missing.join(", "));
    }
    eprintln!(
        "made {} ({}, {} bytes) in {:.1}s",
        image
            .repo_tags
            .first()
            .map(String::as_str)
            .unwrap_or(args.name),
        image.platform,
        image.size,
        started.elapsed().as_secs_f64()
    );
    println!("{}", image.id);
    Ok(())
}

/// What `image build` is asked.
#[derive(Debug)]
pub struct BuildArgs<'a> {
    pub tags: &'a [String],
    pub file: Option<&'a Path>,
    pub build_args: &'a [String],
    pub target: Option<&'a str>,
    pub no_cache: bool,
    pub compression: Compression,
    pub context: &'a Path,
}

/// `image build -t NAME [-f FILE] CONTEXT`: prints the image id; the steps and their output on
/// stderr.
pub fn build(config: &Config, args: BuildArgs<'_>) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let context = std::fs::canonicalize(args.context)
        .with_context(|| format!("the build context {}", args.context.display()))?;
    let containerfile = match args.file {
        Some(f) => f.to_path_buf(),
        None => ["Containerfile", "Dockerfile"]
            .iter()
            .map(|n| context.join(n))
            .find(|p| p.is_file())
            .with_context(|| format!("no Containerfile or Dockerfile in {}", context.display()))?,
    };
    let mut build_args = std::collections::BTreeMap::new();
    for a in args.build_args {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--build-arg {a:?}: NAME=value"))?;
        build_args.insert(k.to_string(), v.to_string());
    }
    let store = serve::open_images(config)?;
    let monitor = serve::monitor_program()?;
    let opts = image_builder::build::BuildOptions {
        containerfile,
        context,
        tags: args.tags.to_vec(),
        build_args,
        target: args.target.map(str::to_string),
        no_cache: args.no_cache,
        compression: args.compression,
        work_dir: config.root.join("builds"),
        step: runtime::step::StepOptions {
            monitor,
            state_dir: config.state_dir.clone(),
            copy_rootfs: config.runtime.rootfs == crate::config::RootfsMode::Copy,
            max_log_line: config.runtime.max_log_line_bytes,
            mdns_socket: config.runtime.mdns_socket(),
            sockets_dir: config.root.join("builds").join("sockets"),
            mach_services: config.runtime.seatbelt_mach_services.clone(),
            landlock_best_effort: config.runtime.landlock_best_effort,
        },
    };
    let registry = image_service::registry::Registry::new(config.image.registry())
        .context("setting up the registry client")?;
    let puller = image_service::Puller::new(
        std::sync::Arc::clone(&store),
        registry,
        config.image.max_concurrent_downloads,
    );
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let pull = |reference: &str| -> image_service::Result<image_service::Image> {
        eprintln!("pulling {reference}");
        tokio.block_on(puller.pull(reference, image_service::PullOptions::default()))
    };
    let mut err = std::io::stderr();
    let image = image_builder::build::build(&store, &opts, &pull, &mut err)?;
    eprintln!(
        "built {} in {:.1}s",
        image.repo_tags.join(", "),
        started.elapsed().as_secs_f64()
    );
    println!("{}", image.id);
    Ok(())
}
