//! COPY and ADD: the context's files (or another stage's, or a stored image's) written straight
//! into a layer, with `.dockerignore`, `--chown` and, for ADD, local tar archives unpacked.

use std::io::{BufRead, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use image_service::layer::TarOptions;
use image_service::safe_path::resolve_in_root;
use image_service::{Compression, ImageStore};
use runtime::user;
use sha2::{Digest as _, Sha256};

use super::cache::{cache_key, cached, remember};
use super::{BuildOptions, Output, StageState, add_layer};

/// COPY or ADD as written, before expansion.
#[derive(Debug)]
pub(super) struct Copy<'a> {
    pub sources: &'a [String],
    pub dest: &'a str,
    pub from: Option<&'a str>,
    pub chown: Option<&'a str>,
    /// ADD: local tar archives are unpacked.
    pub add: bool,
}

/// `COPY` and `ADD`: the files written straight into a layer, from the cache when the same
/// files were copied onto the same parent before.
#[allow(clippy::too_many_arguments)]
pub(super) fn copy(
    store: &ImageStore,
    opts: &BuildOptions,
    ignore: &DockerIgnore,
    done: &[StageState],
    state: &mut StageState,
    c: &Copy<'_>,
    text: &str,
    out: Output<'_>,
) -> Result<()> {
    let source_root = match c.from {
        None => opts.context.clone(),
        Some(f) => {
            let f = state.expand(f).to_ascii_lowercase();
            let stage = done.iter().find(|s| s.name.as_deref() == Some(f.as_str()));
            let chain = match stage {
                Some(s) => s.chain.clone(),
                None => {
                    let image = store
                        .resolve(&f)?
                        .ok_or_else(|| anyhow!("--from={f}: no such stage or stored image"))?;
                    store.top_chain(&image)?
                }
            };
            match chain {
                Some(c) => store.snapshot_path(&c)?,
                None => {
                    return Err(anyhow!("--from={f} has no files"));
                }
            }
        }
    };
    let in_context = c.from.is_none();
    let lower = state
        .chain
        .as_deref()
        .map(|c| store.snapshot_path(c))
        .transpose()?;
    let owner = match c.chown {
        None => None,
        Some(spec) => Some(resolve_chown(&state.expand(spec), lower.as_deref())?),
    };
    let sources: Vec<String> = c.sources.iter().map(|s| state.expand(s)).collect();
    let dest = state.expand(c.dest);
    let plan = copy_plan(
        &source_root,
        in_context,
        ignore,
        &sources,
        &dest,
        &state.get("WorkingDir"),
        lower.as_deref(),
        c.add,
    )?;
    let key_parts = [
        state.chain.clone().unwrap_or_else(|| "scratch".into()),
        text.to_string(),
        format!("{owner:?}"),
        plan.fingerprint()?,
    ];
    let refs: Vec<&str> = key_parts.iter().map(String::as_str).collect();
    let key = cache_key(&refs);
    let blob = match cached(opts, &key, store) {
        Some(b) => {
            let _ = writeln!(out, "--> cached");
            b
        }
        None => {
            let mut w = store.layer_writer(
                opts.compression,
                TarOptions {
                    fixed_mtime: None,
                    owner,
                },
            )?;
            plan.write(&mut w)?;
            let blob = store.store_layer(w)?;
            remember(opts, &key, &blob);
            blob
        }
    };
    add_layer(store, state, blob, text)
}

/// `--chown=user[:group]`: names from the image's /etc/passwd and /etc/group, or numbers.
fn resolve_chown(spec: &str, root: Option<&Path>) -> Result<(u32, u32)> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = root
        .map(|r| {
            user::parse_passwd(&std::fs::read_to_string(r.join("etc/passwd")).unwrap_or_default())
        })
        .unwrap_or_default();
    let groups = root
        .map(|r| {
            user::parse_group(&std::fs::read_to_string(r.join("etc/group")).unwrap_or_default())
        })
        .unwrap_or_default();
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => passwd
            .iter()
            .find(|e| e.name == u)
            .map(|e| e.uid)
            .ok_or_else(|| anyhow!("--chown: user {u:?} is not in the image's /etc/passwd"))?,
    };
    let gid = match g {
        None => passwd
            .iter()
            .find(|e| e.uid == uid)
            .map(|e| e.gid)
            .unwrap_or(uid),
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e.name == g)
                .map(|e| e.gid)
                .ok_or_else(|| anyhow!("--chown: group {g:?} is not in the image's /etc/group"))?,
        },
    };
    Ok((uid, gid))
}

/// `.dockerignore` patterns of the context (later lines win; `!` re-includes).
#[derive(Debug, Default)]
pub(super) struct DockerIgnore {
    rules: Vec<(globset::GlobMatcher, bool)>,
}

impl DockerIgnore {
    pub(super) fn load(context: &Path) -> Result<DockerIgnore> {
        let path = context.join(".dockerignore");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(DockerIgnore::default());
        };
        let mut rules = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (negate, pat) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let pat = image_service::safe_path::clean_relative(Path::new(pat));
            let glob = globset::GlobBuilder::new(&pat.display().to_string())
                .literal_separator(true)
                .build()
                .map_err(|e| anyhow!(".dockerignore: {l:?}: {e}"))?;
            rules.push((glob.compile_matcher(), negate));
        }
        Ok(DockerIgnore { rules })
    }

    /// Whether `rel` (relative to the context) is left out: it or a parent directory matches.
    fn ignored(&self, rel: &Path) -> bool {
        let mut verdict = false;
        for (m, negate) in &self.rules {
            if rel
                .ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| m.is_match(a))
            {
                verdict = !negate;
            }
        }
        verdict
    }
}

/// What a COPY or ADD writes: (source path, destination relative to the root), and archives
/// to unpack below a destination directory.
#[derive(Debug, Default)]
struct CopyPlan {
    entries: Vec<(PathBuf, PathBuf)>,
    archives: Vec<(PathBuf, PathBuf)>,
}

#[allow(clippy::too_many_arguments)]
fn copy_plan(
    root: &Path,
    in_context: bool,
    ignore: &DockerIgnore,
    sources: &[String],
    dest: &str,
    workdir: &str,
    lower: Option<&Path>,
    add: bool,
) -> Result<CopyPlan> {
    let dest_abs = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!(
            "{}/{dest}",
            if workdir.is_empty() {
                ""
            } else {
                workdir.trim_end_matches('/')
            }
        )
    };
    let dest_rel = image_service::safe_path::clean_relative(Path::new(&dest_abs));
    let dest_is_existing_dir = lower
        .and_then(|l| resolve_in_root(l, &dest_rel).ok())
        .is_some_and(|p| p.is_dir());
    let mut matched: Vec<PathBuf> = Vec::new();
    for s in sources {
        let rel = image_service::safe_path::clean_relative(Path::new(s));
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.contains(['*', '?', '[']) {
            let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let glob = globset::Glob::new(&name)
                .map_err(|e| anyhow!("{s:?}: {e}"))?
                .compile_matcher();
            let dir = resolve_in_root(root, &parent)
                .with_context(|| format!("resolving {}", parent.display()))?;
            let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("reading {}", dir.display()))?
                .flatten()
                .filter(|e| glob.is_match(e.file_name()))
                .map(|e| parent.join(e.file_name()))
                .filter(|p| !(in_context && ignore.ignored(p)))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(anyhow!("no source file matches {s:?}"));
            }
            matched.extend(found);
        } else {
            matched.push(rel);
        }
    }
    let many = matched.len() > 1;
    let into_dir = many || dest.ends_with('/') || dest_is_existing_dir;
    let mut plan = CopyPlan::default();
    for rel in matched {
        // The source is resolved inside its root: a symlink in the context cannot lead out.
        let src = resolve_in_root(root, &rel)
            .with_context(|| format!("resolving the source {}", rel.display()))?;
        let meta = std::fs::metadata(&src).map_err(|e| anyhow!("source {}: {e}", rel.display()))?;
        if meta.is_dir() {
            // A directory's content goes into the destination.
            walk_into(&src, &rel, &dest_rel, in_context, ignore, &mut plan.entries)?;
            continue;
        }
        let target = if into_dir {
            dest_rel.join(rel.file_name().unwrap_or_default())
        } else {
            dest_rel.clone()
        };
        if add && is_archive(&src) {
            plan.archives.push((src, dest_rel.clone()));
        } else {
            plan.entries.push((src, target));
        }
    }
    Ok(plan)
}

fn walk_into(
    dir: &Path,
    rel: &Path,
    dest: &Path,
    in_context: bool,
    ignore: &DockerIgnore,
    out: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<()> {
    if !dest.as_os_str().is_empty() {
        out.push((dir.to_path_buf(), dest.to_path_buf()));
    }
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let child_rel = rel.join(&n);
        if in_context && ignore.ignored(&child_rel) {
            continue;
        }
        let path = dir.join(&n);
        let meta =
            std::fs::symlink_metadata(&path).with_context(|| format!("stat {}", path.display()))?;
        if meta.is_dir() {
            walk_into(&path, &child_rel, &dest.join(&n), in_context, ignore, out)?;
        } else {
            out.push((path, dest.join(&n)));
        }
    }
    Ok(())
}

/// A local tar archive (plain, gzip or zstd), which ADD unpacks.
fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let n = f.read(&mut head).unwrap_or(0);
    Compression::sniff(&head[..n]) != Compression::None || (n >= 262 && &head[257..262] == b"ustar")
}

impl CopyPlan {
    /// What the cache key needs of the sources: names, modes, owners, sizes and contents.
    fn fingerprint(&self) -> Result<String> {
        let mut h = Sha256::new();
        for (src, dest) in self.entries.iter().chain(self.archives.iter()) {
            h.update(dest.as_os_str().as_encoded_bytes());
            h.update([0]);
            let meta = std::fs::symlink_metadata(src)
                .with_context(|| format!("stat {}", src.display()))?;
            h.update(meta.mode().to_le_bytes());
            h.update(meta.uid().to_le_bytes());
            h.update(meta.gid().to_le_bytes());
            if meta.file_type().is_symlink() {
                h.update(
                    std::fs::read_link(src)
                        .with_context(|| format!("readlink {}", src.display()))?
                        .as_os_str()
                        .as_encoded_bytes(),
                );
            } else if meta.is_file() {
                let mut f = std::fs::File::open(src)
                    .with_context(|| format!("opening {}", src.display()))?;
                std::io::copy(&mut f, &mut h)
                    .with_context(|| format!("reading {}", src.display()))?;
            }
        }
        Ok(hex::encode(h.finalize()))
    }

    fn write(&self, w: &mut image_service::layer::LayerWriter) -> Result<()> {
        for (src, dest) in &self.entries {
            w.add(src, dest)?;
        }
        for (archive, dest) in &self.archives {
            let f = std::fs::File::open(archive)
                .with_context(|| format!("opening {}", archive.display()))?;
            let mut reader = std::io::BufReader::new(f);
            let head = reader
                .fill_buf()
                .with_context(|| format!("reading {}", archive.display()))?
                .to_vec();
            let stream = Compression::sniff(&head)
                .decoder(reader)
                .with_context(|| format!("reading {}", archive.display()))?;
            let mut tar = tar::Archive::new(stream);
            for entry in tar
                .entries()
                .with_context(|| format!("reading {}", archive.display()))?
            {
                let mut entry = entry.with_context(|| format!("reading {}", archive.display()))?;
                w.append_tar_entry(&mut entry, dest)?;
            }
        }
        Ok(())
    }
}
