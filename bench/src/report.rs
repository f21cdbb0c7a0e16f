//! The results: a Markdown table, the same as JSON with the raw samples, and an SVG chart of
//! the pod-start latency distributions.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub darwin_cri: f64,
    pub containerd: f64,
    /// How many times better darwin-cri does (containerd / darwin-cri for costs, the inverse
    /// for throughputs).
    pub advantage: f64,
}

impl Figure {
    /// A cost: lower is better.
    pub fn new(name: &str, unit: &str, darwin_cri: f64, containerd: f64) -> Figure {
        Figure {
            name: name.into(),
            unit: unit.into(),
            darwin_cri,
            containerd,
            advantage: containerd / darwin_cri,
        }
    }

    pub fn higher_is_better(name: &str, unit: &str, darwin_cri: f64, containerd: f64) -> Figure {
        Figure {
            advantage: darwin_cri / containerd,
            ..Figure::new(name, unit, darwin_cri, containerd)
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub date: String,
    pub machine: String,
    pub versions: BTreeMap<String, String>,
    pub iterations: usize,
    pub notes: Vec<String>,
    pub figures: Vec<Figure>,
    /// Figures whose second value is skopeo's, not containerd's.
    pub skopeo: Vec<Figure>,
    /// Raw latencies in ms, by benchmark, darwin-cri first.
    pub samples: BTreeMap<String, [Vec<f64>; 2]>,
}

fn output(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

impl Report {
    pub fn new(darwin_cri: &Path, iterations: usize) -> Report {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        let mut versions = BTreeMap::new();
        versions.insert(
            "darwin-cri".into(),
            output(&darwin_cri.display().to_string(), &["--version"]),
        );
        versions.insert("containerd".into(), output("containerd", &["--version"]));
        versions.insert("runc".into(), output("runc", &["--version"]));
        versions.insert("kernel".into(), output("uname", &["-sr"]));
        Report {
            date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            machine: format!(
                "{cpus} CPUs, {mem_gib:.1} GiB, {}",
                output("uname", &["-m"])
            ),
            versions,
            iterations,
            notes: Vec::new(),
            figures: Vec::new(),
            skopeo: Vec::new(),
            samples: BTreeMap::new(),
        }
    }

    pub fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    /// A figure measured beside skopeo (its `containerd` field holds skopeo's value).
    pub fn beside_skopeo(&mut self, f: Figure) {
        eprintln!(
            "  {:<58} darwin-cri {:>10.2} {:<4} skopeo {:>10.2}  ({:.2}x)",
            f.name, f.darwin_cri, f.unit, f.containerd, f.advantage
        );
        self.skopeo.push(f);
    }

    pub fn add(&mut self, f: Figure) {
        eprintln!(
            "  {:<58} darwin-cri {:>10.2} {:<4} containerd {:>10.2}  ({:.1}x)",
            f.name, f.darwin_cri, f.unit, f.containerd, f.advantage
        );
        self.figures.push(f);
    }

    /// p50, p90 and p99 of both runtimes' samples.
    pub fn latency(&mut self, name: &str, samples: &[Vec<Duration>]) {
        let (a, b) = (
            crate::percentiles(samples[0].clone()),
            crate::percentiles(samples[1].clone()),
        );
        self.add(Figure::new(&format!("{name} p50"), "ms", a.0, b.0));
        self.add(Figure::new(&format!("{name} p90"), "ms", a.1, b.1));
        self.add(Figure::new(&format!("{name} p99"), "ms", a.2, b.2));
    }

    pub fn samples(&mut self, name: &str, samples: &[Vec<Duration>]) {
        let ms = |v: &Vec<Duration>| v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        self.samples
            .insert(name.into(), [ms(&samples[0]), ms(&samples[1])]);
    }

    fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// The targets, each with the measured advantage.
    fn targets(&self) -> Vec<String> {
        [
            (
                "pod start (run, create, start) p50",
                10.0,
                "pod start p50 at least 10x lower",
            ),
            (
                "image pull + unpack, cold, median",
                1.5,
                "pull+unpack at least 1.5x the throughput",
            ),
            ("daemon RSS, idle", 4.0, "daemon idle RSS at most a quarter"),
            (
                "per-container overhead, PSS (monitor vs shim + pause)",
                5.0,
                "per-container overhead (PSS) at most a fifth",
            ),
            (
                "per-container overhead, RSS (monitor vs shim + pause)",
                5.0,
                "per-container overhead (RSS) at most a fifth",
            ),
        ]
        .iter()
        .filter_map(|(name, want, text)| {
            let f = self.figure(name)?;
            let verdict = if f.advantage >= *want {
                "met"
            } else {
                "MISSED"
            };
            Some(format!(
                "| {text} | {:.1}x | {want}x | {verdict} |",
                f.advantage
            ))
        })
        .collect()
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        let mut md = format!(
            "# darwin-cri beside containerd\n\n{}; {}. Versions: {}. {} iterations per latency benchmark; host-network pods; a static busybox image from a local docker-registry.\n\n",
            self.date,
            self.machine,
            self.versions
                .iter()
                .map(|(k, v)| format!("{k} `{v}`"))
                .collect::<Vec<_>>()
                .join(", "),
            self.iterations
        );
        for n in &self.notes {
            md.push_str(&format!("- {n}\n"));
        }
        md.push_str("\n| figure | darwin-cri | containerd | darwin-cri's advantage |\n| --- | ---: | ---: | ---: |\n");
        for f in &self.figures {
            md.push_str(&format!(
                "| {} | {:.2} {} | {:.2} {} | {:.1}x |\n",
                f.name, f.darwin_cri, f.unit, f.containerd, f.unit, f.advantage
            ));
        }
        if !self.skopeo.is_empty() {
            md.push_str("\n| beside skopeo | darwin-cri | skopeo | darwin-cri / skopeo |\n| --- | ---: | ---: | ---: |\n");
            for f in &self.skopeo {
                md.push_str(&format!(
                    "| {} | {:.2} {} | {:.2} {} | {:.2}x |\n",
                    f.name, f.darwin_cri, f.unit, f.containerd, f.unit, f.advantage
                ));
            }
        }
        md.push_str(
            "\n## Targets\n\n| target | measured | wanted | |\n| --- | ---: | ---: | --- |\n",
        );
        for t in self.targets() {
            md.push_str(&t);
            md.push('\n');
        }
        // Pull + unpack within 1.15x of skopeo's download time: a throughput ratio of 1/1.15.
        for f in &self.skopeo {
            let want = 1.0 / 1.15;
            md.push_str(&format!(
                "| pull + unpack within 1.15x of skopeo's download time | {:.2}x | {want:.2}x | {} |\n",
                f.advantage,
                if f.advantage >= want { "met" } else { "MISSED" }
            ));
        }
        md.push_str("\n![pod start latency](pod-start.svg)\n");
        std::fs::write(dir.join("results.md"), md)?;
        if let Err(e) = self.chart(&dir.join("pod-start.svg")) {
            eprintln!("no chart: {e}");
        }
        eprintln!("results in {}", dir.display());
        Ok(())
    }

    /// The cumulative distributions of pod-start latency, one line per runtime and mode.
    fn chart(&self, path: &Path) -> anyhow::Result<()> {
        use plotters::prelude::*;
        let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")?;
        let font: &'static [u8] = Box::leak(font.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, font)
            .map_err(|_| anyhow::anyhow!("the DejaVu font did not load"))?;
        let series: Vec<(String, Vec<f64>, RGBColor)> = [
            ("pod_start", 0, "darwin-cri", RGBColor(0, 114, 178)),
            ("pod_start", 1, "containerd", RGBColor(213, 94, 0)),
            (
                "pod_start_concurrent",
                0,
                "darwin-cri, 10 at once",
                RGBColor(86, 180, 233),
            ),
            (
                "pod_start_concurrent",
                1,
                "containerd, 10 at once",
                RGBColor(230, 159, 0),
            ),
        ]
        .iter()
        .filter_map(|(key, k, label, color)| {
            let mut v = self.samples.get(*key)?[*k].clone();
            v.sort_by(f64::total_cmp);
            Some((label.to_string(), v, *color))
        })
        .collect();
        let max = series
            .iter()
            .flat_map(|s| s.1.iter())
            .copied()
            .fold(1.0, f64::max)
            * 1.2;
        let min = series
            .iter()
            .flat_map(|s| s.1.iter())
            .copied()
            .fold(max, f64::min)
            * 0.8;
        let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "Pod start: RunPodSandbox + CreateContainer + StartContainer",
                ("sans-serif", 20),
            )
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d((min.max(0.01)..max).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction of pods started")
            .draw()?;
        for (label, v, color) in &series {
            let n = v.len() as f64;
            chart
                .draw_series(LineSeries::new(
                    v.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n)),
                    color.stroke_width(2),
                ))?
                .label(label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    }
}
