//! CreateContainer: the plan, the root (an overlay of the image snapshot and a prepared layer,
//! or a clone), the files the runtime writes in it, kubelet's mounts, and the process spec.

use super::*;

/// What CreateContainer decided before touching the disk.
#[derive(Debug)]
pub(super) struct Plan {
    id: String,
    dir: PathBuf,
    log_path: Option<PathBuf>,
    limits: crate::limits::Limits,
    /// The resolved host path of each of the spec's mounts, in order.
    sources: Vec<PathBuf>,
}

/// What every root of an image gets before its container's own files: /dev, the jail layout
/// (see [`crate::jail`]) with the user's home, a world-writable /tmp, /etc, and /proc.
pub(crate) fn prepare_root(rootfs: &Path, user: &user::ResolvedUser) -> Result<()> {
    let inside = |p: &str| {
        resolve_in_root(rootfs, Path::new(p)).at("resolving in the container root", Path::new(p))
    };
    crate::devices::populate_dev(&inside("/dev")?).at("creating devices in", rootfs)?;
    crate::jail::prepare(rootfs, user.uid, user.gid, &user.home)?;
    let tmp = inside("/tmp")?;
    std::fs::create_dir_all(&tmp).at("creating", &tmp)?;
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .at("chmod", &tmp)?;
    std::fs::create_dir_all(inside("/etc")?).at("creating /etc in", rootfs)?;
    // The mount point of each container's /proc: made here, in the layer every container of
    // the image shares, it costs no directory per container.
    std::fs::create_dir_all(inside("/proc")?).at("creating /proc in", rootfs)?;
    Ok(())
}

/// `p` (a path as the container sees it) on the host, resolved inside `rootfs`.
fn inside(rootfs: &Path, p: &str) -> Result<PathBuf> {
    Ok(
        resolve_in_root(rootfs, Path::new(p))
            .at("resolving in the container root", Path::new(p))?,
    )
}

/// The pod's hostname, resolv.conf and hosts (unless a mount brings /etc/hosts) in the root's
/// /etc, copied (not linked: the container may change its own).
fn write_pod_files(rootfs: &Path, pod: &Pod, spec: &ContainerSpec) -> Result<()> {
    let mounted_hosts = spec
        .mounts
        .iter()
        .any(|m| clean_in_root(&m.container_path) == Some(PathBuf::from("etc/hosts")));
    for (file, skip) in [
        ("hostname", false),
        ("resolv.conf", false),
        ("hosts", mounted_hosts),
    ] {
        if skip {
            continue;
        }
        let target = inside(rootfs, &format!("/etc/{file}"))?;
        let _ = std::fs::remove_file(&target);
        std::fs::copy(pod.dir.join(file), &target).at("writing", &target)?;
    }
    Ok(())
}

/// The process's environment: HOSTNAME, the image's, the container's (names checked), and PATH
/// and HOME where neither set them.
fn container_env(
    pod: &Pod,
    spec: &ContainerSpec,
    image: &Image,
    user: &user::ResolvedUser,
) -> Result<Vec<String>> {
    let hostname = std::fs::read_to_string(pod.dir.join("hostname")).unwrap_or_default();
    let mut env = vec![format!("HOSTNAME={}", hostname.trim())];
    for kv in &image.config.env {
        set_env(&mut env, kv.clone());
    }
    for (k, v) in &spec.envs {
        if k.is_empty() || k.contains('=') {
            return Err(Error::InvalidArgument(format!(
                "environment variable name {k:?} is invalid"
            )));
        }
        set_env(&mut env, format!("{k}={v}"));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.into());
    }
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    Ok(env)
}

/// The working directory (the container's, else the image's, else /), made in the root; it
/// may not leave the root.
fn working_dir(rootfs: &Path, spec: &ContainerSpec, image: &Image) -> Result<String> {
    let cwd_req = if !spec.working_dir.is_empty() {
        spec.working_dir.clone()
    } else if !image.config.working_dir.is_empty() {
        image.config.working_dir.clone()
    } else {
        "/".into()
    };
    let cwd_rel = clean_in_root(&cwd_req).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "working dir {cwd_req:?} escapes the container root"
        ))
    })?;
    let cwd = format!("/{}", cwd_rel.display());
    let cwd_host = inside(rootfs, &cwd)?;
    std::fs::create_dir_all(&cwd_host).at("creating the working dir", &cwd_host)?;
    Ok(cwd)
}

/// FNV-1a: a stable name for a prepared layer's inputs (not a security boundary: the inputs
/// are the runtime's own).
pub(super) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
impl Runtime {
    /// The image a container is created from, by id or reference.
    pub fn image_for(&self, reference: &str) -> Result<Image> {
        if reference.is_empty() {
            return Err(Error::InvalidArgument(
                "container config names no image".into(),
            ));
        }
        self.images.resolve(reference)?.ok_or_else(|| {
            Error::NotFound(format!(
                "image {reference:?} not found: import it with `darwin-cri image import` first"
            ))
        })
    }

    pub async fn create_container(
        self: &Arc<Self>,
        pod_id: &str,
        spec: ContainerSpec,
    ) -> Result<String> {
        let pod = self.pod(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(Error::FailedPrecondition(format!(
                "pod sandbox {} is not ready (stopped): no new containers",
                pod.id
            )));
        }
        let meta = spec
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| Error::InvalidArgument("container metadata needs a name".into()))?;
        let image = self.image_for(&spec.image)?;
        let mut sources = Vec::with_capacity(spec.mounts.len());
        for m in &spec.mounts {
            match clean_in_root(&m.container_path) {
                None => {
                    return Err(Error::InvalidArgument(format!(
                        "mount container path {:?} escapes the container root",
                        m.container_path
                    )));
                }
                Some(p) if p.as_os_str().is_empty() => {
                    return Err(Error::InvalidArgument(format!(
                        "mount container path {:?} would cover the container root",
                        m.container_path
                    )));
                }
                Some(_) => {}
            }
            sources.push(
                self.opts
                    .mounts
                    .resolve_source(&m.host_path, &m.container_path)?,
            );
        }
        let log_path = if spec.log_path.is_empty() || pod.spec.log_directory.is_empty() {
            None
        } else {
            let rel = clean_in_root(&spec.log_path)
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "log path {:?} leaves the pod's log directory",
                        spec.log_path
                    ))
                })?;
            Some(Path::new(&pod.spec.log_directory).join(rel))
        };
        let limits = crate::limits::resolve(
            &meta.name,
            spec.linux_resources.as_ref(),
            &spec.annotations,
            &pod.spec.annotations,
        )?;
        let key = container_key(&pod.id, &meta.name, meta.attempt);
        self.reserve(key.clone(), "container")?;
        let id = new_id();
        let dir = pod.dir.join("containers").join(&id);
        let rt = Arc::clone(self);
        let plan = Plan {
            id: id.clone(),
            dir: dir.clone(),
            log_path,
            limits,
            sources,
        };
        let (cpod, cimage) = (pod.clone(), image.clone());
        let built =
            tokio::task::spawn_blocking(move || rt.build_container(&plan, &cpod, spec, &cimage))
                .await
                .map_err(|e| Error::Internal(e.to_string()))
                .and_then(|r| r);
        let result = built.and_then(|c| {
            self.store.put_container(&c)?;
            self.write_containers().insert(id.clone(), c);
            self.emit(&id, &pod.id, EventKind::Created);
            Ok(())
        });
        if let Err(e) = result {
            let _ = tokio::task::spawn_blocking(move || remove_tree(&dir)).await;
            let _ = self.images.release(&id);
            self.release(&key);
            return Err(e);
        }
        Ok(id)
    }

    /// Everything CreateContainer does on disk, phase by phase: the user (from the image's own
    /// passwd), the root, the files the runtime writes in it, kubelet's mounts with /proc, the
    /// masks and the confinement policy, then the process spec. Blocking; the caller removes
    /// `dir` if this fails.
    pub(super) fn build_container(
        &self,
        plan: &Plan,
        pod: &Pod,
        spec: ContainerSpec,
        image: &Image,
    ) -> Result<Container> {
        let (dir, id) = (plan.dir.as_path(), plan.id.as_str());
        let t0 = std::time::Instant::now();
        std::fs::create_dir_all(dir).at("creating", dir)?;
        let snapshot = self.images.lease(id, image)?;
        let user = self.container_user(pod, &spec, image, &snapshot)?;
        let (rootfs, layered) = self.make_root(plan, &spec, pod, image, &snapshot, &user)?;
        tracing::debug!(container = id, elapsed = ?t0.elapsed(), "rootfs cloned");
        write_pod_files(&rootfs, pod, &spec)?;
        let env = container_env(pod, &spec, image, &user)?;
        let cwd = working_dir(&rootfs, &spec, image)?;
        let args = merge_command(&image.config, &spec.command, &spec.args)?;
        let (mounted, confinement) = self.mount_and_confine(plan, pod, &spec, &rootfs)?;
        let process = ProcessSpec {
            args,
            env,
            cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            rootfs: rootfs.clone(),
            log_directory: plan
                .log_path
                .as_ref()
                .map(|_| PathBuf::from(&pod.spec.log_directory)),
            log_path: plan.log_path.clone(),
            max_log_line: self.opts.max_log_line,
            tty: spec.tty,
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
            stop_signal: image.config.stop_signal.clone(),
            limits: plan.limits,
            limit_interval_ms: self.opts.limit_interval.as_millis() as u64,
            control_socket: self
                .opts
                .state_dir
                .join("m")
                .join(format!("{}.sock", &id[..32.min(id.len())])),
            confinement,
        };
        let bytes =
            serde_json::to_vec_pretty(&process).map_err(|e| Error::Internal(e.to_string()))?;
        tracing::debug!(container = id, elapsed = ?t0.elapsed(), "container prepared");
        write_atomic(&dir.join(monitor::PROCESS_FILE), &bytes)
            .at("writing", &dir.join(monitor::PROCESS_FILE))?;
        let layout = (snapshot.as_path(), user.home.as_str());
        self.write_origin(
            id, &image.id, &rootfs, layered, dir, &mounted, &spec, layout,
        )?;
        let meta = spec.metadata.clone().unwrap_or(ContainerMetadata {
            name: String::new(),
            attempt: 0,
        });
        Ok(Container {
            id: id.to_string(),
            pod_id: pod.id.clone(),
            name: meta.name,
            attempt: meta.attempt,
            image_id: image.id.clone(),
            image_ref: image.id.clone(),
            image_name: image.repo_tags.first().cloned().unwrap_or_default(),
            spec,
            process,
            dir: dir.to_path_buf(),
            mounted,
            state: ContainerState::Created,
            created_at: now_nanos(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            pid: 0,
            monitor_pid: 0,
            monitor_start_time: 0,
            monitor_protocol: 0,
            pid_start_time: 0,
            final_cpu_ns: 0,
        })
    }

    /// The user the process runs as, from the image's own passwd and group (the snapshot is the
    /// root's initial content): the container's own, else the darwin-cri.io/run-as-user
    /// annotation's, else the pod's (a darwin kubelet sends runAsUser only in the pod's Linux
    /// section), else the image's. Root only where the operator's rules allow it.
    fn container_user(
        &self,
        pod: &Pod,
        spec: &ContainerSpec,
        image: &Image,
        snapshot: &Path,
    ) -> Result<user::ResolvedUser> {
        let annotated = crate::confinement::annotated_user(spec, pod)?;
        let (run_as_user, run_as_username) = match &annotated {
            Some((uid, name)) => (*uid, name.as_str()),
            None if spec.run_as_user.is_none() && spec.run_as_username.is_empty() => {
                (pod.spec.run_as_user, "")
            }
            None => (spec.run_as_user, spec.run_as_username.as_str()),
        };
        let user = user::resolve(
            snapshot,
            &UserRequest {
                run_as_user,
                run_as_group: spec.run_as_group.or(pod.spec.run_as_group),
                run_as_username,
                supplemental_groups: &spec.supplemental_groups,
                strict_groups: spec.supplemental_groups_strict,
                image_user: &image.config.user,
            },
        )?;
        crate::confinement::check_root(
            spec,
            pod,
            user.uid,
            &crate::confinement::RootRules {
                allow_root: self.opts.allow_root,
                allow_root_namespaces: &self.opts.allow_root_namespaces,
            },
        )?;
        Ok(user)
    }

    /// The container's root: an overlay of the snapshot and the image's prepared layer (the
    /// layout for this user, made once), or a clone or copy prepared here; nosuid where the
    /// container is confined and the image does not keep setuid bits. Whether it is layered.
    fn make_root(
        &self,
        plan: &Plan,
        spec: &ContainerSpec,
        pod: &Pod,
        image: &Image,
        snapshot: &Path,
        user: &user::ResolvedUser,
    ) -> Result<(PathBuf, bool)> {
        let confined = crate::confinement::is_confined(spec, pod);
        // setuid and setgid bits grant nothing in a confined root, unless the image keeps them.
        let nosuid = confined && !self.images.keeps_setuid(image);
        let layer = if self.opts.copy_rootfs {
            None
        } else {
            self.prepared_layer(snapshot, &image.id, user)
        };
        let layers: Vec<&Path> = layer.iter().map(PathBuf::as_path).collect();
        let pooled = plan.dir.join("rootfs");
        let (rootfs, layered) = if self.roots_are_copies() && self.pool.take(&image.id, &pooled) {
            tracing::debug!(container = plan.id, "root taken from the pool");
            (pooled, false)
        } else {
            crate::rootfs::clone_rootfs(snapshot, &layers, &plan.dir, self.opts.copy_rootfs, nosuid)
                .at("making the container root from", snapshot)?
        };
        if !(layered && layer.is_some()) {
            prepare_root(&rootfs, user)?;
        }
        Ok((rootfs, layered))
    }

    /// kubelet's mounts, /proc (before the masks that cover its sensitive parts; privileged
    /// containers get it unmasked, as with containerd), the masked and read-only paths, and the
    /// confinement policy over all of them. On failure, what was mounted is unmounted.
    fn mount_and_confine(
        &self,
        plan: &Plan,
        pod: &Pod,
        spec: &ContainerSpec,
        rootfs: &Path,
    ) -> Result<(Vec<PathBuf>, Option<platform::Confinement>)> {
        let mut mounted =
            self.opts
                .mounts
                .mount_all(rootfs, &spec.mounts, &plan.sources, &plan.id)?;
        let confinement = (|| -> Result<Option<platform::Confinement>> {
            let volumes = spec
                .mounts
                .iter()
                .map(|m| Ok((inside(rootfs, &m.container_path)?, m.readonly)))
                .collect::<Result<Vec<_>>>()?;
            let existing = |paths: &[String]| -> Vec<PathBuf> {
                paths
                    .iter()
                    .filter_map(|p| inside(rootfs, p).ok())
                    .filter(|p| std::fs::symlink_metadata(p).is_ok())
                    .collect()
            };
            // /proc for process tools (the Linux twin; macOS's read sysctl).
            let proc_dir = inside(rootfs, "/proc")?;
            std::fs::create_dir_all(&proc_dir).at("creating", &proc_dir)?;
            match platform::mount_proc(&proc_dir) {
                Ok(()) => mounted.push(proc_dir.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {}
                Err(e) => {
                    return Err(Error::io(
                        format!("mounting /proc in {}", rootfs.display()),
                        e,
                    ));
                }
            }
            let defaults = |list: &[&str]| -> Vec<String> {
                if spec.security.privileged {
                    Vec::new()
                } else {
                    list.iter().map(|p| p.to_string()).collect()
                }
            };
            let mut masked_req = spec.security.masked_paths.clone();
            masked_req.extend(defaults(crate::mounts::DEFAULT_MASKED_PATHS));
            masked_req.sort();
            masked_req.dedup();
            let mut read_only_req = spec.security.readonly_paths.clone();
            read_only_req.extend(defaults(crate::mounts::DEFAULT_READONLY_PATHS));
            read_only_req.sort();
            read_only_req.dedup();
            let masked = existing(&masked_req);
            let read_only = existing(&read_only_req);
            // Landlock only grants: where the OS has bind mounts, masked and read-only paths
            // are mounts over them (what containerd does); the Seatbelt profile denies them.
            if platform::HAS_BIND_MOUNTS {
                mounted.extend(crate::mounts::mask(
                    &self.opts.root.join("masked"),
                    &masked,
                    &read_only,
                )?);
            }
            crate::confinement::policy(
                spec,
                pod,
                rootfs,
                &volumes,
                masked,
                read_only,
                &crate::confinement::PolicyRules {
                    mach_services: &self.opts.seatbelt_mach_services,
                    allowed_capabilities: &self.opts.allowed_capabilities,
                },
            )
        })();
        match confinement {
            Ok(c) => Ok((
                mounted,
                c.map(|mut c| {
                    c.landlock_best_effort = self.opts.landlock_best_effort;
                    c
                }),
            )),
            Err(e) => {
                for t in mounted.iter().rev() {
                    let _ = platform::unmount(t);
                }
                Err(e)
            }
        }
    }

    /// Records what `image commit` needs to know of the container (see [`ContainerOrigin`]).
    #[allow(clippy::too_many_arguments)]
    fn write_origin(
        &self,
        id: &str,
        image_id: &str,
        rootfs: &Path,
        layered: bool,
        dir: &Path,
        mounted: &[PathBuf],
        spec: &ContainerSpec,
        (snapshot, home): (&Path, &str),
    ) -> Result<()> {
        let mut runtime_paths: Vec<PathBuf> = Vec::new();
        let mut add = |host: &Path| {
            if let Ok(rel) = host.strip_prefix(rootfs)
                && !rel.as_os_str().is_empty()
                && !runtime_paths.iter().any(|p| p == rel)
            {
                runtime_paths.push(rel.to_path_buf());
            }
        };
        for m in mounted {
            add(m);
        }
        let mut made = vec![
            "/etc/hosts".to_string(),
            "/etc/resolv.conf".to_string(),
            "/etc/hostname".to_string(),
            "/dev".to_string(),
            "/proc".to_string(),
            crate::dns_proxy::MDNS_SOCKET.to_string(),
        ];
        made.extend(spec.mounts.iter().map(|m| m.container_path.clone()));
        for p in made {
            if let Ok(host) = resolve_in_root(rootfs, Path::new(&p)) {
                add(&host);
            }
        }
        runtime_paths.sort();
        let mut runtime_entries = Vec::new();
        for p in crate::jail::layout_paths(home) {
            let is_link = crate::jail::LINKS.iter().any(|(l, _)| Path::new(l) == p);
            let rel = if is_link {
                p.strip_prefix("/").unwrap_or(&p).to_path_buf()
            } else {
                match resolve_in_root(rootfs, &p) {
                    Ok(host) => match host.strip_prefix(rootfs) {
                        Ok(rel) => rel.to_path_buf(),
                        Err(_) => continue,
                    },
                    Err(_) => continue,
                }
            };
            if std::fs::symlink_metadata(snapshot.join(&rel)).is_err() {
                runtime_entries.push(rel);
            }
        }
        runtime_entries.sort();
        runtime_entries.dedup();
        let origin = ContainerOrigin {
            container_id: id.to_string(),
            image_id: image_id.to_string(),
            rootfs: rootfs.to_path_buf(),
            upper: layered.then(|| dir.join("upper")),
            runtime_paths,
            runtime_entries,
        };
        let bytes =
            serde_json::to_vec_pretty(&origin).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomic(&dir.join(ORIGIN_FILE), &bytes).at("writing", &dir.join(ORIGIN_FILE))?;
        Ok(())
    }

    /// A read-only layer holding what [`prepare_root`] adds to a root of this image for this
    /// user, made once and stacked between each such container's own layer and the snapshot.
    /// On overlayfs every directory a container creates costs a copy-up and a rename (about 0.15
    /// ms each; the jail layout makes some 30): shared, they cost nothing per container. `None`
    /// where no overlay can be made: each root is then prepared itself.
    pub(super) fn prepared_layer(
        &self,
        snapshot: &Path,
        image_id: &str,
        user: &user::ResolvedUser,
    ) -> Option<PathBuf> {
        let digest = image_id.trim_start_matches("sha256:");
        let key = format!(
            "{}-{:016x}",
            &digest[..digest.len().min(16)],
            fnv1a(&format!(
                "{}\0{}\0{}\0{}",
                crate::jail::LAYOUT_VERSION,
                user.uid,
                user.gid,
                user.home
            ))
        );
        let layers = self.opts.root.join("layers");
        let dir = layers.join(&key);
        if dir.join("done").exists() {
            return Some(dir.join("upper"));
        }
        // Made aside under a unique name and renamed into place: a concurrent create of the
        // same image and user makes its own, and the first rename wins.
        let tmp = layers.join(format!("{key}.tmp-{}", &new_id()[..12]));
        let made = (|| -> Result<()> {
            std::fs::create_dir_all(&tmp).at("creating", &tmp)?;
            let merged = crate::rootfs::overlay(snapshot, &[], &tmp, false).at("layering", &tmp)?;
            let prepared = prepare_root(&merged, user);
            platform::unmount(&merged).at("unmounting", &merged)?;
            prepared?;
            let _ = std::fs::remove_dir_all(tmp.join("work"));
            std::fs::write(tmp.join("done"), b"").at("writing", &tmp)?;
            if std::fs::rename(&tmp, &dir).is_err() && !dir.join("done").exists() {
                return Err(Error::Internal(format!("cannot place {}", dir.display())));
            }
            Ok(())
        })();
        if tmp.exists() {
            let _ = remove_tree(&tmp);
        }
        match made {
            Ok(()) => Some(dir.join("upper")),
            Err(e) => {
                tracing::debug!(error = %e, "no shared prepared layer; preparing the root itself");
                None
            }
        }
    }
}
