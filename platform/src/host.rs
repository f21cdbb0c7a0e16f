//! The host's facts (chip, memory, CPUs, OS version) for the node and doctor.

use super::*;

/// What the host is, for the image platform matcher, `darwin-cri doctor` and the node
/// reporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostFacts {
    /// "darwin" or "linux".
    pub os: String,
    /// Product version: "15.1" (macOS), "12" (Debian's VERSION_ID).
    pub os_version: String,
    /// Build: "24B83" (macOS), the kernel release elsewhere.
    pub os_build: String,
    /// "arm64" or "amd64".
    pub arch: String,
    /// The processor's marketing name: "Apple M2 Pro", "Intel(R) Xeon(R) ...".
    pub chip: String,
    pub memory_bytes: u64,
    pub cpus: u32,
}

/// The running host's facts; fields the OS does not tell are left empty.
pub fn host_facts() -> HostFacts {
    let mut facts = imp::host_facts();
    facts.arch = oci_arch().into();
    facts.cpus = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(0);
    facts
}

/// ProductVersion and ProductBuildVersion from the bytes of macOS's
/// /System/Library/CoreServices/SystemVersion.plist (XML or binary).
pub fn parse_system_version(bytes: &[u8]) -> Option<(String, String)> {
    let dict = plist::Value::from_reader(io::Cursor::new(bytes)).ok()?;
    let dict = dict.as_dictionary()?;
    let get = |k: &str| dict.get(k).and_then(|v| v.as_string()).map(str::to_string);
    Some((
        get("ProductVersion")?,
        get("ProductBuildVersion").unwrap_or_default(),
    ))
}

/// `VERSION_ID` (else `VERSION`) of an os-release(5) file.
pub fn parse_os_release(text: &str) -> Option<String> {
    let value = |key: &str| {
        text.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            Some(v.trim().trim_matches('"').to_string())
        })
    };
    value("VERSION_ID").or_else(|| value("VERSION"))
}
