//! What a Mac offers builds, as Node labels under `darwin-cri.io/`: the macOS version and build,
//! the architecture and chip, each installed Xcode and the selected one, and the installed
//! simulator runtimes. `node-report` (the `kube` feature) puts them on the Node; this part
//! reads the host and is tested with fixture trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use platform::HostFacts;

/// The prefix of every label darwin-cri owns (and only those are ever changed or removed).
pub const PREFIX: &str = "darwin-cri.io/";

/// One Xcode bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xcode {
    pub path: PathBuf,
    /// CFBundleShortVersionString: "16.1".
    pub version: String,
}

/// What is installed for builds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub xcodes: Vec<Xcode>,
    /// The version of the Xcode `xcode-select` points at, if it is one of `xcodes`.
    pub selected: Option<String>,
    /// Simulator runtimes by name: "iOS 18.1", "watchOS 11.1".
    pub simulator_runtimes: Vec<String>,
    /// What was skipped, and why (a malformed Info.plist, say).
    pub warnings: Vec<String>,
}

/// Where to look: /Applications, the xcode-select link, and the simulator runtime directories.
#[derive(Debug, Clone)]
pub struct Places {
    pub applications: PathBuf,
    pub xcode_select_link: PathBuf,
    pub simulator_runtimes: Vec<PathBuf>,
}

impl Places {
    pub fn from_config(node: &crate::config::NodeConfig) -> Places {
        Places {
            applications: node.applications_dir.clone(),
            xcode_select_link: node.xcode_select_link.clone(),
            simulator_runtimes: vec![
                node.simulator_runtimes_dir.clone(),
                "/Library/Developer/CoreSimulator/Profiles/Runtimes".into(),
            ],
        }
    }
}

/// Reads every `Xcode*.app` under `applications`, the selected one, and the simulator runtimes.
pub fn inventory(places: &Places) -> Inventory {
    let mut inv = Inventory::default();
    let mut apps: Vec<PathBuf> = std::fs::read_dir(&places.applications)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    name.starts_with("Xcode") && name.ends_with(".app")
                })
                .collect()
        })
        .unwrap_or_default();
    apps.sort();
    for app in apps {
        let info = app.join("Contents/Info.plist");
        match bundle_string(&info, "CFBundleShortVersionString") {
            Ok(version) => inv.xcodes.push(Xcode { path: app, version }),
            Err(e) => inv
                .warnings
                .push(format!("skipping {}: {e}", app.display())),
        }
    }
    // xcode-select stores its choice as a link to <Xcode>.app/Contents/Developer.
    if let Ok(target) = std::fs::read_link(&places.xcode_select_link) {
        let target = if target.is_relative() {
            places
                .xcode_select_link
                .parent()
                .unwrap_or(Path::new("/"))
                .join(target)
        } else {
            target
        };
        inv.selected = inv
            .xcodes
            .iter()
            .find(|x| target.starts_with(&x.path))
            .map(|x| x.version.clone());
    }
    for dir in &places.simulator_runtimes {
        find_simruntimes(dir, 7, &mut inv.simulator_runtimes);
    }
    inv.simulator_runtimes.sort();
    inv.simulator_runtimes.dedup();
    inv
}

fn bundle_string(info: &Path, key: &str) -> Result<String, String> {
    let value = plist::Value::from_file(info).map_err(|e| format!("{}: {e}", info.display()))?;
    value
        .as_dictionary()
        .and_then(|d| d.get(key))
        .and_then(|v| v.as_string())
        .map(str::to_string)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| format!("{} has no {key}", info.display()))
}

/// `*.simruntime` bundles up to `depth` levels below `dir` (the runtime disk images mount as
/// `Volumes/<name>/Library/Developer/CoreSimulator/Profiles/Runtimes/iOS 18.1.simruntime`).
fn find_simruntimes(dir: &Path, depth: u32, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(runtime) = name.strip_suffix(".simruntime") {
            let bundle = bundle_string(&path.join("Contents/Info.plist"), "CFBundleName").ok();
            out.push(bundle.unwrap_or_else(|| runtime.to_string()));
        } else if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
            find_simruntimes(&path, depth - 1, out);
        }
    }
}

/// A valid label value (or, lowercased, name segment): at most 63 characters of
/// `[a-zA-Z0-9-_.]`, beginning and ending with an alphanumeric; other characters become '-';
/// empty if nothing is left.
pub fn sanitize(s: &str, lowercase: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        let c = if lowercase { c.to_ascii_lowercase() } else { c };
        let keep = c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-';
        let c = if keep { c } else { '-' };
        if c == '-' && out.ends_with('-') {
            continue;
        }
        out.push(c);
    }
    let trim = |s: &str| {
        s.trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_string()
    };
    let mut out = trim(&out);
    if out.len() > 63 {
        out.truncate(63);
        out = trim(&out);
    }
    out
}

/// The labels for this host and inventory, every one under [`PREFIX`], names and values valid.
pub fn labels(host: &HostFacts, inv: &Inventory) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |name: &str, value: &str| {
        let (name, value) = (sanitize(name, true), sanitize(value, false));
        if !name.is_empty() && !value.is_empty() {
            labels.insert(format!("{PREFIX}{name}"), value);
        }
    };
    put("macos-version", &host.os_version);
    put("macos-build", &host.os_build);
    put("arch", &host.arch);
    put("chip", &host.chip);
    for x in &inv.xcodes {
        put(&format!("xcode-{}", x.version), "true");
    }
    if let Some(v) = &inv.selected {
        put("xcode-selected", v);
    }
    for r in &inv.simulator_runtimes {
        put(&format!("simruntime-{r}"), "true");
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_plist(version_key: &str, version: &str) -> String {
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0"><dict>
<key>CFBundleIdentifier</key><string>com.apple.dt.Xcode</string>
<key>{version_key}</key><string>{version}</string>
</dict></plist>"#
        )
    }

    /// /Applications with three Xcodes (one with a broken Info.plist), xcode-select pointing at
    /// one, and simulator runtimes in both places they live.
    fn fixture(dir: &Path) -> Places {
        let apps = dir.join("Applications");
        for (app, plist) in [
            (
                "Xcode.app",
                info_plist("CFBundleShortVersionString", "16.1"),
            ),
            (
                "Xcode_15.4.app",
                info_plist("CFBundleShortVersionString", "15.4"),
            ),
            ("Xcode-beta.app", "<plist><dict><key>oops".to_string()),
            (
                "Safari.app",
                info_plist("CFBundleShortVersionString", "18.0"),
            ),
        ] {
            std::fs::create_dir_all(apps.join(app).join("Contents/Developer")).expect("mkdir");
            std::fs::write(apps.join(app).join("Contents/Info.plist"), plist).expect("write");
        }
        let link = dir.join("xcode_select_link");
        std::os::unix::fs::symlink(apps.join("Xcode.app/Contents/Developer"), &link)
            .expect("symlink");
        let volumes = dir.join("Volumes");
        let runtimes = volumes.join("iOS_22B81/Library/Developer/CoreSimulator/Profiles/Runtimes");
        std::fs::create_dir_all(runtimes.join("iOS 18.1.simruntime/Contents")).expect("mkdir");
        std::fs::write(
            runtimes.join("iOS 18.1.simruntime/Contents/Info.plist"),
            info_plist("CFBundleName", "iOS 18.1"),
        )
        .expect("write");
        let profiles = dir.join("Profiles/Runtimes");
        std::fs::create_dir_all(profiles.join("watchOS 11.1.simruntime")).expect("mkdir");
        Places {
            applications: apps,
            xcode_select_link: link,
            simulator_runtimes: vec![volumes, profiles],
        }
    }

    #[test]
    fn xcodes_simulators_and_the_selected_xcode_become_labels() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inv = inventory(&fixture(dir.path()));
        let versions: Vec<&str> = inv.xcodes.iter().map(|x| x.version.as_str()).collect();
        assert_eq!(versions, ["16.1", "15.4"]);
        assert_eq!(inv.selected.as_deref(), Some("16.1"));
        assert_eq!(inv.simulator_runtimes, ["iOS 18.1", "watchOS 11.1"]);
        assert_eq!(inv.warnings.len(), 1, "{:?}", inv.warnings);
        assert!(
            inv.warnings[0].contains("Xcode-beta.app"),
            "{:?}",
            inv.warnings
        );

        let host = HostFacts {
            os: "darwin".into(),
            os_version: "15.1".into(),
            os_build: "24B83".into(),
            arch: "arm64".into(),
            chip: "Apple M2 Pro".into(),
            memory_bytes: 32 << 30,
            cpus: 12,
        };
        let labels = labels(&host, &inv);
        let expected: BTreeMap<String, String> = [
            ("macos-version", "15.1"),
            ("macos-build", "24B83"),
            ("arch", "arm64"),
            ("chip", "Apple-M2-Pro"),
            ("xcode-16.1", "true"),
            ("xcode-15.4", "true"),
            ("xcode-selected", "16.1"),
            ("simruntime-ios-18.1", "true"),
            ("simruntime-watchos-11.1", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.to_string()))
        .collect();
        assert_eq!(labels, expected);
    }

    #[test]
    fn label_syntax_is_sanitised() {
        assert_eq!(sanitize("Apple M2 Pro", true), "apple-m2-pro");
        assert_eq!(sanitize("Apple M2 Pro", false), "Apple-M2-Pro");
        assert_eq!(
            sanitize("Intel(R) Xeon(R) CPU @ 2.20GHz", false),
            "Intel-R-Xeon-R-CPU-2.20GHz"
        );
        assert_eq!(sanitize("  --16.1 beta 2!! ", true), "16.1-beta-2");
        assert_eq!(sanitize("ß/é", true), "");
        let long = sanitize(&"a-".repeat(60), true);
        assert!(long.len() <= 63 && long.ends_with('a'), "{long}");
        for s in ["x", "16.1", "a_b.c-d"] {
            assert_eq!(sanitize(s, true), s);
        }
    }

    #[test]
    fn nothing_installed_is_no_labels_and_no_warnings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let places = Places {
            applications: dir.path().join("none"),
            xcode_select_link: dir.path().join("none"),
            simulator_runtimes: vec![dir.path().join("none")],
        };
        let inv = inventory(&places);
        assert_eq!(inv, Inventory::default());
        let labels = labels(&HostFacts::default(), &inv);
        assert!(labels.is_empty(), "{labels:?}");
    }
}
