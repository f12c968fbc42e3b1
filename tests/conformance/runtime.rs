//! The runtimes under test, driven through their command lines.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bundle::Bundle;

pub struct Runtime {
    pub name: &'static str,
    bin: PathBuf,
    root: tempfile::TempDir,
}

/// hull-jail (from this workspace's release build, or `HULL_JAIL`), and
/// the reference runtimes.
pub fn all() -> Vec<Runtime> {
    let hull = std::env::var_os("HULL_JAIL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/hull-jail")
        });
    assert!(
        hull.exists(),
        "{} missing: run `make build`",
        hull.display()
    );
    [
        ("hull-jail", hull),
        ("runc", "/usr/sbin/runc".into()),
        ("crun", "/usr/bin/crun".into()),
    ]
    .into_iter()
    .map(|(name, bin)| {
        assert!(
            bin.exists(),
            "{name}: {} missing (scripts/install-deps.sh)",
            bin.display()
        );
        Runtime {
            name,
            bin,
            root: tempfile::Builder::new()
                .prefix("hull-conf-root-")
                .tempdir()
                .unwrap(),
        }
    })
    .collect()
}

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// What a command printed and how it ended.
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    fn from(o: Output) -> Ran {
        use std::os::unix::process::ExitStatusExt;
        Ran {
            code: o
                .status
                .code()
                .unwrap_or_else(|| 128 + o.status.signal().unwrap_or(0)),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout.trim(),
            self.stderr.trim()
        )
    }

    /// The checker script printed PASS and the command succeeded.
    pub fn passed(&self) -> Result<(), String> {
        if self.code == 0 && self.stdout.lines().any(|l| l == "PASS") {
            Ok(())
        } else {
            Err(self.describe())
        }
    }
}

impl Runtime {
    /// A fresh container id.
    pub fn id(&self) -> String {
        format!(
            "conf-{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        )
    }

    pub fn command(&self) -> Command {
        let mut c = if self.name == "crun" {
            // crun 1.8.1 refuses a host whose cgroup2 mount (hybrid mode)
            // has controllers, as this one has (hugetlb): it runs in a
            // mount namespace without that mount, which changes nothing else.
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "sh",
                "-c",
                "umount /sys/fs/cgroup/unified 2>/dev/null; exec \"$0\" \"$@\"",
            ]);
            c.arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        c.arg("--root").arg(self.root.path());
        c
    }

    /// Runs the command to completion, stdin empty.
    pub fn cmd(&self, args: &[&str]) -> Ran {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", self.bin.display()));
        Ran::from(out)
    }

    /// `run` of the bundle in the foreground; the container is deleted.
    pub fn run(&self, bundle: &Bundle) -> Ran {
        bundle.write();
        let id = self.id();
        let ran = self.cmd(&["run", "--bundle", &bundle.path().display().to_string(), &id]);
        // A failed run may leave state behind; the next case must not see it.
        let _ = self.cmd(&["delete", "--force", &id]);
        ran
    }

    /// Runs the bundle and requires the checker to pass.
    pub fn check(&self, bundle: &Bundle) -> Result<(), String> {
        self.run(bundle).passed()
    }

    /// `create` with the container's stdio on files in the bundle (a
    /// pipe would be held open by the container).
    pub fn create(&self, bundle: &Bundle, id: &str) -> Ran {
        bundle.write();
        let out = std::fs::File::create(bundle.path().join("stdout")).unwrap();
        let err = std::fs::File::create(bundle.path().join("stderr")).unwrap();
        let status = self
            .command()
            .args([
                "create",
                "--bundle",
                &bundle.path().display().to_string(),
                id,
            ])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap();
        Ran {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(bundle.path().join("stdout")).unwrap_or_default(),
            stderr: std::fs::read_to_string(bundle.path().join("stderr")).unwrap_or_default(),
        }
    }

    /// The `state` JSON, or None if the command failed.
    fn state(&self, id: &str) -> Option<serde_json::Value> {
        let ran = self.cmd(&["state", id]);
        if ran.code != 0 {
            return None;
        }
        serde_json::from_str(&ran.stdout).ok()
    }

    /// The `status` field of `state`, or None if the command failed.
    pub fn status(&self, id: &str) -> Option<String> {
        self.state(id)?["status"].as_str().map(str::to_string)
    }

    /// The `pid` field of `state`.
    pub fn pid(&self, id: &str) -> Option<i32> {
        self.state(id)?["pid"].as_i64().map(|p| p as i32)
    }

    /// Waits up to 5 s for `state` to report `want`.
    pub fn wait_status(&self, id: &str, want: &str) -> Result<(), String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let got = self.status(id);
            if got.as_deref() == Some(want) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("state of {id}: {got:?}, want {want}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
