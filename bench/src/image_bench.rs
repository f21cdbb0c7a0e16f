//! `image-bench`: making and moving images with darwin-cri, beside skopeo, in one run.
//!
//! A Containerfile of three steps over the busybox test image (RUN making 10,000 small files,
//! COPY of a file of `--copy-mb` MB, RUN deleting half of the small files) is built cold, then
//! again from the cache; the result is pushed to a local docker-registry, and pulled back into
//! an empty store. skopeo copies the same image between two registries (download and upload)
//! and from the registry into an OCI directory (download only), for comparison. With
//! `--big-gib N`, a second image whose one COPY layer is an N GiB file is built, pushed and
//! pulled by the server (PullImage): the figures include each process's peak RSS, which must
//! not grow with the layer. `bench/images.sh` builds it in release mode and runs it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use darwin_cri_tests::registry::TestRegistry;

#[derive(Debug, Parser)]
struct Args {
    /// The darwin-cri binary (a release build).
    #[arg(long, default_value = "target/release/darwin-cri")]
    darwin_cri: PathBuf,
    /// Size of the COPY step's file, in MB.
    #[arg(long, default_value_t = 200)]
    copy_mb: usize,
    /// Size of the big layer (one file), in GiB; 0 skips it.
    #[arg(long, default_value_t = 0)]
    big_gib: usize,
    /// Where results.md is written (appended as a section).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One timed command: wall time and the peak RSS (VmHWM) of its process.
#[derive(Debug)]
struct Run {
    wall: Duration,
    peak_kib: u64,
    stderr: String,
}

fn timed(cmd: &mut Command) -> anyhow::Result<Run> {
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{cmd:?}"))?;
    let pid = child.id();
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut e) = stderr {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    });
    let mut peak = 0;
    let status = loop {
        peak = peak.max(darwin_cri_tests::status_kib(pid, "VmHWM"));
        if let Some(s) = child.try_wait()? {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let wall = started.elapsed();
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed: {stderr}");
    }
    Ok(Run {
        wall,
        peak_kib: peak,
        stderr,
    })
}

/// A file of `mb` MB that compresses about as real binaries do (half random, half text).
fn filler(path: &Path, mb: usize, seed: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x = seed | 1;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mb {
        darwin_cri_tests::registry::fill_binary_like(
            &mut chunk,
            &mut x,
            b"darwin-cri image benchmark ",
        );
        f.write_all(&chunk)?;
    }
    f.flush()?;
    Ok(())
}

struct Cri {
    bin: PathBuf,
    config: PathBuf,
}

impl Cri {
    fn new(bin: &Path, dir: &Path, registries: &[&str]) -> anyhow::Result<Cri> {
        std::fs::create_dir_all(dir)?;
        let d = dir.display();
        let mut toml = format!(
            "socket = \"{d}/cri.sock\"\nroot = \"{d}/root\"\nstate_dir = \"{d}/run\"\n[log]\nlevel = \"warn\"\n[runtime]\nallow_root = true\n"
        );
        for r in registries {
            toml.push_str(&format!("[image.registries.\"{r}\"]\ninsecure = true\n"));
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, toml)?;
        Ok(Cri {
            bin: bin.to_path_buf(),
            config,
        })
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--config").arg(&self.config).args(args);
        c
    }
}

fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn blob_bytes(registry_dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = std::fs::read_dir(p) else {
            return 0;
        };
        rd.flatten()
            .map(|e| {
                let m = e.metadata().ok();
                match m {
                    Some(m) if m.is_dir() => walk(&e.path()),
                    Some(m) if e.file_name() == "data" => m.len(),
                    _ => 0,
                }
            })
            .sum()
    }
    walk(&registry_dir.join("data/docker/registry/v2/blobs"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = args.darwin_cri.canonicalize().with_context(|| {
        format!(
            "{} (cargo build --release --bin darwin-cri)",
            args.darwin_cri.display()
        )
    })?;
    let tmp = tempfile::Builder::new().prefix("image-bench").tempdir()?;
    let a = TestRegistry::start()?;
    let b = TestRegistry::start()?;
    let maker = Cri::new(&bin, &tmp.path().join("maker"), &[&a.addr, &b.addr])?;
    let layout = tmp.path().join("busybox");
    darwin_cri_tests::busybox_layout(&layout, darwin_cri_tests::BUSYBOX)?;
    timed(&mut maker.cmd(&["image", "import", &layout.display().to_string()]))?;

    let context = tmp.path().join("context");
    std::fs::create_dir_all(&context)?;
    filler(&context.join("payload.bin"), args.copy_mb, 7)?;
    std::fs::write(
        context.join("Containerfile"),
        format!(
            "FROM {}\n\
             RUN mkdir /data && cd /data && i=0; while [ $i -lt 10000 ]; do echo $i > f$i; i=$((i+1)); done\n\
             COPY payload.bin /payload.bin\n\
             RUN rm /data/f*[02468]\n",
            darwin_cri_tests::BUSYBOX
        ),
    )?;
    let ctx = context.display().to_string();
    let cold = timed(&mut maker.cmd(&["image", "build", "-t", "localhost/bench:1", &ctx]))?;
    let cached = timed(&mut maker.cmd(&["image", "build", "-t", "localhost/bench:1", &ctx]))?;
    let dest = format!("{}/bench/made:1", a.addr);
    let push = timed(&mut maker.cmd(&["image", "push", "-q", "localhost/bench:1", &dest]))?;
    let pushed_bytes = blob_bytes(a.dir.path());
    let puller = Cri::new(&bin, &tmp.path().join("puller"), &[&a.addr])?;
    let pull = timed(&mut puller.cmd(&["image", "pull", "-q", &dest]))?;
    let skopeo_copy = timed(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("docker://{}/bench/copied:1", b.addr),
    ]))?;
    let skopeo_pull = timed(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{dest}"),
        &format!("oci:{}:1", tmp.path().join("skopeo-oci").display()),
    ]))?;

    let mut md = String::new();
    md.push_str(&format!(
        "### image build, push, pull ({} MB COPY, 10,000 small files)\n\n\
         Machine: {} cores, {}; date {}.\n\n\
         | step | wall | peak RSS | throughput |\n| --- | --- | --- | --- |\n",
        args.copy_mb,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH,
        chrono_like_date()
    ));
    let row = |md: &mut String, name: &str, r: &Run, bytes: Option<u64>| {
        md.push_str(&format!(
            "| {name} | {:.2} s | {:.1} MB | {} |\n",
            r.wall.as_secs_f64(),
            r.peak_kib as f64 / 1024.0,
            bytes
                .map(|b| format!("{:.0} MB/s", mb_per_s(b, r.wall)))
                .unwrap_or_default()
        ));
    };
    row(&mut md, "darwin-cri image build (cold)", &cold, None);
    row(&mut md, "darwin-cri image build (cached)", &cached, None);
    row(&mut md, "darwin-cri image push", &push, Some(pushed_bytes));
    row(
        &mut md,
        "darwin-cri image pull (download + unpack)",
        &pull,
        Some(pushed_bytes),
    );
    row(
        &mut md,
        "skopeo copy registry → registry",
        &skopeo_copy,
        Some(pushed_bytes),
    );
    row(
        &mut md,
        "skopeo copy registry → OCI dir (download only)",
        &skopeo_pull,
        Some(pushed_bytes),
    );
    md.push_str(&format!(
        "\nThe image's blobs: {:.1} MB compressed. Cached rebuild steps: {}.\n",
        pushed_bytes as f64 / 1e6,
        cached.stderr.matches("--> cached").count()
    ));

    if args.big_gib > 0 {
        let big_ctx = tmp.path().join("big");
        std::fs::create_dir_all(&big_ctx)?;
        filler(&big_ctx.join("big.bin"), args.big_gib * 1024, 11)?;
        std::fs::write(
            big_ctx.join("Containerfile"),
            format!(
                "FROM {}\nCOPY big.bin /big.bin\n",
                darwin_cri_tests::BUSYBOX
            ),
        )?;
        let ctx = big_ctx.display().to_string();
        let build = timed(&mut maker.cmd(&["image", "build", "-t", "localhost/big:1", &ctx]))?;
        std::fs::remove_dir_all(&big_ctx)?;
        let dest = format!("{}/bench/big:1", a.addr);
        let before = blob_bytes(a.dir.path());
        let push = timed(&mut maker.cmd(&["image", "push", "-q", "localhost/big:1", &dest]))?;
        let big_bytes = blob_bytes(a.dir.path()) - before;
        // Pulled by the server, through the CRI: its peak RSS is what a node pays.
        let server_dir = tmp.path().join("server");
        let server = Cri::new(&bin, &server_dir, &[&a.addr])?;
        let mut daemon = server
            .cmd(&["serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let socket = server_dir.join("cri.sock");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let started = Instant::now();
        let pulled = rt.block_on(async {
            let (_, mut images) = darwin_cri_tests::connect(&socket).await?;
            images
                .pull_image(darwin_cri_tests::v1::PullImageRequest {
                    image: Some(darwin_cri_tests::v1::ImageSpec {
                        image: dest.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(())
        });
        let pull_wall = started.elapsed();
        let server_peak = darwin_cri_tests::status_kib(daemon.id(), "VmHWM");
        let _ = daemon.kill();
        let _ = daemon.wait();
        pulled?;
        md.push_str(&format!(
            "\n### a {} GiB layer\n\n| step | wall | peak RSS | throughput |\n| --- | --- | --- | --- |\n",
            args.big_gib
        ));
        row(
            &mut md,
            "darwin-cri image build (COPY)",
            &build,
            Some((args.big_gib as u64) << 30),
        );
        row(&mut md, "darwin-cri image push", &push, Some(big_bytes));
        md.push_str(&format!(
            "| darwin-cri serve, PullImage | {:.2} s | {:.1} MB | {:.0} MB/s |\n",
            pull_wall.as_secs_f64(),
            server_peak as f64 / 1024.0,
            mb_per_s(big_bytes, pull_wall)
        ));
    }
    print!("{md}");
    if let Some(out) = &args.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)?;
        f.write_all(md.as_bytes())?;
    }
    Ok(())
}

/// Today's date (UTC) from the system clock, `YYYY-MM-DD`.
fn chrono_like_date() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
