//! The pod's shared namespaces when no sandbox container holds them
//! (containerd's sandbox API: the VM is the pod, there is no pause
//! container). A holder process, started by the agent at CreateSandbox,
//! sits in a new IPC and UTS namespace (with the pod's hostname) and is the
//! parent of the init of a new PID namespace; the pod's containers join
//! them by the sandbox's id, as they would join a sandbox container's.
//!
//! `hull-agent pod-namespaces HOSTNAME` is the holder: it runs after
//! `unshare(CLONE_NEWIPC | CLONE_NEWUTS)` (done before exec by the agent),
//! forks the PID namespace's init, prints `ready INIT_PID` and waits.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::{fork, ForkResult, Pid};

use crate::errors::AgentError;

/// How long the holder may take to report its namespaces ready.
const READY_WITHIN: Duration = Duration::from_secs(5);

/// The running holder of a pod's namespaces.
#[derive(Debug)]
pub struct PodNamespaces {
    /// The sandbox id the pod's containers name in their namespace paths.
    pub sandbox_id: String,
    holder: i32,
    init: i32,
}

impl PodNamespaces {
    /// Starts the holder (from a blocking thread: it waits for the
    /// holder's `ready` line).
    pub fn start(sandbox_id: &str, hostname: &str) -> Result<PodNamespaces, AgentError> {
        let fail = |what: &str, e: std::io::Error| {
            AgentError::sys("pod namespaces")(std::io::Error::other(format!("{what}: {e}")))
        };
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("pod-namespaces")
            .arg(hostname)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: only unshare, an async-signal-safe system call, runs
        // between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                unshare(CloneFlags::CLONE_NEWIPC | CloneFlags::CLONE_NEWUTS)
                    .map_err(std::io::Error::from)
            });
        }
        // The agent's reaper collects the holder when it ends; waiting
        // here would race it.
        let mut child = cmd.spawn().map_err(|e| fail("spawn", e))?;
        let holder = child.id() as i32;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("holder", std::io::Error::other("no stdout pipe")))?;
        let line = read_line_within(stdout, READY_WITHIN).map_err(|e| {
            let _ = kill(Pid::from_raw(holder), Signal::SIGKILL);
            fail("holder's ready line", e)
        })?;
        let init = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<i32>().ok())
            .ok_or_else(|| {
                let _ = kill(Pid::from_raw(holder), Signal::SIGKILL);
                fail("holder", std::io::Error::other(format!("said {line:?}")))
            })?;
        Ok(PodNamespaces {
            sandbox_id: sandbox_id.into(),
            holder,
            init,
        })
    }

    /// The path of the pod's namespace `name` (`net` is the VM's own, where
    /// the pod's interfaces are).
    pub fn path(&self, name: &str) -> Result<PathBuf, AgentError> {
        let (pid, file) = match name {
            "ipc" | "uts" | "net" => (self.holder, name),
            "pid" => (self.init, "pid"),
            other => {
                return Err(AgentError::invalid(
                    "linux.namespaces",
                    format!("a pod shares no {other} namespace"),
                ))
            }
        };
        Ok(PathBuf::from(format!("/proc/{pid}/ns/{file}")))
    }

    /// Ends the holder and its PID namespace (killing the namespace's
    /// init ends every process left in it).
    pub fn stop(&self) {
        let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(self.holder), Signal::SIGKILL);
    }
}

/// Reads one line from the holder, or fails after `limit`.
fn read_line_within(out: std::process::ChildStdout, limit: Duration) -> std::io::Result<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let got = BufReader::new(out).read_line(&mut line).map(|_| line);
        let _ = tx.send(got);
    });
    rx.recv_timeout(limit)
        .map_err(|_| std::io::Error::other(format!("nothing within {limit:?}")))?
}

/// The holder process (`hull-agent pod-namespaces HOSTNAME`): single
/// threaded, already in the pod's IPC and UTS namespaces.
pub fn run_holder(args: &[String]) -> i32 {
    let hostname = args.first().map(String::as_str).unwrap_or("");
    if !hostname.is_empty() {
        if let Err(e) = nix::unistd::sethostname(hostname) {
            eprintln!("hull-agent pod-namespaces: sethostname: {e}");
            return 1;
        }
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        eprintln!("hull-agent pod-namespaces: unshare(CLONE_NEWPID): {e}");
        return 1;
    }
    // SAFETY: the holder is single threaded (run before any runtime).
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            // The namespace ends with its holder.
            // SAFETY: prctl with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            pid_namespace_init()
        }
        Ok(ForkResult::Parent { child }) => {
            println!("ready {child}");
            // Closing stdout tells the agent nothing more comes.
            // SAFETY: fd 1 is this process's stdout, not used again.
            unsafe { libc::close(1) };
            let _ = waitpid(child, None);
            0
        }
        Err(e) => {
            eprintln!("hull-agent pod-namespaces: fork: {e}");
            1
        }
    }
}

/// PID 1 of the pod's PID namespace: reaps what is orphaned into it.
fn pid_namespace_init() -> ! {
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    // Blocked, SIGCHLD stays pending until sigwait takes it: none is lost
    // between two reaping rounds.
    let _ = chld.thread_block();
    loop {
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status.pid().is_none() {
                break;
            }
        }
        let _ = chld.wait();
    }
}
