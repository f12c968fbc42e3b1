//! OCI hooks: programs run at points of a container's life, with the
//! container's state as JSON on their stdin.
//!
//! Who runs which hook, and where (as runc does):
//! - `prestart`, `createRuntime`: the runtime, in its own namespaces, once
//!   the container's namespaces and mounts exist, before pivot_root;
//! - `createContainer`: the container init, in the container's namespaces,
//!   before pivot_root (paths resolve in the runtime's filesystem);
//! - `startContainer`: the container init after `start`, just before the
//!   user program (paths resolve inside the container);
//! - `poststart`: the runtime once the user program runs;
//! - `poststop`: the runtime when the container is deleted.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks, State};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{kind} hook {path}: start: {source}")]
    Spawn {
        kind: HookKind,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} hook {path}: {status}{stderr}")]
    Failed {
        kind: HookKind,
        path: String,
        status: String,
        stderr: String,
    },
    #[error("{kind} hook {path}: timed out after {secs} s (killed)")]
    Timeout {
        kind: HookKind,
        path: String,
        secs: i64,
    },
    #[error("{kind} hook {path}: timeout must be greater than zero, got {secs}")]
    BadTimeout {
        kind: HookKind,
        path: String,
        secs: i64,
    },
    #[error("hook state: {0}")]
    State(#[from] serde_json::Error),
}

/// The points of a container's life at which hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl std::fmt::Display for HookKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        })
    }
}

impl HookKind {
    /// This kind's hooks in `hooks`, in order.
    pub fn of(self, hooks: Option<&Hooks>) -> &[Hook] {
        let Some(h) = hooks else { return &[] };
        #[allow(deprecated)]
        let list = match self {
            HookKind::Prestart => h.prestart(),
            HookKind::CreateRuntime => h.create_runtime(),
            HookKind::CreateContainer => h.create_container(),
            HookKind::StartContainer => h.start_container(),
            HookKind::Poststart => h.poststart(),
            HookKind::Poststop => h.poststop(),
        };
        list.as_deref().unwrap_or_default()
    }
}

/// The OCI state a hook receives on its stdin.
pub fn state(
    spec: &oci_spec::runtime::Spec,
    id: &str,
    status: oci_spec::runtime::ContainerState,
    pid: Option<i32>,
    bundle: &std::path::Path,
) -> State {
    let mut s = State::default();
    s.set_version(spec.version().clone());
    s.set_id(id.to_string());
    s.set_status(status);
    s.set_pid(pid);
    s.set_bundle(bundle.to_path_buf());
    s.set_annotations(spec.annotations().clone());
    s
}

/// Runs every hook of `kind` in order; the first failure stops the rest.
pub fn run(kind: HookKind, hooks: Option<&Hooks>, state: &State) -> Result<(), HookError> {
    let list = kind.of(hooks);
    if list.is_empty() {
        return Ok(());
    }
    let input = serde_json::to_vec(state)?;
    list.iter().try_for_each(|h| run_one(kind, h, &input))
}

/// How often a running hook is checked for exit or timeout.
const POLL: Duration = Duration::from_millis(2);

fn run_one(kind: HookKind, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().display().to_string();
    let timeout = match hook.timeout() {
        Some(secs) if secs <= 0 => {
            return Err(HookError::BadTimeout { kind, path, secs });
        }
        t => t,
    };
    let mut command = Command::new(hook.path());
    let args = hook.args().as_deref().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        command.arg0(argv0).args(rest);
    }
    command
        .env_clear()
        .envs(
            hook.env()
                .as_deref()
                .unwrap_or_default()
                .iter()
                .filter_map(|e| e.split_once('=')),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|source| HookError::Spawn {
        kind,
        path: path.clone(),
        source,
    })?;
    // A hook may exit without reading its stdin: a broken pipe is its business.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state);
    }
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => return Err(HookError::Spawn { kind, path, source }),
        }
        if let Some(secs) = timeout {
            if started.elapsed() >= Duration::from_secs(secs as u64) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::Timeout { kind, path, secs });
            }
        }
        std::thread::sleep(POLL);
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    let stderr = stderr.trim();
    Err(HookError::Failed {
        kind,
        path,
        status: status.to_string(),
        stderr: if stderr.is_empty() {
            String::new()
        } else {
            format!(": {stderr}")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder, StateBuilder};

    fn state() -> State {
        StateBuilder::default()
            .version("1.0.2")
            .id("c1")
            .pid(42)
            .bundle("/b")
            .build()
            .unwrap()
    }

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        let mut b = HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".into(), "-c".into(), script.into()])
            .env(vec!["HOOKVAR=v".to_string()]);
        if let Some(t) = timeout {
            b = b.timeout(t);
        }
        b.build().unwrap()
    }

    #[test]
    fn hooks_get_state_and_env_and_run_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = out.display();
        let hooks = HooksBuilder::default()
            .poststop(vec![
                sh(&format!("cat >> {o}; echo \" $HOOKVAR 1\" >> {o}"), None),
                sh(&format!("echo 2 >> {o}"), Some(5)),
            ])
            .build()
            .unwrap();
        run(HookKind::Poststop, Some(&hooks), &state()).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        let (json, rest) = text.split_once('}').unwrap();
        let got: State = serde_json::from_str(&format!("{json}}}")).unwrap();
        assert_eq!(got.id(), "c1");
        assert_eq!(got.pid(), &Some(42));
        assert_eq!(rest, " v 1\n2\n");
    }

    #[test]
    fn failure_names_hook_status_and_stderr_and_stops_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let hooks = HooksBuilder::default()
            .create_runtime(vec![
                sh("echo no good >&2; exit 3", None),
                sh(&format!("touch {}", marker.display()), None),
            ])
            .build()
            .unwrap();
        let err = run(HookKind::CreateRuntime, Some(&hooks), &state())
            .unwrap_err()
            .to_string();
        assert!(err.contains("createRuntime hook /bin/sh"), "{err}");
        assert!(err.contains("exit status: 3"), "{err}");
        assert!(err.contains("no good"), "{err}");
        assert!(!marker.exists());
    }

    #[test]
    fn timeout_kills_the_hook() {
        let hooks = HooksBuilder::default()
            .poststart(vec![sh("sleep 30", Some(1))])
            .build()
            .unwrap();
        let t = Instant::now();
        let err = run(HookKind::Poststart, Some(&hooks), &state()).unwrap_err();
        assert!(matches!(err, HookError::Timeout { secs: 1, .. }), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn zero_timeout_is_refused() {
        let hooks = HooksBuilder::default()
            .poststart(vec![sh("true", Some(0))])
            .build()
            .unwrap();
        let err = run(HookKind::Poststart, Some(&hooks), &state()).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
    }
}
