//! Resolving the user a container runs as against the image's own /etc/passwd and /etc/group,
//! as containerd does: kubelet's run_as_user/run_as_group/run_as_username win over the image's
//! configured user, and the user's groups from /etc/group are added to the supplemental groups.

use std::path::Path;

use image_service::safe_path::resolve_in_root;

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// What kubelet asked for, and the image's default.
#[derive(Debug, Clone, Default)]
pub struct UserRequest<'a> {
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub run_as_username: &'a str,
    pub supplemental_groups: &'a [i64],
    /// Leave out the user's memberships in the image's /etc/group (supplementalGroupsPolicy
    /// Strict).
    pub strict_groups: bool,
    pub image_user: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplemental groups, the primary gid first.
    pub groups: Vec<u32>,
    pub home: String,
}

fn id_from_i64(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::InvalidArgument(format!("{what} {v} is out of range")))
}

fn read_in_root(rootfs: &Path, path: &str) -> String {
    resolve_in_root(rootfs, Path::new(path))
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default()
}

/// Resolves the request against the files of `rootfs`.
pub fn resolve(rootfs: &Path, req: &UserRequest<'_>) -> Result<ResolvedUser> {
    let passwd = parse_passwd(&read_in_root(rootfs, "/etc/passwd"));
    let groups = parse_group(&read_in_root(rootfs, "/etc/group"));
    resolve_with(&passwd, &groups, req)
}

pub fn resolve_with(
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
    req: &UserRequest<'_>,
) -> Result<ResolvedUser> {
    let by_name = |name: &str| passwd.iter().find(|e| e.name == name);
    let by_uid = |uid: u32| passwd.iter().find(|e| e.uid == uid);
    let (user_part, group_part) = match req.image_user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (req.image_user, None),
    };
    let entry: Option<&PasswdEntry>;
    let uid: u32;
    if !req.run_as_username.is_empty() {
        entry = by_name(req.run_as_username);
        uid = entry
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "user {:?} is not in the image's /etc/passwd",
                    req.run_as_username
                ))
            })?
            .uid;
    } else if let Some(u) = req.run_as_user {
        uid = id_from_i64(u, "run_as_user")?;
        entry = by_uid(uid);
    } else if user_part.is_empty() {
        uid = 0;
        entry = by_uid(0);
    } else if let Ok(n) = user_part.parse::<u32>() {
        uid = n;
        entry = by_uid(n);
    } else {
        entry = by_name(user_part);
        uid = entry
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "image user {user_part:?} is not in the image's /etc/passwd"
                ))
            })?
            .uid;
    }
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    // The image's group applies only when kubelet did not name a user of its own.
    let kubelet_named_user = !req.run_as_username.is_empty() || req.run_as_user.is_some();
    if let Some(g) = group_part.filter(|g| !g.is_empty() && !kubelet_named_user) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "image group {g:?} is not in the image's /etc/group"
                        ))
                    })?
                    .gid
            }
        };
    }
    if let Some(g) = req.run_as_group {
        gid = id_from_i64(g, "run_as_group")?;
    }
    let mut all = vec![gid];
    if let Some(e) = entry.filter(|_| !req.strict_groups) {
        all.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == &e.name))
                .map(|g| g.gid),
        );
    }
    for g in req.supplemental_groups {
        all.push(id_from_i64(*g, "supplemental group")?);
    }
    let mut seen = std::collections::HashSet::new();
    all.retain(|g| seen.insert(*g));
    Ok(ResolvedUser {
        uid,
        gid,
        groups: all,
        home: entry.map(|e| e.home.clone()).unwrap_or_else(|| "/".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1000:\nbuilders:x:2000:app,other\n";

    fn resolve_req(req: UserRequest<'_>) -> Result<ResolvedUser> {
        resolve_with(&parse_passwd(PASSWD), &parse_group(GROUP), &req)
    }

    #[test]
    fn kubelet_uid_wins_over_image_user() {
        let r = resolve_req(UserRequest {
            run_as_user: Some(1000),
            image_user: "root",
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(
            (r.uid, r.gid, r.groups.clone(), r.home.as_str()),
            (1000, 1000, vec![1000, 2000], "/home/app")
        );
        let strict = resolve_req(UserRequest {
            run_as_user: Some(1000),
            supplemental_groups: &[3000],
            strict_groups: true,
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!(
            strict.groups,
            vec![1000, 3000],
            "Strict leaves out /etc/group"
        );
    }

    #[test]
    fn unknown_uid_gets_gid_zero_and_run_as_group_overrides() {
        let r = resolve_req(UserRequest {
            run_as_user: Some(4242),
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!((r.uid, r.gid), (4242, 0));
        let r = resolve_req(UserRequest {
            run_as_user: Some(4242),
            run_as_group: Some(7),
            supplemental_groups: &[9, 7],
            ..Default::default()
        })
        .expect("resolves");
        assert_eq!((r.gid, r.groups), (7, vec![7, 9]));
    }

    #[test]
    fn image_user_forms() {
        assert_eq!(resolve_req(UserRequest::default()).expect("root").uid, 0);
        let r = resolve_req(UserRequest {
            image_user: "app:builders",
            ..Default::default()
        })
        .expect("name:group");
        assert_eq!((r.uid, r.gid), (1000, 2000));
        let r = resolve_req(UserRequest {
            image_user: "55:66",
            ..Default::default()
        })
        .expect("numeric");
        assert_eq!((r.uid, r.gid), (55, 66));
        assert!(matches!(
            resolve_req(UserRequest {
                image_user: "ghost",
                ..Default::default()
            }),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve_req(UserRequest {
                run_as_username: "ghost",
                ..Default::default()
            }),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            resolve_req(UserRequest {
                run_as_user: Some(-1),
                ..Default::default()
            }),
            Err(Error::InvalidArgument(_))
        ));
    }
}
