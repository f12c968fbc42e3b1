//! Users and groups by name, from the container's own `/etc/passwd` and
//! `/etc/group` (never the host's).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {0:?} not found in the container's /etc/passwd")]
    NoUser(String),
    #[error("group {0:?} not found in the container's /etc/group")]
    NoGroup(String),
}

/// One `/etc/passwd` entry (the fields a runtime needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || line.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_string(),
        })
    })
}

fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32)> + '_ {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || line.starts_with('#') {
            return None;
        }
        Some((f[0], f[2].parse().ok()?))
    })
}

fn read(path: &Path) -> String {
    // A missing file means no names: numeric ids still work.
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The passwd entry of `uid` under `root`, if it has one.
pub fn entry_by_uid(root: &Path, uid: u32) -> Option<PasswdEntry> {
    passwd_entries(&read(&root.join("etc/passwd"))).find(|e| e.uid == uid)
}

/// Resolves `user[:group]` (names or numbers) as `runc exec --user` and
/// `docker --user` take it. A user given by name brings its primary group
/// unless a group is named.
pub fn resolve(root: &Path, spec: &str) -> Result<(u32, u32), UserError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read(&root.join("etc/passwd"));
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd_entries(&passwd)
                .find(|e| e.uid == uid)
                .map_or(0, |e| e.gid),
        ),
        Err(_) => passwd_entries(&passwd)
            .find(|e| e.name == user)
            .map(|e| (e.uid, e.gid))
            .ok_or_else(|| UserError::NoUser(user.to_string()))?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(&read(&root.join("etc/group")))
                .find(|(name, _)| *name == g)
                .map(|(_, gid)| gid)
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        },
    };
    Ok((uid, gid))
}

/// `HOME` for `uid` when the environment has none: its passwd home, else `/`.
pub fn home_env(root: &Path, uid: u32, env: &[String]) -> Option<String> {
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return None;
    }
    let home = entry_by_uid(root, uid).map_or_else(|| "/".to_string(), |e| e.home);
    Some(format!("HOME={home}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\n# c\nbad line\nwww:x:33:34:www:/var/www:/bin/false\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:www\n").unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve_in_the_container_files() {
        let r = root();
        assert_eq!(resolve(r.path(), "www").unwrap(), (33, 34));
        assert_eq!(resolve(r.path(), "www:staff").unwrap(), (33, 50));
        assert_eq!(resolve(r.path(), "1000:7").unwrap(), (1000, 7));
        assert_eq!(resolve(r.path(), "33").unwrap(), (33, 34));
        assert_eq!(resolve(r.path(), "1000").unwrap(), (1000, 0));
        assert!(matches!(resolve(r.path(), "nobody"), Err(UserError::NoUser(u)) if u == "nobody"));
        assert!(
            matches!(resolve(r.path(), "www:wheel"), Err(UserError::NoGroup(g)) if g == "wheel")
        );
    }

    #[test]
    fn home_comes_from_passwd_unless_set() {
        let r = root();
        assert_eq!(
            home_env(r.path(), 33, &[]).as_deref(),
            Some("HOME=/var/www")
        );
        assert_eq!(home_env(r.path(), 99, &[]).as_deref(), Some("HOME=/"));
        assert_eq!(home_env(r.path(), 33, &["HOME=/x".into()]), None);
    }
}
