//! `darwin-cri`: a Kubernetes CRI runtime for macOS nodes.
#![forbid(unsafe_code)]

mod config;
mod cri;
mod doctor;
mod image_cli;
mod image_make;
mod logfile;
mod metrics;
mod node_facts;
#[cfg(feature = "kube")]
mod node_report;
mod serve;
mod streaming;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use config::{Config, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "darwin-cri",
    version,
    about = "A Kubernetes CRI runtime for macOS nodes"
)]
struct Cli {
    /// Configuration file (TOML); every key is optional. See `darwin-cri config default`.
    #[arg(long, global = true, env = "DARWIN_CRI_CONFIG")]
    config: Option<PathBuf>,
    /// The CRI socket path (overrides `socket`).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The persistent state directory (overrides `root`).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// The runtime state directory (overrides `state_dir`).
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve CRI v1 on the socket.
    Serve,
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Image store helpers.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Check that this host can run darwin-cri, and print what to fix; exits 1 on a blocking
    /// problem.
    Doctor {
        /// kubelet's configuration file (KubeletConfiguration), checked to point at the
        /// socket. Default: the first of the usual places that exists.
        #[arg(long)]
        kubelet_config: Option<PathBuf>,
    },
    /// Label this Mac's Node (darwin-cri.io/: macOS, chip, Xcodes, simulators) and advertise its
    /// build slots, with kubelet's kubeconfig (`[node]`); needs the `kube` build feature.
    NodeReport {
        /// Report once and exit (non-zero on failure) instead of every report interval.
        #[arg(long)]
        once: bool,
        /// Print the labels this host would get, as JSON, and exit; no cluster is contacted.
        #[arg(long)]
        print: bool,
    },
    /// Internal: supervise one container (started by the server).
    #[command(hide = true)]
    Monitor { bundle: PathBuf },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the default configuration file, with comments.
    Default,
    /// Print the effective configuration (defaults, file and flags merged).
    Show,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Pull an image from its registry (or a configured mirror) into the store.
    Pull {
        reference: String,
        /// Platform to select from an index, `os/arch[/variant]` (default: image.platform).
        #[arg(long)]
        platform: Option<String>,
        /// Registry credentials `USER[:PASSWORD]`; without `:PASSWORD` it is read from
        /// DARWIN_CRI_REGISTRY_PASSWORD. Default: docker config.json, else anonymous.
        #[arg(long)]
        user: Option<String>,
        /// No progress bar or summary; print only the image id.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List images.
    #[command(alias = "list")]
    Ls,
    /// Remove images: a tag of an image with other tags is untagged; otherwise the image goes.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Import an OCI image layout directory (index.json, blobs/sha256) into the store.
    Import {
        dir: PathBuf,
        /// The image's name, e.g. `registry.local/xcode:16`; defaults to the layout's annotation.
        #[arg(long)]
        name: Option<String>,
    },
    /// Keep a container's changes since its image (added, changed and deleted files) as a new
    /// image: its image plus one layer. Works on running and stopped containers.
    Commit {
        /// The container's id, or a unique start of it.
        container: String,
        /// The new image's name, e.g. `registry.farm.local/ios-tools:1`.
        name: String,
        /// Layer compression: gzip, zstd or none (a plain tar).
        #[arg(long, default_value = "gzip")]
        compression: String,
    },
    /// Push a stored image to its registry (never a mirror): blobs the registry has are not
    /// sent again, large ones go in resumable chunks.
    Push {
        /// The stored image (name or id).
        source: String,
        /// Where to push it, e.g. `registry.farm.local/ios-tools:1`; default: its own name.
        dest: Option<String>,
        /// Registry credentials `USER[:PASSWORD]` (as for pull).
        #[arg(long)]
        user: Option<String>,
        /// Push layers gzip- or zstd-compressed, or as plain tars (converted once and kept);
        /// default: as stored.
        #[arg(long)]
        compression: Option<String>,
        /// Blobs above this many bytes go in chunks of it (default 16 MiB).
        #[arg(long, hide = true, default_value_t = 0)]
        chunk_size: usize,
        /// Tag the platform manifest itself, not an index naming it with its platform (the
        /// default, merged into the index the tag already has: one tag for Intel and Apple
        /// silicon images, chosen by macOS version too).
        #[arg(long)]
        manifest_only: bool,
        /// No progress bar or summary; print only the manifest digest.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Make a base image from this host's own files: a shell and the usual tools (or the
    /// programs named), everything they load, and an /etc with root and a build user, the
    /// image's USER. On macOS it carries dyld and its shared cache: keep it in a private
    /// registry. The same files give the same image id.
    Base {
        /// The image's name, e.g. `registry.farm.local/macos-base:15`.
        name: String,
        /// A program to include instead of the default set (a name looked up in /usr/bin, /bin,
        /// /usr/sbin and /sbin, or a path); repeatable.
        #[arg(long = "program")]
        programs: Vec<String>,
        /// A file or directory tree to add as it is; repeatable.
        #[arg(long)]
        add: Vec<PathBuf>,
        /// The build user's name (the image's USER).
        #[arg(long, default_value = "build")]
        user: String,
        /// Its uid (default: 501 on macOS, 1000 elsewhere).
        #[arg(long)]
        uid: Option<u32>,
        /// Its gid (default: 20, staff, on macOS; the uid elsewhere).
        #[arg(long)]
        gid: Option<u32>,
        /// Keep the files' modification times (the image is then not reproducible).
        #[arg(long)]
        keep_mtimes: bool,
        /// Layer compression: gzip, zstd or none (a plain tar).
        #[arg(long, default_value = "gzip")]
        compression: String,
    },
    /// Build an image from a Containerfile (Dockerfile): RUN steps run as containers of this
    /// runtime, COPY and ADD read the context directly. Works with or without the server.
    Build {
        /// The image's name; repeatable.
        #[arg(long = "tag", short = 't', required = true)]
        tags: Vec<String>,
        /// The Containerfile (default: CONTEXT/Containerfile, else CONTEXT/Dockerfile).
        #[arg(long = "file", short = 'f')]
        file: Option<PathBuf>,
        /// A build argument `NAME=value`; repeatable.
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        /// Build up to this stage (its name in `FROM … AS name`).
        #[arg(long)]
        target: Option<String>,
        /// Run every step, cached or not.
        #[arg(long)]
        no_cache: bool,
        /// Layer compression: gzip, zstd or none (a plain tar).
        #[arg(long, default_value = "gzip")]
        compression: String,
        context: PathBuf,
    },
    /// Give a stored image another name.
    Tag { source: String, target: String },
    /// Write a stored image as an OCI image layout directory (for farms without a registry).
    Save {
        reference: String,
        #[arg(long, short)]
        output: PathBuf,
    },
}

fn load(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(s) = &cli.socket {
        config.socket = s.clone();
    }
    if let Some(r) = &cli.root {
        config.root = r.clone();
    }
    if let Some(s) = &cli.state_dir {
        config.state_dir = s.clone();
    }
    Ok(config)
}

/// Logs to stderr, or with `file` to the configured log file (the server's; the CLI's
/// commands always log to stderr).
fn init_logging(config: &Config, file: bool) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if file && !config.log.file.as_os_str().is_empty() {
        let log = logfile::LogFile::install(&config.log.file)
            .with_context(|| format!("opening log.file {}", config.log.file.display()))?;
        let builder = builder.with_ansi(false).with_writer(log);
        match config.log.format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Human => builder.init(),
        }
    } else {
        // Colour only for a person at a terminal: under launchd stderr is a file, and escape
        // codes there make the log unreadable.
        use std::io::IsTerminal;
        let builder = builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr);
        match config.log.format {
            LogFormat::Json => builder.json().init(),
            LogFormat::Human => builder.init(),
        }
    }
    Ok(())
}

#[cfg(feature = "kube")]
fn node_report(config: Config, once: bool) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(node_report::run(config.node, once))
}

#[cfg(not(feature = "kube"))]
fn node_report(_config: Config, _once: bool) -> anyhow::Result<()> {
    anyhow::bail!(
        "this darwin-cri was built without the kube feature: cargo build --release --features kube"
    )
}

fn main() -> anyhow::Result<()> {
    // Where darwin-cri-monitor is not installed beside it, this binary is the monitor (see
    // runtime::monitor::MonitorProgram): dispatched before the argument parser, the async
    // runtime or logging are touched, so that their code is never paged in.
    let mut args = std::env::args_os().skip(1);
    if let (Some(cmd), Some(bundle), None) = (args.next(), args.next(), args.next())
        && cmd == "monitor"
    {
        if bundle == runtime::monitor::WAIT_ARG {
            std::process::exit(runtime::monitor::run_waiting());
        }
        std::process::exit(runtime::monitor::run(std::path::Path::new(&bundle)));
    }
    let cli = Cli::parse();
    match &cli.command {
        Command::Monitor { bundle } => std::process::exit(runtime::monitor::run(bundle)),
        Command::Config {
            command: ConfigCommand::Default,
        } => {
            print!("{}", config::DEFAULT_TOML);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Show,
        } => {
            println!("{:#?}", load(&cli)?);
            Ok(())
        }
        Command::Image { command } => {
            let config = load(&cli)?;
            init_logging(&config, false)?;
            match command {
                ImageCommand::Pull {
                    reference,
                    platform,
                    user,
                    quiet,
                } => image_cli::pull(
                    &config,
                    reference,
                    platform.as_deref(),
                    user.as_deref(),
                    *quiet,
                ),
                ImageCommand::Ls => image_cli::list(&config),
                ImageCommand::Rm { references } => image_cli::remove(&config, references),
                ImageCommand::Import { dir, name } => {
                    image_cli::import(&config, dir, name.as_deref())
                }
                ImageCommand::Commit {
                    container,
                    name,
                    compression,
                } => image_make::commit(
                    &config,
                    container,
                    name,
                    image_make::compression(compression)?,
                ),
                ImageCommand::Tag { source, target } => image_make::tag(&config, source, target),
                ImageCommand::Build {
                    tags,
                    file,
                    build_args,
                    target,
                    no_cache,
                    compression,
                    context,
                } => image_make::build(
                    &config,
                    image_make::BuildArgs {
                        tags,
                        file: file.as_deref(),
                        build_args,
                        target: target.as_deref(),
                        no_cache: *no_cache,
                        compression: image_make::compression(compression)?,
                        context,
                    },
                ),
                ImageCommand::Base {
                    name,
                    programs,
                    add,
                    user,
                    uid,
                    gid,
                    keep_mtimes,
                    compression,
                } => image_make::base(
                    &config,
                    image_make::BaseArgs {
                        name,
                        programs,
                        add,
                        user,
                        uid: *uid,
                        gid: *gid,
                        keep_mtimes: *keep_mtimes,
                        compression: image_make::compression(compression)?,
                    },
                ),
                ImageCommand::Push {
                    source,
                    dest,
                    user,
                    compression,
                    chunk_size,
                    manifest_only,
                    quiet,
                } => image_cli::push(
                    &config,
                    image_cli::PushArgs {
                        source,
                        dest: dest.as_deref(),
                        user: user.as_deref(),
                        compression: compression
                            .as_deref()
                            .map(image_make::compression)
                            .transpose()?,
                        chunk_size: *chunk_size,
                        manifest_only: *manifest_only,
                        quiet: *quiet,
                    },
                ),
                ImageCommand::Save { reference, output } => {
                    image_make::save(&config, reference, output)
                }
            }
        }
        Command::Doctor { kubelet_config } => {
            let config = load(&cli)?;
            let checks = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(doctor::run(
                    &config,
                    cli.config.as_deref(),
                    kubelet_config.as_deref(),
                ));
            std::process::exit(doctor::report(&checks))
        }
        Command::NodeReport { once, print } => {
            let config = load(&cli)?;
            init_logging(&config, false)?;
            if *print {
                let places = node_facts::Places::from_config(&config.node);
                let inventory = node_facts::inventory(&places);
                for w in &inventory.warnings {
                    tracing::warn!("{w}");
                }
                let labels = node_facts::labels(&platform::host_facts(), &inventory);
                println!("{}", serde_json::to_string_pretty(&labels)?);
                return Ok(());
            }
            node_report(config, *once)
        }
        Command::Serve => {
            let config = load(&cli)?;
            init_logging(&config, true)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?
                .block_on(serve::serve(config))
        }
    }
}
