//! `linux.namespaces`: created, joined, and user and time namespace setup.

use serde_json::json;

use crate::bundle::Bundle;
use crate::runtime::Runtime;

fn ns_link(pid: &str, ns: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
        .unwrap()
        .display()
        .to_string()
}

pub fn new_namespaces(rt: &Runtime) -> Result<(), String> {
    let mut script = String::from(
        r#"eq $$ 1 "the process is pid 1"
eq "$(awk 'NR>2 {sub(":","",$1); print $1}' /proc/net/dev)" lo "only lo in a new network namespace"
"#,
    );
    for ns in ["pid", "net", "ipc", "uts", "mnt"] {
        let host = ns_link("self", ns);
        script.push_str(&format!(
            "[ \"$(readlink /proc/self/ns/{ns})\" != \"{host}\" ] || fail \"{ns} namespace is the host's\"\n"
        ));
    }
    rt.check(&Bundle::new(&script))
}

pub fn cgroup_namespace(rt: &Runtime) -> Result<(), String> {
    let host = ns_link("self", "cgroup");
    let mut b = Bundle::new(&format!(
        r#"[ "$(readlink /proc/self/ns/cgroup)" != "{host}" ] || fail "cgroup namespace is the host's"
eq "$(awk -F: '$3 != "/"' /proc/self/cgroup)" "" "every cgroup is / in a new cgroup namespace""#
    ));
    b.add_namespace(json!({"type": "cgroup"}));
    rt.check(&b)
}

pub fn user_namespace_mappings(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(awk '{print $1, $2, $3}' /proc/self/uid_map)" "0 100000 65536" uid_map
eq "$(awk '{print $1, $2, $3}' /proc/self/gid_map)" "0 200000 65536" gid_map
eq "$(id -u):$(id -g)" 0:0 "root inside"
eq "$(stat -c %u /bin/busybox)" 65534 "host root's files are unmapped"
echo x > /dev/null || fail "/dev/null works in a user namespace"
touch /tmp/f && eq "$(stat -c %u:%g /tmp/f)" 0:0 "new files belong to the namespace's root""#,
    );
    b.add_namespace(json!({"type": "user"}));
    b.linux()["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.linux()["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    // A user namespace cannot bind the host's cgroup hierarchy read-only
    // the way it is mounted for others; the case is about ids.
    b.remove_mounts(&["/sys/fs/cgroup"]);
    let r = rt.check(&b);
    let made = b.rootfs().join("tmp/f");
    match std::fs::metadata(&made) {
        Ok(m) if std::os::unix::fs::MetadataExt::uid(&m) == 100000 => r,
        Ok(m) => r.and(Err(format!(
            "a file made by container root is host uid {}, want 100000",
            std::os::unix::fs::MetadataExt::uid(&m)
        ))),
        Err(_) => r,
    }
}

pub fn time_namespace_offsets(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"up=$(awk '{print int($1)}' /proc/uptime)
[ "$up" -gt 31536000 ] || fail "boottime offset: uptime $up s"
"#,
    );
    b.add_namespace(json!({"type": "time"}));
    b.linux()["timeOffsets"] = json!({"boottime": {"secs": 31536000, "nanosecs": 0}});
    rt.check(&b)
}

/// A host process in its own UTS, IPC and network namespaces.
struct Holder(std::process::Child);

impl Holder {
    /// `unshare ARGS sleep 60`, once its namespace `ns` (a /proc/PID/ns
    /// name) differs from ours; its pid.
    fn spawn(args: &[&str], ns: &str) -> (Holder, String) {
        let child = std::process::Command::new("unshare")
            .args(args)
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let holder = Holder(child);
        let pid = holder.0.id().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ns_link(&pid, ns) == ns_link("self", ns) {
            assert!(
                std::time::Instant::now() < deadline,
                "unshare did not unshare"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (holder, pid)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn join_namespaces_by_path(rt: &Runtime) -> Result<(), String> {
    let (_holder, pid) = Holder::spawn(&["--uts", "--ipc", "--net"], "net");
    let mut script = String::new();
    for ns in ["uts", "ipc", "net"] {
        script.push_str(&format!(
            "eq \"$(readlink /proc/self/ns/{ns})\" \"{}\" \"joined {ns} namespace\"\n",
            ns_link(&pid, ns)
        ));
    }
    let mut b = Bundle::new(&script);
    b.linux()["namespaces"] = json!([
        {"type": "pid"}, {"type": "mount"},
        {"type": "uts", "path": format!("/proc/{pid}/ns/uts")},
        {"type": "ipc", "path": format!("/proc/{pid}/ns/ipc")},
        {"type": "network", "path": format!("/proc/{pid}/ns/net")}
    ]);
    // Joining a UTS namespace: its hostname is not the runtime's to set.
    b.spec.as_object_mut().unwrap().remove("hostname");
    rt.check(&b)
}

/// A mount namespace joined by path (a host process's, made with
/// `unshare --mount`): the container's root is still its bundle's rootfs,
/// set up inside that namespace, as runc does.
pub fn join_mount_namespace_by_path(rt: &Runtime) -> Result<(), String> {
    let (_holder, pid) = Holder::spawn(&["--mount", "--propagation", "private"], "mnt");
    let mut b = Bundle::new(&format!(
        r#"eq "$(readlink /proc/self/ns/mnt)" "{}" "joined mount namespace"
[ -e /bundle-marker ] || fail "the root is not the bundle's rootfs"
eq "$(awk '$5 == "/" {{print $5}}' /proc/self/mountinfo | head -1)" / "a root mount""#,
        ns_link(&pid, "mnt")
    ));
    std::fs::write(b.rootfs().join("bundle-marker"), "").unwrap();
    b.linux()["namespaces"] = json!([
        {"type": "pid"}, {"type": "uts"}, {"type": "ipc"}, {"type": "network"},
        {"type": "mount", "path": format!("/proc/{pid}/ns/mnt")}
    ]);
    rt.check(&b)
}

/// A user namespace mapping the container's root to an unprivileged host
/// range (0 to 1000, 1000 ids, so the overflow ids are unmapped): the
/// created container's init waits for `start` with its namespaces there to
/// inspect (its uid_map from outside), then runs as root inside.
pub fn user_namespace_to_an_unprivileged_range(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(awk '{print $1, $2, $3}' /proc/self/uid_map)" "0 1000 1000" uid_map
eq "$(id -u):$(id -g)" 0:0 "root inside"
touch /tmp/f || fail "root inside can write its own tmpfs""#,
    );
    b.add_namespace(json!({"type": "user"}));
    b.linux()["uidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1000}]);
    b.linux()["gidMappings"] = json!([{"containerID": 0, "hostID": 1000, "size": 1000}]);
    b.remove_mounts(&["/sys/fs/cgroup"]);
    let id = rt.id();
    let created = rt.create(&b, &id);
    let result = (|| {
        if created.code != 0 {
            return Err(format!("create: {}", created.describe()));
        }
        rt.wait_status(&id, "created")?;
        let pid = rt.pid(&id).ok_or("no pid in the state")?;
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))
            .map_err(|e| format!("the created init's uid_map: {e}"))?;
        if map.split_whitespace().collect::<Vec<_>>() != ["0", "1000", "1000"] {
            return Err(format!("the created init's uid_map: {map:?}"));
        }
        let started = rt.cmd(&["start", &id]);
        if started.code != 0 {
            return Err(format!("start: {}", started.describe()));
        }
        rt.wait_status(&id, "stopped")?;
        let out = std::fs::read_to_string(b.path().join("stdout")).unwrap_or_default();
        if !out.contains("PASS") {
            return Err(format!("checker: {out}"));
        }
        Ok(())
    })();
    let _ = rt.cmd(&["delete", "--force", &id]);
    result
}
