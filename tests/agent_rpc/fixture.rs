//! One agent per case: `hull-agent --unix-dir DIR` in its own network, UTS
//! and mount namespaces (so hostnames, interfaces and mounts it makes stay
//! off this host), with containers in cgroups under one parent that `Drop`
//! empties whatever the case did.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use oci_spec::runtime::{Mount, Process, Spec};
use protocols::agent::{self, CreateContainerRequest, ExecProcessRequest};
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::health_ttrpc::HealthClient;
use protocols::stream::{StreamHeader, StreamKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use ttrpc::context::Context;

pub type RpcResult<T> = Result<T, ttrpc::Error>;

/// The agent under test: the static release build `make agent` makes, or
/// `HULL_AGENT`.
fn agent_binary() -> PathBuf {
    if let Ok(p) = std::env::var("HULL_AGENT") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/release/hull-agent");
    assert!(
        p.exists(),
        "{} is missing: build it with `make agent` (or set HULL_AGENT)",
        p.display()
    );
    p
}

/// A read-only busybox root shared by every container of the run.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rpc-rootfs");
        let busybox = root.join("bin/busybox");
        if !busybox.exists() {
            for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "data"] {
                std::fs::create_dir_all(root.join(d)).expect("mkdir rootfs");
            }
            std::fs::copy("/bin/busybox", &busybox).expect("copy /bin/busybox (busybox-static)");
            let list = Command::new(&busybox)
                .arg("--list")
                .output()
                .expect("busybox --list");
            for applet in String::from_utf8_lossy(&list.stdout).lines() {
                let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
            }
            std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").expect("passwd");
            std::fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
        }
        root
    })
}

/// `spec` without a namespace of type `t`: the container shares the
/// agent's.
pub fn share_agent_namespace(spec: &mut Spec, t: oci_spec::runtime::LinuxNamespaceType) {
    let mut linux = spec.linux().clone().expect("linux");
    let ns: Vec<_> = linux
        .namespaces()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.typ() != t)
        .collect();
    linux.set_namespaces(Some(ns));
    spec.set_linux(Some(linux));
}

pub fn code(e: &ttrpc::Error) -> ttrpc::Code {
    match e {
        ttrpc::Error::RpcStatus(s) => s.code(),
        other => panic!("not an RPC status: {other:?}"),
    }
}

pub fn message(e: &ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        other => format!("{other:?}"),
    }
}

/// Asserts `r` failed with `want`, its message containing `mentions`.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(r: RpcResult<T>, want: ttrpc::Code, mentions: &str) {
    let e = r.expect_err(&format!("expected {want:?} mentioning {mentions:?}"));
    assert_eq!(code(&e), want, "{}", message(&e));
    assert!(
        message(&e).contains(mentions),
        "{:?} lacks {mentions:?}",
        message(&e)
    );
}

pub fn ctx() -> Context {
    ttrpc::context::with_timeout(Duration::from_secs(30).as_nanos() as i64)
}

/// No deadline: WaitProcess, Read*, GetOOMEvent.
pub fn long_poll() -> Context {
    Context::default()
}

pub struct Agent {
    pub dir: tempfile::TempDir,
    child: Child,
    pub agent: AgentServiceClient,
    pub health: HealthClient,
    pub client: ttrpc::r#async::Client,
    /// The parent cgroup (below each v1 controller, or the v2 root).
    cgroup: String,
}

impl Agent {
    pub async fn start() -> Agent {
        Agent::start_with(false).await
    }

    /// Like `start`, in a PID namespace of its own (a shell is its PID 1,
    /// the agent a subreaper under it), so a test can steer pid allocation
    /// with `ns_last_pid`.
    pub async fn start_in_pid_namespace() -> Agent {
        Agent::start_with(true).await
    }

    async fn start_with(own_pid_ns: bool) -> Agent {
        assert!(nix_is_root(), "the agent RPC suite needs root");
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("agent.log")).expect("log");
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--uts", "--mount", "--propagation", "private"]);
        if own_pid_ns {
            cmd.args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
                "sh",
                "-c",
            ])
            .arg(format!(
                "{} --unix-dir {} --log-level debug & wait",
                agent_binary().display(),
                dir.path().display()
            ));
        } else {
            cmd.arg("--")
                .arg(agent_binary())
                .args(["--unix-dir"])
                .arg(dir.path())
                .args(["--log-level", "debug"]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0);
        let child = cmd.spawn().expect("spawn unshare hull-agent");
        let sock = dir.path().join("agent.sock");
        let start = Instant::now();
        let client = loop {
            if let Ok(c) =
                ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display())).await
            {
                let health = HealthClient::new(c.clone());
                if health.check(ctx(), &Default::default()).await.is_ok() {
                    break c;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "agent did not answer in 10 s; its log:\n{}",
                std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Agent {
            cgroup: format!("hull-rpc-{}-{n}", std::process::id()),
            dir,
            child,
            agent: AgentServiceClient::new(client.clone()),
            health: HealthClient::new(client.clone()),
            client,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// The cgroup a container of this agent goes in.
    pub fn cgroups_path(&self, id: &str) -> String {
        format!("/{}/{id}", self.cgroup)
    }

    /// A runc-style spec running `args` in the shared busybox root, with a
    /// writable /tmp.
    pub fn spec(&self, id: &str, args: &[&str]) -> Spec {
        let mut spec = Spec::default();
        let mut root = spec.root().clone().expect("default root");
        root.set_path(rootfs().to_path_buf())
            .set_readonly(Some(true));
        spec.set_root(Some(root)).set_hostname(Some(id.to_string()));
        let mut process = spec.process().clone().expect("default process");
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(process));
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        let tmp: Mount = serde_json::from_value(serde_json::json!({
            "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]
        }))
        .expect("tmp mount");
        mounts.push(tmp);
        spec.set_mounts(Some(mounts));
        let mut linux = spec.linux().clone().expect("default linux");
        linux.set_cgroups_path(Some(PathBuf::from(self.cgroups_path(id))));
        spec.set_linux(Some(linux));
        spec
    }

    pub async fn create(&self, id: &str, spec: &Spec) -> RpcResult<()> {
        let req = CreateContainerRequest {
            container_id: id.into(),
            hull_oci_spec_json: serde_json::to_string(spec).expect("spec json"),
            ..Default::default()
        };
        self.agent.create_container(ctx(), &req).await.map(drop)
    }

    pub async fn start_container(&self, id: &str) -> RpcResult<()> {
        let req = agent::StartContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.agent.start_container(ctx(), &req).await.map(drop)
    }

    /// Creates and starts a container running `args`.
    pub async fn run(&self, id: &str, args: &[&str]) {
        self.create(id, &self.spec(id, args))
            .await
            .expect("CreateContainer");
        self.start_container(id).await.expect("StartContainer");
    }

    pub fn process(args: &[&str], terminal: bool) -> Process {
        let mut p = Process::default();
        p.set_args(Some(args.iter().map(|s| s.to_string()).collect()))
            .set_terminal(Some(terminal));
        p
    }

    pub async fn exec(&self, id: &str, exec_id: &str, p: &Process) -> RpcResult<()> {
        let req = ExecProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            hull_oci_process_json: serde_json::to_string(p).expect("process json"),
            ..Default::default()
        };
        self.agent.exec_process(ctx(), &req).await.map(drop)
    }

    pub async fn wait(&self, id: &str, exec_id: &str) -> RpcResult<i32> {
        let req = agent::WaitProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.agent
            .wait_process(long_poll(), &req)
            .await
            .map(|r| r.status)
    }

    pub async fn signal(&self, id: &str, exec_id: &str, signal: i32) -> RpcResult<()> {
        let req = agent::SignalProcessRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            signal: signal as u32,
            ..Default::default()
        };
        self.agent.signal_process(ctx(), &req).await.map(drop)
    }

    pub async fn remove(&self, id: &str) -> RpcResult<()> {
        self.remove_within(id, 10).await
    }

    pub async fn remove_within(&self, id: &str, timeout: u32) -> RpcResult<()> {
        let req = agent::RemoveContainerRequest {
            container_id: id.into(),
            timeout,
            ..Default::default()
        };
        self.agent.remove_container(ctx(), &req).await.map(drop)
    }

    pub async fn read_chunk(
        &self,
        id: &str,
        exec_id: &str,
        kind: StreamKind,
    ) -> RpcResult<Vec<u8>> {
        let req = agent::ReadStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            len: 64 * 1024,
            ..Default::default()
        };
        let r = match kind {
            StreamKind::Stdout => self.agent.read_stdout(long_poll(), &req).await,
            StreamKind::Stderr => self.agent.read_stderr(long_poll(), &req).await,
            StreamKind::Stdin => panic!("stdin is not readable"),
        };
        r.map(|r| r.data)
    }

    /// Reads a stream through the RPCs until its end (OUT_OF_RANGE).
    pub async fn read_all(&self, id: &str, exec_id: &str, kind: StreamKind) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            match self.read_chunk(id, exec_id, kind).await {
                Ok(data) => out.extend(data),
                Err(e) if code(&e) == ttrpc::Code::OUT_OF_RANGE => return out,
                Err(e) => panic!("read {kind:?}: {e:?}"),
            }
        }
    }

    pub async fn write_stdin(&self, id: &str, exec_id: &str, data: &[u8]) -> RpcResult<u32> {
        let req = agent::WriteStreamRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            data: data.to_vec(),
            ..Default::default()
        };
        self.agent.write_stdin(ctx(), &req).await.map(|r| r.len)
    }

    pub async fn close_stdin(&self, id: &str, exec_id: &str) -> RpcResult<()> {
        let req = agent::CloseStdinRequest {
            container_id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.agent.close_stdin(ctx(), &req).await.map(drop)
    }

    /// Hull's raw stream: a connection to `stdio.sock` after the header
    /// handshake; Err carries the agent's `ERR` line.
    pub async fn raw_stream(
        &self,
        id: &str,
        exec_id: &str,
        kind: StreamKind,
    ) -> Result<tokio::net::UnixStream, String> {
        self.stream(id, exec_id, kind, false).await
    }

    /// An output stream announced `direct`, before its process exists: the
    /// process created next under this id writes into it itself.
    pub async fn direct_stream(
        &self,
        id: &str,
        exec_id: &str,
        kind: StreamKind,
    ) -> Result<tokio::net::UnixStream, String> {
        self.stream(id, exec_id, kind, true).await
    }

    async fn stream(
        &self,
        id: &str,
        exec_id: &str,
        kind: StreamKind,
        direct: bool,
    ) -> Result<tokio::net::UnixStream, String> {
        let mut s = tokio::net::UnixStream::connect(self.dir.path().join("stdio.sock"))
            .await
            .expect("connect stdio.sock");
        let header = StreamHeader {
            container_id: id.into(),
            exec_id: exec_id.into(),
            kind,
            direct,
        };
        s.write_all(header.encode().as_bytes())
            .await
            .expect("header");
        let mut reply = Vec::new();
        loop {
            let b = s.read_u8().await.expect("reply");
            if b == b'\n' {
                break;
            }
            reply.push(b);
        }
        let reply = String::from_utf8_lossy(&reply).to_string();
        if reply == "OK" {
            Ok(s)
        } else {
            Err(reply)
        }
    }

    /// Calls a method by name (for the ones the generated client lacks).
    pub async fn call_raw(&self, service: &str, method: &str) -> RpcResult<Vec<u8>> {
        let mut req = ttrpc::proto::Request::new();
        req.service = service.into();
        req.method = method.into();
        req.timeout_nano = Duration::from_secs(10).as_nanos() as i64;
        self.client.request(req).await.map(|r| r.payload)
    }

    /// Freezes (or thaws) the parent of every container cgroup of this
    /// agent from outside, as an operator or a stuck host could: thawing a
    /// container's own cgroup does not undo it.
    pub fn freeze_parent(&self, frozen: bool) {
        let v2 = Path::new("/sys/fs/cgroup")
            .join(&self.cgroup)
            .join("cgroup.freeze");
        let v1 = Path::new("/sys/fs/cgroup/freezer")
            .join(&self.cgroup)
            .join("freezer.state");
        let (file, value) = if v2.exists() {
            (v2, if frozen { "1" } else { "0" })
        } else {
            (v1, if frozen { "FROZEN" } else { "THAWED" })
        };
        std::fs::write(&file, value).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }

    /// Whether container `id`'s cgroup exists in any hierarchy.
    pub fn has_cgroup(&self, id: &str) -> bool {
        self.cgroup_dirs().iter().any(|d| d.join(id).exists())
    }

    /// Cgroup directories of this agent's containers (v1: below every
    /// controller; v2: below the root).
    fn cgroup_dirs(&self) -> Vec<PathBuf> {
        let base = Path::new("/sys/fs/cgroup");
        let unified = base.join("cgroup.controllers").exists();
        let parents: Vec<PathBuf> = if unified {
            vec![base.join(&self.cgroup)]
        } else {
            std::fs::read_dir(base)
                .map(|d| {
                    d.filter_map(|e| Some(e.ok()?.path().join(&self.cgroup)))
                        .collect()
                })
                .unwrap_or_default()
        };
        parents.into_iter().filter(|p| p.is_dir()).collect()
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Reads a line-oriented raw stream to its end.
pub async fn read_to_end(s: tokio::net::UnixStream) -> String {
    let mut out = String::new();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    while r.read_line(&mut line).await.expect("read stream") > 0 {
        out.push_str(&line);
        line.clear();
    }
    out
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- agent log ---\n{}--- end of agent log ---", self.log());
        }
        // Whatever the case left: thaw, kill, then remove the cgroups.
        let dirs = self.cgroup_dirs();
        for parent in &dirs {
            let children = std::fs::read_dir(parent)
                .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect::<Vec<_>>());
            for c in children
                .unwrap_or_default()
                .into_iter()
                .filter(|p| p.is_dir())
            {
                let _ = std::fs::write(c.join("freezer.state"), "THAWED");
                let _ = std::fs::write(c.join("cgroup.freeze"), "0");
                for pid in std::fs::read_to_string(c.join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill has no memory-safety preconditions.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(100));
        for parent in &dirs {
            if let Ok(d) = std::fs::read_dir(parent) {
                for c in d
                    .filter_map(|e| Some(e.ok()?.path()))
                    .filter(|p| p.is_dir())
                {
                    let _ = std::fs::remove_dir(c);
                }
            }
            let _ = std::fs::remove_dir(parent);
        }
    }
}
