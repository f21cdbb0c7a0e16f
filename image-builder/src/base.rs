//! `image base`: a base image made of the host's own files.
//!
//! The chosen programs, and everything they load that the image needs to run them:
//! - Linux (the twin the tests run): the ELF interpreter (`PT_INTERP`) and the `DT_NEEDED`
//!   closure, resolved as ld.so does it (`DT_RPATH` when there is no `DT_RUNPATH`, then
//!   `DT_RUNPATH`, with `$ORIGIN`; then the directories of /etc/ld.so.conf in order, then the
//!   default ones). ld.so.cache is not read: its entries are the configured directories' files.
//! - macOS: `/usr/lib/dyld`, the dyld shared cache (where the release keeps it), and every
//!   library in `LC_LOAD_DYLIB` & co. that is a file on disk (`@rpath`, `@loader_path` and
//!   `@executable_path` resolved); system libraries live only in the shared cache, so a library
//!   named under /usr/lib or /System that is not on disk is the cache's. Universal binaries are
//!   read for the host's architecture. Unproven on a Mac: the reading is tested on Mach-O files
//!   built here with clang and ld64.lld.
//!
//! Every symlink on the way to a file is kept as a symlink, so the image has the host's layout
//! (Debian's /bin → usr/bin, the loader's chain of links). Files are owned by root in the image;
//! the home of the build user, the image's USER, is the user's. With fixed mtimes (the default)
//! the same files give the same image id.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::macho::{FatArch, MachHeader};
use serde_json::json;

use image_service::layer::TarOptions;
use image_service::{Error, Image, ImageStore, NewImage, NewLayer, Result};
use platform::IoContext;

/// What an ELF object asks of the loader.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfNeeds {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
}

/// What a Mach-O image asks of dyld.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachONeeds {
    /// Install names of the libraries it loads (`LC_LOAD_DYLIB`, weak, re-exported, upward).
    pub dylibs: Vec<String>,
    /// `LC_RPATH` entries.
    pub rpaths: Vec<String>,
}

/// What an executable file needs, by its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Needs {
    Elf(ElfNeeds),
    MachO(MachONeeds),
    /// A script or data: only its own bytes (a `#!` interpreter is the caller's choice).
    None,
}

fn bad(what: &str, e: impl std::fmt::Display) -> Error {
    Error::InvalidLayout(format!("{what}: {e}"))
}

fn split_paths(s: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(s)
        .split(':')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn elf_needs<Elf: FileHeader<Endian = object::Endianness>>(data: &[u8]) -> Result<ElfNeeds> {
    let file = object::read::elf::ElfFile::<Elf>::parse(data).map_err(|e| bad("ELF", e))?;
    let endian = file.endian();
    let mut out = ElfNeeds::default();
    for ph in file.elf_program_headers() {
        if let Some(interp) = ph
            .interpreter(endian, data)
            .map_err(|e| bad("ELF interpreter", e))?
        {
            out.interpreter = Some(String::from_utf8_lossy(interp).into_owned());
        }
    }
    let sections = file.elf_section_table();
    if let Some((dynamic, strings_index)) = sections
        .dynamic(endian, data)
        .map_err(|e| bad("ELF dynamic section", e))?
    {
        let strings = sections
            .strings(endian, data, strings_index)
            .map_err(|e| bad("ELF dynamic strings", e))?;
        for d in dynamic {
            let tag: i64 = d.d_tag(endian).into();
            let value: u64 = d.d_val(endian).into();
            let text = || -> Result<Vec<u8>> {
                let offset = u32::try_from(value).map_err(|e| bad("ELF string offset", e))?;
                Ok(strings
                    .get(offset)
                    .map_err(|()| bad("ELF string", "offset out of the table"))?
                    .to_vec())
            };
            if tag == object::elf::DT_NEEDED {
                out.needed
                    .push(String::from_utf8_lossy(&text()?).into_owned());
            } else if tag == object::elf::DT_RPATH {
                out.rpath.extend(split_paths(&text()?));
            } else if tag == object::elf::DT_RUNPATH {
                out.runpath.extend(split_paths(&text()?));
            }
        }
    }
    Ok(out)
}

fn macho_needs<Mach: MachHeader<Endian = object::Endianness>>(data: &[u8]) -> Result<MachONeeds> {
    let header = Mach::parse(data, 0).map_err(|e| bad("Mach-O", e))?;
    let endian = header.endian().map_err(|e| bad("Mach-O", e))?;
    let mut commands = header
        .load_commands(endian, data, 0)
        .map_err(|e| bad("Mach-O load commands", e))?;
    let mut out = MachONeeds::default();
    while let Some(command) = commands.next().map_err(|e| bad("Mach-O load command", e))? {
        match command
            .variant()
            .map_err(|e| bad("Mach-O load command", e))?
        {
            object::read::macho::LoadCommandVariant::Dylib(d) => {
                let name = command
                    .string(endian, d.dylib.name)
                    .map_err(|e| bad("Mach-O dylib name", e))?;
                out.dylibs.push(String::from_utf8_lossy(name).into_owned());
            }
            object::read::macho::LoadCommandVariant::Rpath(r) => {
                let path = command
                    .string(endian, r.path)
                    .map_err(|e| bad("Mach-O rpath", e))?;
                out.rpaths.push(String::from_utf8_lossy(path).into_owned());
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The host's Mach-O architecture, to pick a slice of a universal binary.
fn host_architecture() -> object::Architecture {
    match std::env::consts::ARCH {
        "aarch64" => object::Architecture::Aarch64,
        _ => object::Architecture::X86_64,
    }
}

/// What the executable file `data` needs. Malformed input is an error, never a panic.
pub fn needs(data: &[u8]) -> Result<Needs> {
    use object::FileKind;
    match FileKind::parse(data) {
        Ok(FileKind::Elf64) => Ok(Needs::Elf(elf_needs::<
            object::elf::FileHeader64<object::Endianness>,
        >(data)?)),
        Ok(FileKind::Elf32) => Ok(Needs::Elf(elf_needs::<
            object::elf::FileHeader32<object::Endianness>,
        >(data)?)),
        Ok(FileKind::MachO64) => Ok(Needs::MachO(macho_needs::<
            object::macho::MachHeader64<object::Endianness>,
        >(data)?)),
        Ok(FileKind::MachO32) => Ok(Needs::MachO(macho_needs::<
            object::macho::MachHeader32<object::Endianness>,
        >(data)?)),
        Ok(FileKind::MachOFat32) => {
            let fat = object::read::macho::MachOFatFile32::parse(data)
                .map_err(|e| bad("universal binary", e))?;
            fat_slice(data, fat.arches())
        }
        Ok(FileKind::MachOFat64) => {
            let fat = object::read::macho::MachOFatFile64::parse(data)
                .map_err(|e| bad("universal binary", e))?;
            fat_slice(data, fat.arches())
        }
        _ => Ok(Needs::None),
    }
}

fn fat_slice<A: FatArch>(data: &[u8], arches: &[A]) -> Result<Needs> {
    let wanted = host_architecture();
    let arch = arches
        .iter()
        .find(|a| a.architecture() == wanted)
        .ok_or_else(|| bad("universal binary", format!("no {wanted:?} slice")))?;
    let slice = arch.data(data).map_err(|e| bad("universal binary", e))?;
    needs(slice)
}

/// What goes into a base image: host paths and what they are.
#[derive(Debug, Default)]
pub struct FileSet {
    /// Absolute host path → whether it is a symlink (kept as one) or a file / directory tree.
    entries: BTreeMap<PathBuf, Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Link,
    File,
    Tree,
}

impl FileSet {
    /// The paths in the set, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.entries.keys().map(PathBuf::as_path)
    }

    /// Adds `path` as the host has it: each symlink on the way is kept and followed.
    /// Returns the real path it leads to.
    pub fn add(&mut self, path: &Path, tree: bool) -> Result<PathBuf> {
        self.add_depth(path, tree, 0)
    }

    fn add_depth(&mut self, path: &Path, tree: bool, depth: u32) -> Result<PathBuf> {
        if depth > 40 {
            return Err(Error::InvalidLayout(format!(
                "{}: too many symlinks",
                path.display()
            )));
        }
        let mut cur = PathBuf::from("/");
        let components: Vec<Component> = path.components().collect();
        for (i, c) in components.iter().enumerate() {
            match c {
                Component::RootDir | Component::CurDir => continue,
                Component::ParentDir => {
                    cur.pop();
                    continue;
                }
                Component::Normal(n) => cur.push(n),
                Component::Prefix(_) => continue,
            }
            let meta = fs::symlink_metadata(&cur).ctx(|| format!("stat {}", cur.display()))?;
            if meta.file_type().is_symlink() {
                self.entries.insert(cur.clone(), Entry::Link);
                let target = fs::read_link(&cur).ctx(|| format!("readlink {}", cur.display()))?;
                let parent = cur.parent().unwrap_or(Path::new("/")).to_path_buf();
                let mut next = if target.is_absolute() {
                    target
                } else {
                    parent.join(target)
                };
                for rest in &components[i + 1..] {
                    next.push(rest);
                }
                return self.add_depth(&next, tree, depth + 1);
            }
        }
        let kind = if tree { Entry::Tree } else { Entry::File };
        let old = self.entries.insert(cur.clone(), kind);
        if old == Some(Entry::Tree) {
            self.entries.insert(cur.clone(), Entry::Tree);
        }
        Ok(cur)
    }
}

/// The library directories of the host's ld.so, in its order (after DT_RPATH/DT_RUNPATH).
fn ld_so_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/ld.so.conf.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    for f in files {
        for line in fs::read_to_string(&f).unwrap_or_default().lines() {
            let l = line.trim();
            if l.starts_with('/') {
                dirs.push(PathBuf::from(l));
            }
        }
    }
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        dirs.push(PathBuf::from(d));
    }
    dirs
}

/// Adds `program` and every file it loads, recursively.
pub fn add_program(set: &mut FileSet, program: &Path) -> Result<()> {
    let mut seen = BTreeSet::new();
    let ld_dirs = ld_so_dirs();
    add_object(set, program, program, &ld_dirs, &mut seen, &[])
}

fn expand_origin(entry: &str, dir: &Path) -> PathBuf {
    PathBuf::from(
        entry
            .replace("$ORIGIN", &dir.display().to_string())
            .replace("${ORIGIN}", &dir.display().to_string()),
    )
}

fn add_object(
    set: &mut FileSet,
    path: &Path,
    executable: &Path,
    ld_dirs: &[PathBuf],
    seen: &mut BTreeSet<PathBuf>,
    inherited_rpaths: &[PathBuf],
) -> Result<()> {
    let real = set.add(path, false)?;
    if !seen.insert(real.clone()) {
        return Ok(());
    }
    let data = fs::read(&real).ctx(|| format!("read {}", real.display()))?;
    let dir = real.parent().unwrap_or(Path::new("/")).to_path_buf();
    match needs(&data)? {
        Needs::None => Ok(()),
        Needs::Elf(n) => {
            if let Some(interp) = &n.interpreter {
                add_object(set, Path::new(interp), executable, ld_dirs, seen, &[])?;
            }
            // DT_RPATH counts only without DT_RUNPATH; DT_RUNPATH only for this object's own
            // needs (ld.so's rules).
            let mut search: Vec<PathBuf> = Vec::new();
            if n.runpath.is_empty() {
                search.extend(n.rpath.iter().map(|r| expand_origin(r, &dir)));
                search.extend(inherited_rpaths.iter().cloned());
            }
            search.extend(n.runpath.iter().map(|r| expand_origin(r, &dir)));
            search.extend(ld_dirs.iter().cloned());
            let passed: Vec<PathBuf> = if n.runpath.is_empty() {
                n.rpath
                    .iter()
                    .map(|r| expand_origin(r, &dir))
                    .chain(inherited_rpaths.iter().cloned())
                    .collect()
            } else {
                Vec::new()
            };
            for lib in &n.needed {
                let found = if lib.contains('/') {
                    Some(PathBuf::from(lib))
                } else {
                    search.iter().map(|d| d.join(lib)).find(|p| p.exists())
                };
                let Some(found) = found else {
                    return Err(Error::NotFound(format!(
                        "{} needs {lib}, which ld.so would not find",
                        real.display()
                    )));
                };
                add_object(set, &found, executable, ld_dirs, seen, &passed)?;
            }
            Ok(())
        }
        Needs::MachO(n) => {
            let exe_dir = executable.parent().unwrap_or(Path::new("/"));
            let mut rpaths: Vec<PathBuf> = inherited_rpaths.to_vec();
            for r in &n.rpaths {
                rpaths.push(macho_path(r, &dir, exe_dir));
            }
            for lib in &n.dylibs {
                let candidates: Vec<PathBuf> = match lib.strip_prefix("@rpath/") {
                    Some(rest) => rpaths.iter().map(|r| r.join(rest)).collect(),
                    None => vec![macho_path(lib, &dir, exe_dir)],
                };
                match candidates.into_iter().find(|p| p.exists()) {
                    Some(p) => add_object(set, &p, executable, ld_dirs, seen, &rpaths)?,
                    // System libraries live only in the shared cache, which the image carries.
                    None if lib.starts_with("/usr/lib/") || lib.starts_with("/System/") => {}
                    None => {
                        return Err(Error::NotFound(format!(
                            "{} loads {lib}, which is neither on disk nor a system library",
                            real.display()
                        )));
                    }
                }
            }
            Ok(())
        }
    }
}

fn macho_path(name: &str, loader_dir: &Path, exe_dir: &Path) -> PathBuf {
    if let Some(rest) = name.strip_prefix("@loader_path") {
        loader_dir.join(rest.trim_start_matches('/'))
    } else if let Some(rest) = name.strip_prefix("@executable_path") {
        exe_dir.join(rest.trim_start_matches('/'))
    } else {
        PathBuf::from(name)
    }
}

/// The programs a base image has unless told otherwise: a shell and the usual tools.
pub const DEFAULT_PROGRAMS: &[&str] = &[
    "sh", "bash", "ls", "cat", "cp", "mv", "rm", "mkdir", "rmdir", "ln", "chmod", "chown", "echo",
    "env", "grep", "sed", "tar", "gzip", "find", "xargs", "head", "tail", "sort", "uniq", "wc",
    "touch", "date", "id", "uname", "sleep", "true", "false", "test", "tr", "cut", "basename",
    "dirname", "stat", "tee", "printf", "readlink", "realpath", "mktemp", "du", "df",
];

/// Where dyld's shared cache lives: the cryptex from macOS 13, /System/Library/dyld before.
pub const SHARED_CACHE_DIRS: &[&str] = &[
    "/System/Volumes/Preboot/Cryptexes/OS/System/Library/dyld",
    "/System/Library/dyld",
];

/// How `image base` is asked.
#[derive(Debug, Clone)]
pub struct BaseOptions {
    pub name: String,
    /// Programs by name (looked up on /usr/bin and /bin) or path; empty: [`DEFAULT_PROGRAMS`].
    pub programs: Vec<String>,
    /// Files or directory trees added as they are.
    pub add: Vec<PathBuf>,
    /// The build user: name, uid, gid, home.
    pub user: (String, u32, u32, String),
    /// Keep the files' mtimes (else 0: reproducible).
    pub keep_mtimes: bool,
    pub compression: image_service::Compression,
}

/// The programs found, and those not found (reported, not fatal for the default list).
pub fn find_programs(names: &[String]) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for n in names {
        if n.contains('/') {
            found.push(PathBuf::from(n));
            continue;
        }
        match ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .map(|d| Path::new(d).join(n))
            .find(|p| p.is_file())
        {
            Some(p) => found.push(p),
            None => missing.push(n.clone()),
        }
    }
    (found, missing)
}

/// The host's macOS version (SystemVersion.plist's ProductVersion), or "".
fn macos_version() -> String {
    let plist = Path::new("/System/Library/CoreServices/SystemVersion.plist");
    let text = fs::read_to_string(plist).unwrap_or_default();
    text.split("<key>ProductVersion</key>")
        .nth(1)
        .and_then(|rest| rest.split("<string>").nth(1))
        .and_then(|rest| rest.split("</string>").next())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Makes the base image: one layer of the host's files plus a generated /etc, recorded in the
/// store under `opts.name`.
pub fn make_base(store: &ImageStore, opts: &BaseOptions) -> Result<(Image, Vec<String>)> {
    let names: Vec<String> = if opts.programs.is_empty() {
        DEFAULT_PROGRAMS.iter().map(|s| s.to_string()).collect()
    } else {
        opts.programs.clone()
    };
    let (programs, missing) = find_programs(&names);
    if !opts.programs.is_empty() && !missing.is_empty() {
        return Err(Error::NotFound(format!(
            "programs not found: {}",
            missing.join(", ")
        )));
    }
    let mut set = FileSet::default();
    for p in &programs {
        add_program(&mut set, p)?;
    }
    // The host's top-level links (a merged /usr's /bin → usr/bin): scripts name /bin/sh.
    for top in ["/bin", "/sbin", "/lib", "/lib64"] {
        if fs::symlink_metadata(top).is_ok_and(|m| m.file_type().is_symlink()) {
            set.add(Path::new(top), false)?;
        }
    }
    let macos = platform::OS == platform::Os::MacOs;
    if macos {
        set.add(Path::new("/usr/lib/dyld"), false)?;
        let cache = SHARED_CACHE_DIRS
            .iter()
            .find(|d| Path::new(d).is_dir())
            .ok_or_else(|| Error::NotFound("the dyld shared cache".to_string()))?;
        set.add(Path::new(cache), true)?;
        set.add(
            Path::new("/System/Library/CoreServices/SystemVersion.plist"),
            false,
        )?;
    }
    for a in &opts.add {
        let meta = fs::symlink_metadata(a).ctx(|| format!("stat {}", a.display()))?;
        set.add(a, meta.is_dir())?;
    }

    let _hold = store.hold()?;
    let staging = store.new_work_dir()?;
    let result = (|| {
        let (user, uid, gid, home) = &opts.user;
        let etc = staging.join("etc");
        fs::create_dir_all(&etc).ctx(|| format!("create {}", etc.display()))?;
        let shell = if programs.iter().any(|p| p.ends_with("bash")) {
            "/bin/bash"
        } else {
            "/bin/sh"
        };
        let root_home = if macos { "/var/root" } else { "/root" };
        fs::write(
            etc.join("passwd"),
            format!(
                "root:x:0:0:root:{root_home}:{shell}\n{user}:x:{uid}:{gid}:{user}:{home}:{shell}\n"
            ),
        )
        .ctx(|| "write passwd".to_string())?;
        let group_name = if macos { "staff" } else { user.as_str() };
        fs::write(
            etc.join("group"),
            format!("root:x:0:\n{group_name}:x:{gid}:{user}\n"),
        )
        .ctx(|| "write group".to_string())?;
        let home_dir = staging.join("home");
        fs::create_dir_all(&home_dir).ctx(|| "create home".to_string())?;

        let tar_opts = TarOptions {
            fixed_mtime: (!opts.keep_mtimes).then_some(0),
            owner: Some((0, 0)),
        };
        let mut w = store.layer_writer(opts.compression, tar_opts)?;
        // Every entry with its parent directories first, sorted, each once.
        let mut written: BTreeSet<PathBuf> = BTreeSet::new();
        let staging_home = staging.join("home");
        let parents = |w: &mut image_service::layer::LayerWriter,
                       written: &mut BTreeSet<PathBuf>,
                       rel: &Path,
                       host: bool|
         -> Result<()> {
            let mut acc = PathBuf::new();
            let comps: Vec<_> = rel.components().collect();
            for c in &comps[..comps.len().saturating_sub(1)] {
                acc.push(c);
                if written.insert(acc.clone()) {
                    if host {
                        w.add(&Path::new("/").join(&acc), &acc)?;
                    } else {
                        w.add(&staging_home, &acc)?;
                    }
                }
            }
            Ok(())
        };
        let etc_rel = Path::new("etc");
        let mut all: Vec<(PathBuf, Option<Entry>)> = set
            .entries
            .iter()
            .map(|(p, e)| (p.strip_prefix("/").unwrap_or(p).to_path_buf(), Some(*e)))
            .collect();
        all.push((etc_rel.join("passwd"), None));
        all.push((etc_rel.join("group"), None));
        all.sort_by(|a, b| a.0.cmp(&b.0));
        for (rel, entry) in all {
            if rel.starts_with("etc")
                && entry.is_some()
                && (rel.ends_with("passwd") || rel.ends_with("group"))
            {
                continue;
            }
            // Generated files' parents are made here, not the host's (macOS's /etc is a link).
            parents(&mut w, &mut written, &rel, entry.is_some())?;
            match entry {
                None => {
                    if written.insert(rel.clone()) {
                        w.add(&staging.join(&rel), &rel)?;
                    }
                }
                Some(Entry::Tree) => {
                    if written.insert(rel.clone()) {
                        w.add_tree(&Path::new("/").join(&rel), &rel)?;
                    }
                }
                Some(_) => {
                    if written.insert(rel.clone()) {
                        w.add(&Path::new("/").join(&rel), &rel)?;
                    }
                }
            }
        }
        // The build user's home, the user's own.
        let home_rel = PathBuf::from(home.trim_start_matches('/'));
        parents(&mut w, &mut written, &home_rel, false)?;
        w.add_owned(&home_dir, &home_rel, (*uid, *gid))?;
        let blob = store.store_layer(w)?;
        let (os, arch) = (platform::oci_os(), platform::oci_arch());
        let version = if macos {
            macos_version()
        } else {
            String::new()
        };
        let runtime_config = json!({
            "User": user,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", format!("HOME={home}")],
            "Cmd": [shell],
            "WorkingDir": home,
        });
        store.create_image(NewImage {
            base: None,
            platform: (os.to_string(), arch.to_string(), version),
            layers: vec![NewLayer {
                blob: Some(blob),
                created_by: "darwin-cri image base".to_string(),
            }],
            runtime_config: Some(runtime_config),
            created: (!opts.keep_mtimes).then(|| "1970-01-01T00:00:00Z".to_string()),
            names: vec![opts.name.clone()],
        })
    })();
    let _ = fs::remove_dir_all(&staging);
    Ok((result?, missing))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn elf_needs_of_this_test_binary_and_malformed_input() {
        let exe = std::env::current_exe().unwrap();
        let data = fs::read(&exe).unwrap();
        if platform::OS == platform::Os::Linux {
            let Needs::Elf(n) = needs(&data).unwrap() else {
                panic!("not ELF")
            };
            assert!(
                n.interpreter.as_deref().is_some_and(|i| i.contains("ld-")),
                "{n:?}"
            );
            assert!(n.needed.iter().any(|l| l.starts_with("libc.so")), "{n:?}");
            let mut set = FileSet::default();
            add_program(&mut set, &exe).unwrap();
            let paths: Vec<String> = set.paths().map(|p| p.display().to_string()).collect();
            assert!(paths.iter().any(|p| p.contains("libc.so")), "{paths:?}");
            assert!(paths.iter().any(|p| p.contains("ld-linux")), "{paths:?}");
        }
        // Cut short or corrupted: an error or nothing, never a panic.
        for len in [0, 4, 16, 64, 100, 1000, 5000] {
            let _ = needs(&data[..len.min(data.len())]);
        }
        let mut corrupt = data[..data.len().min(8192)].to_vec();
        for b in corrupt.iter_mut().skip(64).step_by(7) {
            *b = b.wrapping_add(0x5a);
        }
        let _ = needs(&corrupt);
        assert_eq!(needs(b"#!/bin/sh\necho hi\n").unwrap(), Needs::None);
    }

    fn tool(names: &[&str]) -> String {
        names
            .iter()
            .find(|n| Command::new(n).arg("--version").output().is_ok())
            .map(|n| n.to_string())
            .unwrap_or_else(|| panic!("none of {names:?}: apt-get install clang lld"))
    }

    /// Mach-O reading on files built here: an executable that loads a library through
    /// `@rpath` (its LC_RPATH is `@loader_path/../lib`) and the system library, which is not
    /// on disk (on a Mac it is in the shared cache).
    #[test]
    fn macho_dylibs_and_rpaths_are_read_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let clang = tool(&["clang", "clang-14"]);
        let ld64 = tool(&["ld64.lld", "ld64.lld-14"]);
        fs::write(d.join("foo.c"), "int foo(void){return 42;}\n").unwrap();
        fs::write(
            d.join("main.c"),
            "int foo(void);\nint main(void){return foo();}\n",
        )
        .unwrap();
        fs::write(
            d.join("sys.c"),
            "void stub(void) __asm__(\"dyld_stub_binder\");\nvoid stub(void){}\n",
        )
        .unwrap();
        let run = |cmd: &str, args: &[&str]| {
            let out = Command::new(cmd)
                .current_dir(d)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for c in ["foo", "main", "sys"] {
            run(
                &clang,
                &[
                    "--target=arm64-apple-macos11",
                    "-c",
                    &format!("{c}.c"),
                    "-o",
                    &format!("{c}.o"),
                ],
            );
        }
        let ld = [
            "-arch",
            "arm64",
            "-platform_version",
            "macos",
            "11.0",
            "11.0",
        ];
        fs::create_dir_all(d.join("lib")).unwrap();
        fs::create_dir_all(d.join("bin")).unwrap();
        let dylib = |name: &str, install: &str, obj: &str| {
            let mut a: Vec<&str> = ld.to_vec();
            a.extend(["-dylib", "-install_name", install, "-o", name, obj]);
            run(&ld64, &a);
        };
        dylib("lib/libfoo.dylib", "@rpath/libfoo.dylib", "foo.o");
        dylib("libSystem.B.dylib", "/usr/lib/libSystem.B.dylib", "sys.o");
        let mut a: Vec<&str> = ld.to_vec();
        a.extend([
            "-o",
            "bin/main",
            "main.o",
            "lib/libfoo.dylib",
            "libSystem.B.dylib",
            "-rpath",
            "@loader_path/../lib",
            "-e",
            "_main",
        ]);
        run(&ld64, &a);

        let data = fs::read(d.join("bin/main")).unwrap();
        let Needs::MachO(n) = needs(&data).unwrap() else {
            panic!("not Mach-O")
        };
        assert_eq!(
            n.dylibs,
            vec!["@rpath/libfoo.dylib", "/usr/lib/libSystem.B.dylib"]
        );
        assert_eq!(n.rpaths, vec!["@loader_path/../lib"]);

        let mut set = FileSet::default();
        add_program(&mut set, &d.join("bin/main")).unwrap();
        let real = fs::canonicalize(d).unwrap();
        let paths: Vec<PathBuf> = set.paths().map(Path::to_path_buf).collect();
        assert!(paths.contains(&real.join("bin/main")), "{paths:?}");
        assert!(paths.contains(&real.join("lib/libfoo.dylib")), "{paths:?}");
        assert!(
            !paths.iter().any(|p| p.ends_with("libSystem.B.dylib")),
            "{paths:?}"
        );

        // A library that is neither on disk nor a system one is an error naming it.
        let mut a: Vec<&str> = ld.to_vec();
        a.extend([
            "-o",
            "bin/broken",
            "main.o",
            "lib/libfoo.dylib",
            "libSystem.B.dylib",
            "-e",
            "_main",
        ]);
        run(&ld64, &a);
        let err = add_program(&mut FileSet::default(), &d.join("bin/broken")).unwrap_err();
        assert!(err.to_string().contains("@rpath/libfoo.dylib"), "{err}");
    }
}
