//! `cri-bench`: darwin-cri and containerd side by side, driven through the same CRI client
//! with the same requests, in one run on one machine, alternating between the two.
//!
//! It starts a local docker-registry holding the test images (a static busybox, a pause image
//! made from it, and a ~200 MB multi-layer image), a private containerd (its own root, state
//! and socket) and a private darwin-cri, runs every benchmark against both, writes Markdown,
//! JSON and an SVG chart of the pod-start latencies, and stops everything it started.
//! `bench/compare.sh` installs what it needs on a fresh Debian machine and runs it.

mod daemons;
mod report;
mod suite;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use darwin_cri_tests::registry::{TestRegistry, big_image};

use daemons::Daemon;
use report::{Figure, Report};
use suite::Client;

#[derive(Debug, Parser)]
struct Args {
    /// Iterations of each latency benchmark.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Size of the pull benchmark's image, in MB compressed (about).
    #[arg(long, default_value_t = 200)]
    pull_mb: usize,
    /// Pull runs per runtime.
    #[arg(long, default_value_t = 3)]
    pull_runs: usize,
    /// The darwin-cri binary (a release build).
    #[arg(long, default_value = "target/release/darwin-cri")]
    darwin_cri: PathBuf,
    /// Where the results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Files of the Xcode-sized image (the `xcode` benchmark).
    #[arg(long, default_value_t = 200_000)]
    xcode_files: usize,
    /// Its size, in MB uncompressed.
    #[arg(long, default_value_t = 4000)]
    xcode_mb: usize,
    /// Container starts measured per runtime with it (and with busybox beside it).
    #[arg(long, default_value_t = 10)]
    xcode_starts: usize,
    /// Container starts with `runtime.rootfs = "copy"` (each copies the whole image).
    #[arg(long, default_value_t = 3)]
    copy_starts: usize,
    /// Run only these benchmarks (comma-separated): idle, pod-start, calls, burst, concurrent,
    /// exec, memory, lists, pull, rounds, xcode. Default: all.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

impl Args {
    fn runs(&self, bench: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == bench)
    }
}

/// p50, p90 and p99 of the samples, in milliseconds.
fn percentiles(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |p: f64| darwin_cri_tests::percentile(&v, p).as_secs_f64() * 1000.0;
    (ms(0.5), ms(0.9), ms(0.99))
}

fn rss_kib(pid: i32) -> u64 {
    darwin_cri_tests::status_kib(pid as u32, "VmRSS")
}

async fn connect(d: &Daemon, image: &str, logs: PathBuf) -> anyhow::Result<Client> {
    let (rt, img) = darwin_cri_tests::connect(&d.socket).await?;
    Ok(Client {
        rt,
        img,
        image: image.to_string(),
        logs,
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let darwin_bin = args.darwin_cri.canonicalize().with_context(|| {
        format!(
            "{} (cargo build --release --bin darwin-cri)",
            args.darwin_cri.display()
        )
    })?;
    let work = tempfile::Builder::new().prefix("cri-bench").tempdir()?;
    let mut report = Report::new(&darwin_bin, args.iterations);

    eprintln!("building and pushing the images");
    let registry = TestRegistry::start()?;
    let reg = registry.addr.clone();
    for (name, cmd) in [
        ("busybox", &["sh"][..]),
        ("pause", &["sleep", "2147483647"][..]),
    ] {
        let dir = work.path().join(name);
        darwin_cri_tests::busybox_layout_with_cmd(&dir, name, cmd)?;
        registry.push(&dir, &format!("bench/{name}:1"))?;
    }
    let busybox = format!("{reg}/bench/busybox:1");
    let pause = format!("{reg}/bench/pause:1");
    let big = {
        let image = big_image(&work.path().join("big"), args.pull_mb)?;
        registry.push(&image.layout.dir, "bench/big:1")?;
        report.note(format!(
            "pull image: 5 gzip layers, {:.1} MB compressed, {} MB unpacked",
            image.compressed_bytes as f64 / 1e6,
            image.unpacked_mb
        ));
        (format!("{reg}/bench/big:1"), image.compressed_bytes)
    };

    eprintln!("starting darwin-cri and containerd");
    let daemons = [
        Daemon::darwin_cri(&work.path().join("darwin-cri"), &darwin_bin, &reg)?,
        Daemon::containerd(&work.path().join("containerd"), &reg, &pause)?,
    ];
    let mut clients = Vec::new();
    for d in &daemons {
        let mut c = connect(d, &busybox, work.path().join("logs").join(d.name)).await?;
        c.pull(&busybox)
            .await
            .with_context(|| format!("{}: pulling busybox", d.name))?;
        clients.push(c);
    }
    // A first pod on each, so that lazily made things (the pause image, thread pools) are in.
    for c in clients.iter_mut() {
        c.pod_start("warm").await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    if args.runs("idle") {
        let idle: Vec<u64> = daemons.iter().map(|d| rss_kib(d.pid())).collect();
        report.add(Figure::new(
            "daemon RSS, idle",
            "MiB",
            idle[0] as f64 / 1024.0,
            idle[1] as f64 / 1024.0,
        ));
    }

    if args.runs("pod-start") {
        eprintln!("pod start, one at a time");
        let mut samples = vec![Vec::new(), Vec::new()];
        for i in 0..args.iterations {
            for (k, c) in clients.iter_mut().enumerate() {
                samples[k].push(c.pod_start(&format!("seq{i}")).await?);
            }
        }
        report.latency("pod start (run, create, start)", &samples);
        report.samples("pod_start", &samples);
    }

    if args.runs("calls") {
        eprintln!("CreateContainer, StartContainer, RemoveContainer, each timed");
        let mut samples: Vec<Vec<Vec<Duration>>> = vec![vec![Vec::new(), Vec::new()]; 3];
        for i in 0..args.iterations {
            for (k, c) in clients.iter_mut().enumerate() {
                let took = c.container_calls(&format!("calls{i}")).await?;
                for (call, t) in took.into_iter().enumerate() {
                    samples[call][k].push(t);
                }
            }
        }
        for (call, name) in [
            "CreateContainer",
            "StartContainer",
            "RemoveContainer (stopped)",
        ]
        .into_iter()
        .enumerate()
        {
            report.latency(name, &samples[call]);
        }
    }

    if args.runs("burst") {
        // A farm's morning: 20 build pods scheduled at once onto one 2-core node.
        eprintln!("20 pods at once: time until all run");
        let mut samples = vec![Vec::new(), Vec::new()];
        for round in 0..args.iterations.div_ceil(20).max(3) {
            for (k, c) in clients.iter().enumerate() {
                let t = Instant::now();
                let mut tasks = Vec::new();
                for j in 0..20 {
                    let mut c = c.clone();
                    tasks.push(tokio::spawn(async move {
                        c.start_pod(&format!("burst{round}-{j}"), 1).await
                    }));
                }
                let mut pods = Vec::new();
                for task in tasks {
                    pods.push(task.await??);
                }
                samples[k].push(t.elapsed());
                let mut c = c.clone();
                for p in &pods {
                    c.remove_pod(p).await?;
                }
            }
        }
        report.latency("20 pods at once, until all run", &samples);
    }

    if args.runs("concurrent") {
        eprintln!("pod start, 10 at once");
        let mut samples = vec![Vec::new(), Vec::new()];
        for round in 0..args.iterations.div_ceil(10) {
            for (k, c) in clients.iter().enumerate() {
                let mut tasks = Vec::new();
                for j in 0..10 {
                    let mut c = c.clone();
                    tasks.push(tokio::spawn(async move {
                        c.pod_start(&format!("par{round}-{j}")).await
                    }));
                }
                for t in tasks {
                    samples[k].push(t.await??);
                }
            }
        }
        report.latency("pod start, 10 concurrently", &samples);
        report.samples("pod_start_concurrent", &samples);
    }

    if args.runs("exec") {
        eprintln!("ExecSync");
        let mut pods = Vec::new();
        for c in clients.iter_mut() {
            pods.push(c.start_pod("exec", 1).await?);
        }
        let mut samples = vec![Vec::new(), Vec::new()];
        for _ in 0..args.iterations {
            for (k, c) in clients.iter_mut().enumerate() {
                samples[k].push(c.exec_sync(&pods[k].containers[0]).await?);
            }
        }
        report.latency("ExecSync (true)", &samples);
        for (c, p) in clients.iter_mut().zip(&pods) {
            c.remove_pod(p).await?;
        }
    }

    let mut all: Vec<Vec<suite::Pod>> = vec![Vec::new(), Vec::new()];
    if args.runs("memory") {
        eprintln!("50 running containers: memory");
        for (k, c) in clients.iter_mut().enumerate() {
            for i in 0..50 {
                all[k].push(c.start_pod(&format!("mem{i}"), 1).await?);
            }
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut busy = Vec::new();
        let mut per_rss = Vec::new();
        let mut per_pss = Vec::new();
        for d in &daemons {
            busy.push(rss_kib(d.pid()) as f64 / 1024.0);
            let procs = d.per_container_processes();
            let rss: u64 = procs.iter().map(|p| rss_kib(*p)).sum();
            let pss: u64 = procs
                .iter()
                .map(|p| darwin_cri_tests::pss_kib(*p as u32))
                .sum();
            per_rss.push(rss as f64 / 50.0);
            per_pss.push(pss as f64 / 50.0);
        }
        report.add(Figure::new(
            "daemon RSS, 50 running containers",
            "MiB",
            busy[0],
            busy[1],
        ));
        report.add(Figure::new(
            "per-container overhead, RSS (monitor vs shim + pause)",
            "KiB",
            per_rss[0],
            per_rss[1],
        ));
        report.add(Figure::new(
            "per-container overhead, PSS (monitor vs shim + pause)",
            "KiB",
            per_pss[0],
            per_pss[1],
        ));
    }

    for target in [100usize, 500].into_iter().filter(|_| args.runs("lists")) {
        eprintln!("listing {target} containers");
        for (k, c) in clients.iter_mut().enumerate() {
            let present: usize = all[k].iter().map(|p| p.containers.len()).sum();
            for i in 0..target.saturating_sub(present).div_ceil(10) {
                let n = all[k].len();
                all[k].push(c.start_pod(&format!("list{target}-{n}-{i}"), 10).await?);
            }
        }
        let (mut lc, mut ls) = (vec![Vec::new(), Vec::new()], vec![Vec::new(), Vec::new()]);
        for _ in 0..args.iterations.min(50) {
            for (k, c) in clients.iter_mut().enumerate() {
                let (t, n) = c.list_containers().await?;
                anyhow::ensure!(n >= target, "{n} containers listed, not {target}");
                lc[k].push(t);
                ls[k].push(c.list_container_stats().await?.0);
            }
        }
        report.latency(&format!("ListContainers, {target} containers"), &lc);
        report.latency(&format!("ListContainerStats, {target} containers"), &ls);
    }
    eprintln!("removing the pods");
    for (k, c) in clients.iter_mut().enumerate() {
        for p in all[k].drain(..) {
            c.remove_pod(&p).await?;
        }
    }

    if args.runs("rounds") {
        // A daemon that runs for months: its memory after rounds of work must stay flat.
        eprintln!("memory over rounds of 20 pulls and 100 pod+container cycles");
        let mut after: Vec<Vec<f64>> = vec![Vec::new(), Vec::new()];
        for (k, d) in daemons.iter().enumerate() {
            after[k].push(rss_kib(d.pid()) as f64 / 1024.0);
        }
        for round in 1..=5 {
            for (k, c) in clients.iter_mut().enumerate() {
                for _ in 0..20 {
                    c.remove_image(&pause).await?;
                    c.pull(&pause).await?;
                }
                // Two at a time, as kubelet's pod workers do.
                for i in 0..50 {
                    let (mut a, mut b) = (c.clone(), c.clone());
                    let (na, nb) = (format!("round{round}-{i}-a"), format!("round{round}-{i}-b"));
                    let (pa, pb) = tokio::try_join!(a.start_pod(&na, 1), b.start_pod(&nb, 1))?;
                    tokio::try_join!(a.remove_pod(&pa), b.remove_pod(&pb))?;
                }
                after[k].push(rss_kib(daemons[k].pid()) as f64 / 1024.0);
            }
        }
        for (i, label) in [
            "fresh", "round 1", "round 2", "round 3", "round 4", "round 5",
        ]
        .iter()
        .enumerate()
        {
            report.add(Figure::new(
                &format!("daemon RSS, {label} (20 pulls, 100 pod+container cycles per round)"),
                "MiB",
                after[0][i],
                after[1][i],
            ));
        }
    }

    if args.runs("pull") {
        eprintln!("image pull, cold");
        let mut secs = [Vec::new(), Vec::new()];
        // skopeo's download of the same image into an OCI directory, between the runtimes' pulls:
        // what the network and the registry allow, with no unpacking.
        let mut skopeo = Vec::new();
        for run in 0..args.pull_runs {
            for (k, c) in clients.iter_mut().enumerate() {
                let t = Instant::now();
                c.pull(&big.0)
                    .await
                    .with_context(|| format!("{}: pull", daemons[k].name))?;
                secs[k].push(t.elapsed().as_secs_f64());
                c.remove_image(&big.0).await?;
            }
            let dest = work.path().join(format!("skopeo-{run}"));
            let t = Instant::now();
            let out = std::process::Command::new("skopeo")
                .args(["copy", "--quiet", "--src-tls-verify=false"])
                .arg(format!("docker://{}", big.0))
                .arg(format!("oci:{}:1", dest.display()))
                .output()
                .context("skopeo")?;
            anyhow::ensure!(
                out.status.success(),
                "skopeo copy: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            skopeo.push(t.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&dest)?;
        }
        let mbps = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            big.1 as f64 / 1e6 / v[v.len() / 2]
        };
        let (a, b) = (mbps(&mut secs[0]), mbps(&mut secs[1]));
        report.add(Figure::higher_is_better(
            "image pull + unpack, cold, median",
            "MB/s",
            a,
            b,
        ));
        report.beside_skopeo(Figure::higher_is_better(
            "image pull + unpack (darwin-cri) vs skopeo copy to an OCI dir (download only), median",
            "MB/s",
            a,
            mbps(&mut skopeo),
        ));
    }

    if args.runs("xcode") {
        xcode(
            &args,
            &mut report,
            &mut clients,
            &daemons,
            &registry,
            work.path(),
            &darwin_bin,
            &busybox,
        )
        .await?;
    }

    drop(clients);
    drop(daemons);
    drop(registry);
    report.write(&args.out)?;
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds `cmd` took; it must succeed.
fn timed_command(cmd: &mut std::process::Command) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(t.elapsed().as_secs_f64())
}

/// An Xcode-sized image (200,000 files, 4 GB in 5 layers by default): pull + unpack by both
/// runtimes and skopeo's download; CreateContainer + StartContainer with it beside busybox; and
/// the same with `runtime.rootfs = "copy"` (darwin-cri only: the Linux stand-in for a clone of
/// the whole tree per container).
#[allow(clippy::too_many_arguments)]
async fn xcode(
    args: &Args,
    report: &mut Report,
    clients: &mut [Client],
    daemons: &[Daemon],
    registry: &TestRegistry,
    work: &std::path::Path,
    darwin_bin: &std::path::Path,
    busybox: &str,
) -> anyhow::Result<()> {
    eprintln!(
        "an Xcode-sized image: {} files, {} MB",
        args.xcode_files, args.xcode_mb
    );
    let t = Instant::now();
    let dir = work.join("xcode");
    let image =
        darwin_cri_tests::registry::xcode_like_image(&dir, args.xcode_files, args.xcode_mb)?;
    let made = t.elapsed().as_secs_f64();
    registry.push(&image.layout.dir, "bench/xcode:1")?;
    std::fs::remove_dir_all(&dir)?;
    let name = format!("{}/bench/xcode:1", registry.addr);
    report.note(format!(
        "Xcode-sized image: {} files, {} MB unpacked, {:.0} MB compressed in 5 gzip layers (made in {made:.0} s)",
        args.xcode_files,
        image.unpacked_mb,
        image.compressed_bytes as f64 / 1e6
    ));

    let mut pull = Vec::new();
    for (k, c) in clients.iter_mut().enumerate() {
        let t = Instant::now();
        c.pull(&name)
            .await
            .with_context(|| format!("{}: pulling the Xcode-sized image", daemons[k].name))?;
        pull.push(t.elapsed().as_secs_f64());
    }
    let oci = work.join("xcode-skopeo");
    let skopeo = timed_command(
        std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{name}"))
            .arg(format!("oci:{}:1", oci.display())),
    )?;
    std::fs::remove_dir_all(&oci)?;
    report.add(Figure::new(
        "Xcode-sized image: pull + unpack, cold",
        "s",
        pull[0],
        pull[1],
    ));
    report.beside_skopeo(Figure::new(
        "Xcode-sized image: pull + unpack (darwin-cri) vs skopeo copy (download only)",
        "s",
        pull[0],
        skopeo,
    ));

    for (n, (image, label)) in [(name.as_str(), "Xcode-sized image"), (busybox, "busybox")]
        .into_iter()
        .enumerate()
    {
        let mut samples = vec![Vec::new(), Vec::new()];
        for i in 0..args.xcode_starts {
            for (k, c) in clients.iter_mut().enumerate() {
                let (pod, took) = c.container_start(&format!("xc{n}-{i}"), image).await?;
                samples[k].push(took);
                c.remove_pod(&pod).await?;
            }
        }
        report.latency(&format!("container create+start, {label}"), &samples);
    }

    // rootfs = "copy": a second darwin-cri whose container roots are full copies made at
    // CreateContainer (the pool off), the Linux stand-in for a clone of the whole tree.
    eprintln!("the same with runtime.rootfs = \"copy\"");
    let copying = Daemon::darwin_cri_with(
        &work.join("darwin-cri-copy"),
        darwin_bin,
        &registry.addr,
        "rootfs = \"copy\"\n[runtime.root_pool]\nsize = 0",
    )?;
    let mut c = connect(&copying, busybox, work.join("logs").join("darwin-cri-copy")).await?;
    c.pull(&name).await?;
    c.pull(busybox).await?;
    let mut busybox_copy_p50 = 0.0;
    for (n, (image, label)) in [(name.as_str(), "Xcode-sized image"), (busybox, "busybox")]
        .into_iter()
        .enumerate()
    {
        let mut took = Vec::new();
        for i in 0..args.copy_starts {
            let (pod, t) = c.container_start(&format!("copy{n}-{i}"), image).await?;
            took.push(t.as_secs_f64() * 1000.0);
            c.remove_pod(&pod).await?;
        }
        let p50 = median(took.clone());
        if n == 1 {
            busybox_copy_p50 = p50;
        }
        eprintln!("  rootfs = copy, container create+start, {label}: p50 {p50:.1} ms");
        report.note(format!(
            "darwin-cri with rootfs = \"copy\" and no root pool: container create+start with the {label}, p50 {p50:.1} ms over {} (each copies the image's tree)",
            took.len()
        ));
    }
    drop(c);
    drop(copying);

    // The same with roots made ahead (runtime.root_pool, one per image): each create takes a
    // ready root; before the next, the pool's refill is timed, with the server's CPU and the
    // pool's disk.
    eprintln!("the same with a warm root pool (runtime.root_pool.size = 1)");
    let pooled = Daemon::darwin_cri_with(
        &work.join("darwin-cri-pool"),
        darwin_bin,
        &registry.addr,
        "rootfs = \"copy\"\n[runtime.root_pool]\nsize = 1",
    )?;
    let mut c = connect(&pooled, busybox, work.join("logs").join("darwin-cri-pool")).await?;
    let image_id = c.pull(&name).await?;
    c.pull(busybox).await?;
    let pool_dir = pooled
        .dir
        .join("root/pool")
        .join(image_id.trim_start_matches("sha256:"));
    let ready = |dir: &std::path::Path| -> usize {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.starts_with("r-") && !n.ends_with(".tmp")
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let wait_ready = |dir: &std::path::Path| -> anyhow::Result<f64> {
        let t = Instant::now();
        while ready(dir) == 0 {
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(1800),
                "no root made ahead in {} within 30 minutes",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let cpu = |pid: i32| darwin_cri_tests::cpu_ticks(pid) as f64 / 100.0;
    wait_ready(&pool_dir)?;
    let (mut took, mut refill, mut refill_cpu) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..args.copy_starts {
        let (pod, t) = c.container_start(&format!("pool-{i}"), &name).await?;
        took.push(t.as_secs_f64() * 1000.0);
        let cpu_before = cpu(pooled.pid());
        refill.push(wait_ready(&pool_dir)?);
        refill_cpu.push(cpu(pooled.pid()) - cpu_before);
        c.remove_pod(&pod).await?;
    }
    let pool_bytes: f64 = std::fs::read_to_string(pool_dir.join("bytes"))
        .ok()
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0.0);
    let p50 = median(took.clone());
    let (refill_p50, cpu_p50) = (median(refill.clone()), median(refill_cpu.clone()));
    eprintln!(
        "  warm pool: create+start p50 {p50:.1} ms ({:.2}x busybox copied); refill {refill_p50:.1} s, {cpu_p50:.1} s of server CPU; {:.0} MB per root",
        p50 / busybox_copy_p50.max(0.001),
        pool_bytes / 1e6
    );
    report.note(format!(
        "darwin-cri with rootfs = \"copy\" and a warm root pool (size 1): container create+start with the Xcode-sized image, p50 {p50:.1} ms over {} ({:.2}x busybox's {busybox_copy_p50:.1} ms without a pool); refilling the pool took {refill_p50:.1} s (p50) at the lowest priority, {cpu_p50:.1} s of the server's CPU, and {:.0} MB of disk per ready root",
        took.len(),
        p50 / busybox_copy_p50.max(0.001),
        pool_bytes / 1e6
    ));
    drop(c);
    drop(pooled);
    Ok(())
}
