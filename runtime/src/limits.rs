//! Resource limits without cgroups.
//!
//! macOS has no cgroups, so limits are enforced by each container's monitor over the
//! container's whole process tree: memory by measuring the tree's resident memory and killing it
//! past the limit (reported as OOMKilled, exit code 137); CPU by scheduling priority (nice, and
//! on macOS the background QoS class for the lowest tier); processes and open files by rlimits.
//! CPU and process-count limits are best effort: nice only orders processes that compete for a
//! CPU, and RLIMIT_NPROC counts all processes of the container's user, not of the container.
//!
//! Limits come from the Linux resources kubelet sends (a Linux kubelet), else from annotations
//! (a darwin kubelet sends none): on the pod, applying to each container, or suffixed with
//! `.<container name>` for one container:
//!
//! | annotation | value |
//! | --- | --- |
//! | `darwin-cri.io/memory-limit` | a Kubernetes quantity of bytes, e.g. `2Gi`, `512M` |
//! | `darwin-cri.io/cpu-limit` | a quantity of CPUs, e.g. `500m`, `2` (mapped to nice) |
//! | `darwin-cri.io/pids-limit` | a number of processes (RLIMIT_NPROC) |
//! | `darwin-cri.io/nofile-limit` | a number of open files (RLIMIT_NOFILE) |

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const MEMORY_ANNOTATION: &str = "darwin-cri.io/memory-limit";
pub const CPU_ANNOTATION: &str = "darwin-cri.io/cpu-limit";
pub const PIDS_ANNOTATION: &str = "darwin-cri.io/pids-limit";
pub const NOFILE_ANNOTATION: &str = "darwin-cri.io/nofile-limit";

/// The CPU and memory part of kubelet's LinuxContainerResources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxResources {
    pub cpu_period: i64,
    pub cpu_quota: i64,
    pub cpu_shares: i64,
    pub memory_limit_in_bytes: i64,
}

/// What the monitor enforces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    /// 0 (normal) to 19 (lowest priority).
    pub nice: i32,
    pub pids: Option<u64>,
    pub nofile: Option<u64>,
    /// The CPUs the limit came from, in millicores, for status reports.
    pub cpu_millis: Option<u64>,
}

/// Parses a Kubernetes quantity (`128Mi`, `1G`, `500m`, `1.5`, `2e3`) into thousandths of its
/// unit, so that CPU millicores and bytes share one parser.
pub fn parse_quantity_milli(s: &str) -> Option<u128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return None;
    }
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int = int.trim_start_matches('+');
    let mut milli: u128 = if int.is_empty() {
        0
    } else {
        int.parse::<u128>().ok()?.checked_mul(1000)?
    };
    for (i, d) in frac.chars().take(3).enumerate() {
        milli = milli.checked_add(u128::from(d.to_digit(10)?) * 10u128.pow(2 - i as u32))?;
    }
    if frac.chars().skip(3).any(|c| !c.is_ascii_digit()) {
        return None;
    }
    let scale_up = |m: u128, factor: u128| m.checked_mul(factor);
    match suffix {
        "" => Some(milli),
        "m" => Some(milli / 1000),
        "k" => scale_up(milli, 1_000),
        "M" => scale_up(milli, 1_000_000),
        "G" => scale_up(milli, 1_000_000_000),
        "T" => scale_up(milli, 1_000_000_000_000),
        "P" => scale_up(milli, 1_000_000_000_000_000),
        "Ki" => scale_up(milli, 1 << 10),
        "Mi" => scale_up(milli, 1 << 20),
        "Gi" => scale_up(milli, 1 << 30),
        "Ti" => scale_up(milli, 1 << 40),
        "Pi" => scale_up(milli, 1 << 50),
        e if e.starts_with(['e', 'E']) => {
            let exp: u32 = e[1..].parse().ok()?;
            scale_up(milli, 10u128.checked_pow(exp)?)
        }
        _ => None,
    }
}

/// A positive whole quantity (bytes, processes, files).
fn positive_count(key: &str, value: &str) -> Result<u64> {
    let milli = parse_quantity_milli(value).ok_or_else(|| {
        Error::InvalidArgument(format!("annotation {key}: {value:?} is not a quantity"))
    })?;
    let n = u64::try_from(milli / 1000).unwrap_or(u64::MAX);
    if n == 0 {
        return Err(Error::InvalidArgument(format!(
            "annotation {key}: {value:?} is not a positive limit"
        )));
    }
    Ok(n)
}

/// Nice for a CPU allowance in millicores: a full CPU or more runs at normal priority, every
/// halving below it lowers the priority by 4 (500m: 4, 250m: 8, 100m: 13), down to 19.
pub fn nice_for_cpu_millis(millis: u64) -> i32 {
    if millis >= 1000 || millis == 0 {
        return 0;
    }
    let halvings = (1000.0 / millis as f64).log2();
    ((halvings * 4.0).round() as i32).clamp(0, 19)
}

/// kubelet's cpu shares are 1024 per CPU requested (2 for BestEffort pods).
fn shares_to_millis(shares: i64) -> u64 {
    (shares.max(2) as u64).saturating_mul(1000) / 1024
}

fn annotation<'a>(
    container: &str,
    maps: &[&'a BTreeMap<String, String>],
    key: &str,
) -> Option<(String, &'a str)> {
    let specific = format!("{key}.{container}");
    for m in maps {
        if let Some(v) = m.get(&specific) {
            return Some((specific, v.as_str()));
        }
    }
    maps.iter()
        .find_map(|m| m.get(key).map(|v| (key.to_string(), v.as_str())))
}

/// Limits for a container from kubelet's Linux resources, else its annotations, else the pod's.
pub fn resolve(
    container: &str,
    linux: Option<&LinuxResources>,
    container_annotations: &BTreeMap<String, String>,
    pod_annotations: &BTreeMap<String, String>,
) -> Result<Limits> {
    let maps = [container_annotations, pod_annotations];
    let mut limits = Limits::default();
    if let Some((k, v)) = annotation(container, &maps, MEMORY_ANNOTATION) {
        limits.memory_bytes = Some(positive_count(&k, v)?);
    }
    if let Some((k, v)) = annotation(container, &maps, CPU_ANNOTATION) {
        let millis = parse_quantity_milli(v)
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "annotation {k}: {v:?} is not a positive CPU quantity"
                ))
            })?;
        limits.cpu_millis = Some(millis);
    }
    if let Some((k, v)) = annotation(container, &maps, PIDS_ANNOTATION) {
        limits.pids = Some(positive_count(&k, v)?);
    }
    if let Some((k, v)) = annotation(container, &maps, NOFILE_ANNOTATION) {
        limits.nofile = Some(positive_count(&k, v)?);
    }
    if let Some(r) = linux {
        apply_linux(&mut limits, r)?;
    }
    limits.nice = limits.cpu_millis.map(nice_for_cpu_millis).unwrap_or(0);
    Ok(limits)
}

/// Overlays kubelet's Linux resources (which win over annotations). Zero means "no limit" in
/// kubelet's encoding; negative values make no sense.
pub fn apply_linux(limits: &mut Limits, r: &LinuxResources) -> Result<()> {
    if r.memory_limit_in_bytes < 0 || r.cpu_shares < 0 || r.cpu_period < 0 || r.cpu_quota < -1 {
        return Err(Error::InvalidArgument(format!(
            "negative resource limits are invalid: memory {} cpu shares {} period {} quota {}",
            r.memory_limit_in_bytes, r.cpu_shares, r.cpu_period, r.cpu_quota
        )));
    }
    if r.memory_limit_in_bytes > 0 {
        limits.memory_bytes = Some(r.memory_limit_in_bytes as u64);
    }
    let from_quota = (r.cpu_quota > 0 && r.cpu_period > 0)
        .then(|| (r.cpu_quota as u64).saturating_mul(1000) / r.cpu_period as u64);
    let from_shares = (r.cpu_shares > 0).then(|| shares_to_millis(r.cpu_shares));
    // The smaller allowance decides: a quota caps a container however many shares it has.
    let millis = match (from_quota, from_shares) {
        (Some(q), Some(s)) => Some(q.min(s)),
        (q, s) => q.or(s),
    };
    if millis.is_some() {
        limits.cpu_millis = millis;
    }
    limits.nice = limits.cpu_millis.map(nice_for_cpu_millis).unwrap_or(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(
            parse_quantity_milli("128Mi"),
            Some(128 * 1024 * 1024 * 1000)
        );
        assert_eq!(parse_quantity_milli("1G"), Some(1_000_000_000_000));
        assert_eq!(parse_quantity_milli("500m"), Some(500));
        assert_eq!(parse_quantity_milli("1.5"), Some(1500));
        assert_eq!(parse_quantity_milli("2e3"), Some(2_000_000));
        assert_eq!(parse_quantity_milli("0.25Gi"), Some((1u128 << 30) * 250));
        for bad in [
            "",
            "abc",
            "12Q",
            "-5",
            "1..2",
            ".",
            "999999999999999999999999999999999999999",
        ] {
            assert_eq!(parse_quantity_milli(bad), None, "{bad}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        let r = LinuxResources {
            cpu_shares: i64::MAX,
            cpu_quota: i64::MAX,
            cpu_period: 1,
            memory_limit_in_bytes: i64::MAX,
        };
        let l = resolve("c", Some(&r), &BTreeMap::new(), &BTreeMap::new()).expect("limits");
        assert_eq!((l.nice, l.memory_bytes), (0, Some(i64::MAX as u64)));
    }

    #[test]
    fn nice_mapping() {
        assert_eq!(nice_for_cpu_millis(2000), 0);
        assert_eq!(nice_for_cpu_millis(1000), 0);
        assert_eq!(nice_for_cpu_millis(500), 4);
        assert_eq!(nice_for_cpu_millis(250), 8);
        assert_eq!(nice_for_cpu_millis(100), 13);
        assert_eq!(nice_for_cpu_millis(1), 19);
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn annotations_pod_wide_and_per_container() {
        let pod = map(&[
            (MEMORY_ANNOTATION, "1Gi"),
            ("darwin-cri.io/memory-limit.build", "64Mi"),
            (CPU_ANNOTATION, "250m"),
        ]);
        let l = resolve("build", None, &BTreeMap::new(), &pod).expect("limits");
        assert_eq!(l.memory_bytes, Some(64 << 20));
        assert_eq!((l.cpu_millis, l.nice), (Some(250), 8));
        let l = resolve("other", None, &BTreeMap::new(), &pod).expect("limits");
        assert_eq!(l.memory_bytes, Some(1 << 30));
    }

    #[test]
    fn linux_resources_win_and_zero_means_unlimited() {
        let pod = map(&[(MEMORY_ANNOTATION, "1Gi")]);
        let r = LinuxResources {
            memory_limit_in_bytes: 100 << 20,
            cpu_shares: 512,
            cpu_quota: 0,
            cpu_period: 100_000,
        };
        let l = resolve("c", Some(&r), &BTreeMap::new(), &pod).expect("limits");
        assert_eq!(
            (l.memory_bytes, l.cpu_millis, l.nice),
            (Some(100 << 20), Some(500), 4)
        );
        let unlimited = LinuxResources {
            cpu_shares: 2,
            ..Default::default()
        };
        let l = resolve("c", Some(&unlimited), &BTreeMap::new(), &BTreeMap::new()).expect("limits");
        assert_eq!(
            (l.memory_bytes, l.nice),
            (None, 19),
            "BestEffort: lowest priority"
        );
    }

    #[test]
    fn nonsense_is_refused_naming_the_annotation() {
        for (k, v) in [
            (MEMORY_ANNOTATION, "0"),
            (MEMORY_ANNOTATION, "lots"),
            (CPU_ANNOTATION, "0"),
            (PIDS_ANNOTATION, "-3"),
        ] {
            let err = resolve("c", None, &map(&[(k, v)]), &BTreeMap::new()).expect_err("refused");
            assert!(
                matches!(&err, Error::InvalidArgument(m) if m.contains(k)),
                "{err}"
            );
        }
        let negative = LinuxResources {
            memory_limit_in_bytes: -1,
            ..Default::default()
        };
        assert!(matches!(
            resolve("c", Some(&negative), &BTreeMap::new(), &BTreeMap::new()),
            Err(Error::InvalidArgument(_))
        ));
    }
}
