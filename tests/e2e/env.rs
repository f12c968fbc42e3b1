//! The suite's private containerd, Hull configuration and image.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const IMAGE: &str = "docker.io/hull/busybox:latest";
pub const RUNTIME: &str = "io.containerd.hull.v2";
const NAMESPACE: &str = "hull-e2e";

/// A containerd the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Containerd {
    /// Debian's (on PATH).
    Debian,
    /// v2.3.4, built from its release source, in `../shared/containerd-2.3.4`.
    V2_3,
}

impl Containerd {
    pub const ALL: [Containerd; 2] = [Containerd::Debian, Containerd::V2_3];

    pub fn name(self) -> &'static str {
        match self {
            Containerd::Debian => "containerd 1.6",
            Containerd::V2_3 => "containerd 2.3",
        }
    }

    /// Whether its CRI plugin can make a pod through the shim's sandbox
    /// API (`sandboxer = "shim"`).
    pub fn has_sandbox_api(self) -> bool {
        self == Containerd::V2_3
    }

    fn tag(self) -> &'static str {
        match self {
            Containerd::Debian => "16",
            Containerd::V2_3 => "23",
        }
    }

    /// The directory of its `containerd` and `ctr` (None: PATH's).
    fn bin_dir(self, repo: &Path) -> Result<Option<PathBuf>, String> {
        match self {
            Containerd::Debian => Ok(None),
            Containerd::V2_3 => {
                let dir = repo.join("../shared/containerd-2.3.4");
                if !dir.join("containerd").is_file() || !dir.join("ctr").is_file() {
                    return Err(format!("no containerd 2.3.4 in {}", dir.display()));
                }
                Ok(Some(dir))
            }
        }
    }
}

pub struct Env {
    pub containerd: Containerd,
    bin_dir: Option<PathBuf>,
    pub repo: PathBuf,
    pub dir: PathBuf,
    pub sock: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// The configuration cases start from and go back to: the suite's,
    /// or a variant a case runs other cases under (`with_base_config`).
    good_config: std::sync::Mutex<String>,
}

/// Every command the suite starts is waited for with a deadline, so a hang
/// is a failed case with the output so far, never a stuck CI run.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `cmd` to completion (stdin empty, output captured), within `CMD_TIMEOUT`.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("run {cmd:?}: {e}"))?;
    finish(child, CMD_TIMEOUT).map_err(|e| format!("run {cmd:?}: {e}"))
}

/// Waits for a spawned child (its stdin closed first) for at most `limit`;
/// on expiry kills its process group and reports what it printed so far.
pub fn finish(mut child: Child, limit: Duration) -> Result<Output, String> {
    drop(child.stdin.take());
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break Some(status);
        }
        if Instant::now() > deadline {
            kill_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let collect =
        |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let (stdout, stderr) = (collect(out), collect(err));
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "still running after {limit:?}, killed; stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = from.read_to_end(&mut buf);
        buf
    })
}

/// Kills the child's process group (commands are started as group leaders,
/// so `script` and the `ctr` it runs go together), then the child itself.
fn kill_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-9", "--", &group]).status();
    let _ = child.kill();
    let _ = child.wait();
}

fn check(out: Output, what: &str) -> Result<Output, String> {
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Env {
    pub fn start(containerd: Containerd) -> Result<Env, String> {
        if !nix_is_root() {
            return Err("the end-to-end suite needs root (VMs, mounts, containerd)".into());
        }
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let repo = repo.canonicalize().map_err(|e| e.to_string())?;
        let bin_dir = containerd.bin_dir(&repo)?;
        let dir = PathBuf::from(format!(
            "/run/hull-e2e-{}-{}",
            std::process::id(),
            containerd.tag()
        ));
        let state_dir = dir.join("hull-state");
        std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
        let config = dir.join("configuration.toml");
        let template = std::fs::read_to_string(repo.join("config/configuration.toml"))
            .map_err(|e| e.to_string())?;
        // The suite's own hull-cache paths: no case takes a VM from the
        // machine's cache, and only the cache cases start one.
        let good_config = template
            .replace(
                "state_dir = \"/run/hull\"",
                &format!("state_dir = \"{}\"", state_dir.display()),
            )
            .replace(
                "socket = \"/run/hull-cache/cache.sock\"",
                &format!("socket = \"{}\"", dir.join("cache/cache.sock").display()),
            )
            .replace(
                "pool_dir = \"/run/hull-cache/pool\"",
                &format!("pool_dir = \"{}\"", dir.join("cache/pool").display()),
            );
        std::fs::write(&config, &good_config).map_err(|e| e.to_string())?;
        let env = Env {
            containerd,
            bin_dir,
            sock: dir.join("containerd.sock"),
            repo,
            dir,
            config,
            state_dir,
            good_config: std::sync::Mutex::new(good_config),
        };
        check(
            run(&mut env.containerd_script("start"))?,
            "start containerd",
        )?;
        let tar = env.dir.join("busybox.tar");
        check(
            run(Command::new("bash")
                .arg(env.repo.join("scripts/busybox-image.sh"))
                .arg(&tar))?,
            "build image",
        )?;
        check(
            run(env.ctr().args(["image", "import"]).arg(&tar))?,
            "import image",
        )?;
        env.import_cri_images(&tar)?;
        Ok(env)
    }

    /// The CRI plugin's namespace gets busybox and a pause image (busybox
    /// sleeping), as no registry is reachable.
    fn import_cri_images(&self, busybox: &Path) -> Result<(), String> {
        let pause = self.dir.join("pause.tar");
        check(
            run(Command::new("bash")
                .arg(self.repo.join("scripts/busybox-image.sh"))
                .arg(&pause)
                .arg("docker.io/hull/pause:latest")
                .arg(r#"["sleep","2147483647"]"#))?,
            "build pause image",
        )?;
        for tar in [busybox, &pause] {
            check(
                run(self.ctr_in("k8s.io").args(["image", "import"]).arg(tar))?,
                "import image for CRI",
            )?;
        }
        Ok(())
    }

    /// Stops and starts the private containerd; shims (and their VMs) are
    /// separate processes and keep running.
    pub fn restart_containerd(&self) -> Result<(), String> {
        self.stop_containerd()?;
        self.start_containerd()
    }

    pub fn stop_containerd(&self) -> Result<(), String> {
        check(run(&mut self.containerd_script("stop"))?, "containerd stop").map(drop)
    }

    pub fn start_containerd(&self) -> Result<(), String> {
        check(
            run(&mut self.containerd_script("start"))?,
            "containerd start",
        )
        .map(drop)
    }

    /// The `containerd` binary this suite runs.
    pub fn containerd_binary(&self) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join("containerd"),
            None => PathBuf::from("containerd"),
        }
    }

    /// `scripts/containerd.sh VERB` for this suite's containerd.
    fn containerd_script(&self, verb: &str) -> Command {
        let mut c = Command::new("bash");
        c.arg(self.repo.join("scripts/containerd.sh"))
            .arg(verb)
            .env("HULL_CTRD_DIR", &self.dir)
            .env("HULL_CONFIG", &self.config);
        if let Some(dir) = &self.bin_dir {
            c.env("HULL_CONTAINERD_BIN", dir);
        }
        c
    }

    /// `ctr` against the private containerd.
    pub fn ctr(&self) -> Command {
        self.ctr_in(NAMESPACE)
    }

    /// `ctr` in another containerd namespace (CRI's is `k8s.io`).
    pub fn ctr_in(&self, namespace: &str) -> Command {
        let ctr = match &self.bin_dir {
            Some(dir) => dir.join("ctr"),
            None => PathBuf::from("ctr"),
        };
        let mut c = Command::new(ctr);
        c.arg("--address")
            .arg(&self.sock)
            .args(["-n", namespace])
            .process_group(0);
        c
    }

    /// `ctr run --rm --runtime hull IMAGE id args...`
    pub fn run_cmd(&self, id: &str, args: &[&str]) -> Command {
        self.run_with(id, &[], args)
    }

    /// `ctr run --rm --runtime hull OPTIONS... IMAGE id args...`
    pub fn run_with(&self, id: &str, options: &[&str], args: &[&str]) -> Command {
        let mut c = self.ctr();
        c.args(["run", "--rm", "--runtime", RUNTIME])
            .args(options)
            .args([IMAGE, id])
            .args(args);
        c
    }

    pub fn write_config(&self, text: &str) -> Result<(), String> {
        std::fs::write(&self.config, text).map_err(|e| e.to_string())
    }

    pub fn restore_config(&self) -> Result<(), String> {
        self.write_config(&self.good_config())
    }

    pub fn good_config(&self) -> String {
        self.good_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `f` with `config` as the base configuration: cases that change
    /// the configuration start from it and restore it; then the suite's
    /// comes back.
    pub fn with_base_config<T>(
        &self,
        config: &str,
        f: impl FnOnce() -> Result<T, String>,
    ) -> Result<T, String> {
        let saved = std::mem::replace(
            &mut *self.good_config.lock().unwrap_or_else(|e| e.into_inner()),
            config.to_string(),
        );
        let result = self.write_config(config).and_then(|()| f());
        *self.good_config.lock().unwrap_or_else(|e| e.into_inner()) = saved;
        self.restore_config()?;
        result
    }

    /// Processes whose command line mentions `needle`.
    pub fn processes_with(needle: &str) -> Vec<String> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if text.contains(needle) && !text.contains("hull-tests") && !text.contains("/e2e-") {
                found.push(format!(
                    "{} {}",
                    entry.file_name().to_string_lossy(),
                    text.trim()
                ));
            }
        }
        found
    }

    /// Processes of the VMs whose directories are below `dir`: named on
    /// their command line, or (a VM taken from hull-cache, whose command
    /// line names its pool directory) writing their output into it. As
    /// `processes_with`: "pid cmdline".
    pub fn vm_processes_under(dir: &Path) -> Vec<String> {
        let needle = dir.display().to_string();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let output = std::fs::read_link(entry.path().join("fd/1")).unwrap_or_default();
            let ours = text.contains(&needle) || output.starts_with(dir);
            if ours && !text.contains("hull-tests") && !text.contains("/e2e-") {
                found.push(format!(
                    "{} {}",
                    entry.file_name().to_string_lossy(),
                    text.trim()
                ));
            }
        }
        found
    }

    /// After a case: no VM, helper, shim, mount, socket or state of any task.
    pub fn check_no_leaks(&self) -> Result<(), String> {
        self.check_no_leaks_but(None)
    }

    /// The leak check, with processes whose command line contains `except`
    /// (a case's own long-running client) not counted.
    pub fn check_no_leaks_but(&self, except: Option<&str>) -> Result<(), String> {
        // Shims exit right after containerd's Shutdown; give them a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut leaks = self.leaks();
            leaks.retain(|l| except.is_none_or(|e| !l.contains(e)));
            if leaks.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("left behind: {leaks:#?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn leaks(&self) -> Vec<String> {
        let mut leaks = Env::processes_with(&self.state_dir.display().to_string());
        leaks.extend(Env::processes_with(&format!(
            "-address {}",
            self.sock.display()
        )));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let state = self.state_dir.display().to_string();
        let tasks = self
            .dir
            .join("state/io.containerd.runtime.v2.task")
            .display()
            .to_string();
        leaks.extend(
            mounts
                .lines()
                .filter(|l| l.contains(&state) || l.contains(&tasks))
                .map(|l| format!("mount {l}")),
        );
        for entry in std::fs::read_dir(&self.state_dir)
            .into_iter()
            .flatten()
            .flatten()
        {
            leaks.push(format!("state {}", entry.path().display()));
        }
        leaks.extend(self.taken_vm_processes());
        leaks
    }

    /// hull-cache's pool directory for the suite.
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.join("cache/pool")
    }

    /// Processes of VMs taken from the suite's hull-cache (QEMU, helpers,
    /// keeper): their command lines name the VM's pool directory, which
    /// moved to its sandbox's when it was taken. A waiting VM's is still
    /// in the pool; after a case no taken VM may be left.
    pub fn taken_vm_processes(&self) -> Vec<String> {
        let pool = format!("{}/", self.pool_dir().display());
        Env::processes_with(&pool)
            .into_iter()
            .filter(|p| {
                let name = p
                    .split(&pool)
                    .nth(1)
                    .and_then(|rest| rest.split(['/', ' ']).next())
                    .unwrap_or_default();
                name.is_empty() || !self.pool_dir().join(name).exists()
            })
            .map(|p| format!("taken VM process {p}"))
            .collect()
    }

    /// Best effort after a failed case, so the next case starts clean.
    pub fn force_cleanup(&self) {
        let list = self
            .ctr()
            .args(["task", "ls", "-q"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        for id in String::from_utf8_lossy(&list).lines() {
            let _ = self.ctr().args(["task", "kill", "-s", "KILL", id]).output();
            std::thread::sleep(Duration::from_millis(500));
            let _ = self.ctr().args(["task", "delete", "-f", id]).output();
        }
        let list = self
            .ctr()
            .args(["container", "ls", "-q"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        for id in String::from_utf8_lossy(&list).lines() {
            let _ = self.ctr().args(["container", "delete", id]).output();
        }
        let _ = self.restore_config();
    }

    pub fn stop(&self) {
        self.force_cleanup();
        let _ = self
            .containerd_script("stop")
            .stdout(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    pub fn unique(&self, case: &str) -> String {
        format!("{case}-{}", std::process::id())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        Path::new(&self.dir).join(rel)
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
