//! The container process itself: rlimits, user, working directory,
//! environment and the final execve.

use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{PosixRlimit, PosixRlimitType, Process, User};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("process.args is empty")]
    NoArgs,
    #[error("executable {0:?} not found (in the container's $PATH)")]
    NotFound(String),
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("setrlimit {typ}: {source}")]
    Rlimit {
        typ: String,
        #[source]
        source: nix::Error,
    },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: nix::Error,
    },
    #[error("exec {path}: {source}")]
    Exec {
        path: String,
        #[source]
        source: nix::Error,
    },
}

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn sys(op: impl Into<String>) -> impl FnOnce(nix::Error) -> ProcessError {
    let op = op.into();
    move |source| ProcessError::Sys { op, source }
}

/// Finds `name` the way execvp would, in the container's `PATH`.
pub fn resolve_executable(
    name: &str,
    env: &[String],
    root: &Path,
) -> Result<PathBuf, ProcessError> {
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(name))
        .find(|candidate| {
            let on_disk = root.join(candidate.strip_prefix("/").unwrap_or(candidate));
            on_disk
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| ProcessError::NotFound(name.to_string()))
}

fn rlimit_resource(t: PosixRlimitType) -> nix::sys::resource::Resource {
    use nix::sys::resource::Resource as R;
    match t {
        PosixRlimitType::RlimitCpu => R::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => R::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => R::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => R::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => R::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => R::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => R::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => R::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => R::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => R::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => R::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => R::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => R::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => R::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => R::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => R::RLIMIT_RTTIME,
    }
}

pub fn set_rlimits(rlimits: &[PosixRlimit]) -> Result<(), ProcessError> {
    for r in rlimits {
        nix::sys::resource::setrlimit(rlimit_resource(r.typ()), r.soft(), r.hard()).map_err(
            |source| ProcessError::Rlimit {
                typ: r.typ().to_string(),
                source,
            },
        )?;
    }
    Ok(())
}

/// Switches to the spec's user and groups.
pub fn set_user(user: &User) -> Result<(), ProcessError> {
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(sys("setgroups"))?;
    nix::unistd::setresgid(
        Gid::from_raw(user.gid()),
        Gid::from_raw(user.gid()),
        Gid::from_raw(user.gid()),
    )
    .map_err(sys(format!("setgid {}", user.gid())))?;
    nix::unistd::setresuid(
        Uid::from_raw(user.uid()),
        Uid::from_raw(user.uid()),
        Uid::from_raw(user.uid()),
    )
    .map_err(sys(format!("setuid {}", user.uid())))?;
    // runc's default when the spec gives none.
    let mask = user.umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    Ok(())
}

fn cstrings(items: &[String], what: &'static str) -> Result<Vec<CString>, ProcessError> {
    items
        .iter()
        .map(|s| CString::new(s.as_bytes()).map_err(|_| ProcessError::Nul { what }))
        .collect()
}

/// The user program, resolved and ready for execve.
pub struct ExecPlan {
    path: CString,
    display: String,
    args: Vec<CString>,
    env: Vec<CString>,
}

impl ExecPlan {
    /// Resolves the program in the container's `PATH` (the process must
    /// already be inside the container's root).
    pub fn new(process: &Process) -> Result<Self, ProcessError> {
        let args = process.args().clone().unwrap_or_default();
        let first = args.first().ok_or(ProcessError::NoArgs)?;
        let env = process.env().clone().unwrap_or_default();
        let path = resolve_executable(first, &env, Path::new("/"))?;
        if !path.exists() {
            return Err(ProcessError::NotFound(first.clone()));
        }
        Ok(ExecPlan {
            path: CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
                ProcessError::Nul {
                    what: "process.args[0]",
                }
            })?,
            display: path.display().to_string(),
            args: cstrings(&args, "process.args")?,
            env: cstrings(&env, "process.env")?,
        })
    }

    /// Replaces this process with the program. Returns only on failure.
    pub fn exec(&self) -> Result<Infallible, ProcessError> {
        nix::unistd::execve(&self.path, &self.args, &self.env).map_err(|source| {
            ProcessError::Exec {
                path: self.display.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_in_container_path_only() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("opt/bin")).unwrap();
        let tool = root.path().join("opt/bin/tool");
        std::fs::write(&tool, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let env = vec!["PATH=/nowhere:/opt/bin".to_string()];
        assert_eq!(
            resolve_executable("tool", &env, root.path()).unwrap(),
            PathBuf::from("/opt/bin/tool")
        );
        assert!(matches!(
            resolve_executable("sh", &env, root.path()),
            Err(ProcessError::NotFound(_))
        ));
        assert_eq!(
            resolve_executable("./x", &env, root.path()).unwrap(),
            PathBuf::from("./x")
        );
    }

    #[test]
    fn non_executable_file_is_skipped() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("bin/data"), "x").unwrap();
        let env = vec!["PATH=/bin".to_string()];
        assert!(resolve_executable("data", &env, root.path()).is_err());
    }
}
