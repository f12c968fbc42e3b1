//! Bundles for the conformance cases: a busybox root filesystem with its
//! own users, and the default spec `runc spec` writes, as JSON to edit.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// One case's bundle directory: `rootfs/` and `config.json`.
pub struct Bundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
}

/// Shell helpers every checker script starts with. `mnt_opts`/`mnt_type`
/// read the last mount at a path from /proc/self/mountinfo (its per-mount
/// options; its filesystem type and superblock options).
const PRELUDE: &str = r#"
fail() { echo "FAIL: $*"; exit 1; }
eq() { [ "$1" = "$2" ] || fail "$3: got [$1], want [$2]"; }
has() { case "$1" in *"$2"*) ;; *) fail "$3: [$1] lacks [$2]";; esac; }
lacks() { case "$1" in *"$2"*) fail "$3: [$1] has [$2]";; esac; }
mnt_opts() { awk -v d="$1" '$5==d {o=$6} END {print o}' /proc/self/mountinfo; }
mnt_type() { awk -v d="$1" '$5==d {for(i=7;i<=NF;i++) if($i=="-") {t=$(i+1)" "$(i+3)}} END {print t}' /proc/self/mountinfo; }
mnt_tags() { awk -v d="$1" '$5==d {t=""; for(i=7;i<=NF && $i!="-";i++) t=t" "$i} END {print t}' /proc/self/mountinfo; }
status_field() { awk -v k="$1:" '$1==k {print $2}' /proc/self/status; }
"#;

fn build_rootfs(root: &Path) {
    for d in ["bin", "etc", "proc", "sys", "dev", "root", "home/u", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nu:x:1000:1000:u:/home/u:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nwheel:x:10:u\nusers:x:100:u\nu:x:1000:\n",
    )
    .unwrap();
}

/// `runc spec`'s default configuration, with `args` a checker script.
fn default_spec(script: &str) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", format!("{PRELUDE}\n{script}\necho PASS")],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "effective": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
                "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "conformance",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                           {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                            "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                            "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                              "/proc/sysrq-trigger"]
        }
    })
}

impl Bundle {
    /// A bundle whose process runs `script` (after the helpers) and
    /// prints PASS if every check in it held.
    pub fn new(script: &str) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("hull-conf-")
            .tempdir()
            .unwrap();
        build_rootfs(&dir.path().join("rootfs"));
        Bundle {
            dir,
            spec: default_spec(script),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn write(&self) {
        std::fs::write(
            self.dir.path().join("config.json"),
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }

    pub fn process(&mut self) -> &mut Value {
        &mut self.spec["process"]
    }

    pub fn linux(&mut self) -> &mut Value {
        &mut self.spec["linux"]
    }

    pub fn add_mount(&mut self, mount: Value) {
        self.spec["mounts"].as_array_mut().unwrap().push(mount);
    }

    pub fn add_namespace(&mut self, ns: Value) {
        self.spec["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(ns);
    }

    /// Drops mounts at these destinations.
    pub fn remove_mounts(&mut self, destinations: &[&str]) {
        self.spec["mounts"]
            .as_array_mut()
            .unwrap()
            .retain(|m| !destinations.contains(&m["destination"].as_str().unwrap_or_default()));
    }
}
