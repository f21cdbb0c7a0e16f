//! Pull benchmark: a ~200 MB multi-layer image from a local docker-registry, pulled and
//! unpacked by `darwin-cri image pull` (a fresh store each run), beside `skopeo copy` of the
//! same image to a directory (download only, no unpacking), alternated in one run.
//!
//! Run: `cargo build --release --bin darwin-cri --bin darwin-cri-monitor && cargo bench -p darwin-cri-tests --bench pull`
//! (as root, with docker-registry and skopeo installed). BENCH_RUNS (default 3) sets the
//! runs per tool; BENCH_MB (default 200) the image size; BENCH_FILES, when set, makes it an
//! Xcode-shaped image of that many files (`registry::xcode_like_image`); BENCH_WRAP a profiler
//! command line that darwin-cri's pull runs under.

use std::io::Write;
use std::process::Command;
use std::time::Instant;

use darwin_cri_tests::registry::{TestRegistry, big_image, xcode_like_image};
use darwin_cri_tests::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let total_mb: usize = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let reg = TestRegistry::start()?;
    let work = tempfile::Builder::new()
        .prefix("darwin-cri-pullbench")
        .tempdir()?;
    let files: Option<usize> = std::env::var("BENCH_FILES")
        .ok()
        .and_then(|v| v.parse().ok());
    let big = match files {
        Some(files) => xcode_like_image(&work.path().join("layout"), files, total_mb)?,
        None => big_image(&work.path().join("layout"), total_mb)?,
    };
    let (layout, compressed) = (big.layout, big.compressed_bytes);
    reg.push(&layout.dir, "bench/big:1")?;
    let name = format!("{}/bench/big:1", reg.addr);
    let config = work.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[image]\nmax_concurrent_downloads = 3\n[image.registries.\"{}\"]\ninsecure = true\n",
            reg.addr
        ),
    )?;
    println!(
        "image: 5 gzip layers, {:.1} MB compressed, {} MB uncompressed{}",
        compressed as f64 / 1e6,
        big.unpacked_mb,
        files.map(|f| format!(", {f} files")).unwrap_or_default()
    );

    let (mut ours, mut skopeo) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let root = work.path().join(format!("root{run}"));
        let t = Instant::now();
        // BENCH_WRAP (e.g. "perf record -g -o /tmp/pull.perf") runs the pull under a profiler.
        let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
        let mut words: Vec<String> = wrap.split_whitespace().map(str::to_string).collect();
        words.push(binary().display().to_string());
        let out = Command::new(&words[0])
            .args(&words[1..])
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&root)
            .args(["image", "pull", "--quiet", &name])
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "darwin-cri pull failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ours.push(secs);
        std::fs::remove_dir_all(&root)?;

        let dest = work.path().join(format!("skopeo{run}"));
        let t = Instant::now();
        let out = Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(format!("docker://{name}"))
            .arg(format!("dir:{}", dest.display()))
            .output()?;
        let secs = t.elapsed().as_secs_f64();
        anyhow::ensure!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        skopeo.push(secs);
        std::fs::remove_dir_all(&dest)?;
        println!(
            "run {run}: darwin-cri pull+unpack {:.2} s, skopeo copy {:.2} s",
            ours[run], skopeo[run]
        );
        std::io::stdout().flush()?;
    }
    let mb = compressed as f64 / 1e6;
    let (o, s) = (median(ours), median(skopeo));
    println!(
        "median: darwin-cri pull+unpack {o:.2} s ({:.0} MB/s), skopeo copy {s:.2} s ({:.0} MB/s); ratio {:.2}x",
        mb / o,
        mb / s,
        s / o
    );
    Ok(())
}
