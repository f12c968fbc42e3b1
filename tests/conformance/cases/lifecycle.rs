//! The lifecycle from outside: create, start, state, kill, delete, exec,
//! pause, resume, list, ps; hooks; the terminal over a console socket.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bundle::Bundle;
use crate::runtime::{Ran, Runtime};

fn ok(what: &str, ran: Ran) -> Result<Ran, String> {
    if ran.code == 0 {
        Ok(ran)
    } else {
        Err(format!("{what}: {}", ran.describe()))
    }
}

fn refused(what: &str, ran: Ran) -> Result<(), String> {
    if ran.code == 1 && !ran.stderr.trim().is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{what} must exit 1 with a reason: {}",
            ran.describe()
        ))
    }
}

fn wait_for_file(path: &Path) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !path.exists() {
        if Instant::now() > deadline {
            return Err(format!("{} never appeared", path.display()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A container created and started, running `sleep`; removed on drop.
struct Running<'a> {
    rt: &'a Runtime,
    id: String,
    bundle: Bundle,
}

impl<'a> Running<'a> {
    fn start(rt: &'a Runtime) -> Result<Running<'a>, String> {
        let bundle = Bundle::new("touch /tmp/started; exec sleep 60");
        let id = rt.id();
        ok("create", rt.create(&bundle, &id))?;
        let r = Running { rt, id, bundle };
        ok("start", rt.cmd(&["start", &r.id]))?;
        wait_for_file(&r.bundle.rootfs().join("tmp/started"))?;
        Ok(r)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.rt.cmd(&["delete", "--force", &self.id]);
    }
}

pub fn create_start_kill_delete(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new("touch /tmp/started; exec sleep 60");
    let id = rt.id();
    ok("create", rt.create(&b, &id))?;
    let guard = Running {
        rt,
        id: id.clone(),
        bundle: b,
    };
    let status = rt.status(&id);
    if status.as_deref() != Some("created") {
        return Err(format!("after create: status {status:?}"));
    }
    let pid = rt.pid(&id).unwrap_or(0);
    if pid <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("after create: pid {pid} is not a live process"));
    }
    let started = guard.bundle.rootfs().join("tmp/started");
    std::thread::sleep(Duration::from_millis(100));
    if started.exists() {
        return Err("the user program ran before start".into());
    }
    refused("create of a taken id", rt.create(&guard.bundle, &id))?;
    ok("start", rt.cmd(&["start", &id]))?;
    wait_for_file(&started)?;
    rt.wait_status(&id, "running")?;
    refused("a second start", rt.cmd(&["start", &id]))?;
    refused("delete of a running container", rt.cmd(&["delete", &id]))?;
    ok("kill", rt.cmd(&["kill", &id, "KILL"]))?;
    rt.wait_status(&id, "stopped")?;
    refused(
        "kill of a stopped container",
        rt.cmd(&["kill", &id, "TERM"]),
    )?;
    ok("delete", rt.cmd(&["delete", &id]))?;
    refused("state after delete", rt.cmd(&["state", &id]))
}

pub fn delete_force_and_created(rt: &Runtime) -> Result<(), String> {
    let r = Running::start(rt)?;
    let pid = rt.pid(&r.id).unwrap_or(0);
    ok(
        "delete --force of a running container",
        rt.cmd(&["delete", "--force", &r.id]),
    )?;
    std::thread::sleep(Duration::from_millis(50));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    if !stat.is_empty() && !stat.contains(") Z") {
        return Err(format!("process {pid} survived delete --force"));
    }
    // A created, never started container is deleted without --force.
    let b = Bundle::new("exec sleep 60");
    let id = rt.id();
    ok("create", rt.create(&b, &id))?;
    ok("delete of a created container", rt.cmd(&["delete", &id]))?;
    refused("state of a deleted container", rt.cmd(&["state", &id]))
}

pub fn exec_joins_the_container(rt: &Runtime) -> Result<(), String> {
    let r = Running::start(rt)?;
    let pid = rt.pid(&r.id).ok_or("no pid")?;
    let mut script = String::new();
    let mut want = String::new();
    for ns in ["pid", "net", "ipc", "uts", "mnt"] {
        script.push_str(&format!("readlink /proc/self/ns/{ns}; "));
        let link = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
        want.push_str(&format!("{}\n", link.display()));
    }
    script.push_str("cat /proc/self/cgroup");
    want.push_str(&std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap());
    let ran = ok("exec", rt.cmd(&["exec", &r.id, "sh", "-c", &script]))?;
    if ran.stdout != want {
        return Err(format!(
            "exec's namespaces and cgroups:\n{}\nwant (the init's):\n{want}",
            ran.stdout
        ));
    }
    let ran = ok(
        "exec --env --user --cwd",
        rt.cmd(&[
            "exec",
            "--env",
            "FOO=bar",
            "--user",
            "1000:100",
            "--cwd",
            "/tmp",
            &r.id,
            "/bin/sh",
            "-c",
            "echo $FOO $(/bin/id -u) $(/bin/id -g) $(/bin/pwd)",
        ]),
    )?;
    if ran.stdout.trim() != "bar 1000 100 /tmp" {
        return Err(format!("exec with options printed {:?}", ran.stdout.trim()));
    }
    let ran = rt.cmd(&["exec", &r.id, "sh", "-c", "exit 3"]);
    if ran.code != 3 {
        return Err(format!("exec's exit code: {}", ran.describe()));
    }
    let ran = ok("ps", rt.cmd(&["ps", "--format", "json", &r.id]))?;
    let pids: Vec<i32> = serde_json::from_str(&ran.stdout).map_err(|e| format!("ps json: {e}"))?;
    if !pids.contains(&pid) {
        return Err(format!("ps {pids:?} lacks the init {pid}"));
    }
    Ok(())
}

pub fn pause_resume_list(rt: &Runtime) -> Result<(), String> {
    let r = Running::start(rt)?;
    ok("pause", rt.cmd(&["pause", &r.id]))?;
    rt.wait_status(&r.id, "paused")?;
    let pid = rt.pid(&r.id).ok_or("no pid")?;
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let ran = ok("list", rt.cmd(&["list", "--format", "json"]))?;
    let list: serde_json::Value =
        serde_json::from_str(&ran.stdout).map_err(|e| format!("list json: {e}"))?;
    let listed = list
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["id"] == json!(r.id) && c["status"] == json!("paused"));
    if !listed {
        return Err(format!(
            "list does not show {} paused: {}",
            r.id, ran.stdout
        ));
    }
    ok("resume", rt.cmd(&["resume", &r.id]))?;
    rt.wait_status(&r.id, "running")?;
    if state.is_empty() {
        return Err("the paused init vanished".into());
    }
    let quiet = ok("list -q", rt.cmd(&["list", "-q"]))?;
    if !quiet.stdout.lines().any(|l| l == r.id) {
        return Err(format!("list -q lacks {}", r.id));
    }
    Ok(())
}

pub fn hooks_order_and_state(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new("echo process >> /order");
    let dir = b.path().join("hooks");
    std::fs::create_dir_all(&dir).unwrap();
    let host_hook = |kind: &str| {
        let d = dir.display();
        json!({"path": "/bin/sh", "args": ["sh", "-c", format!("cat > {d}/{kind}.json; echo {kind} >> {d}/order")],
               "timeout": 10})
    };
    b.spec["hooks"] = json!({
        "prestart": [host_hook("prestart")],
        "createRuntime": [host_hook("createRuntime")],
        "createContainer": [host_hook("createContainer")],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo startContainer >> /order"]}],
        "poststart": [host_hook("poststart")],
        "poststop": [host_hook("poststop")]
    });
    b.write();
    let id = rt.id();
    let ran = rt.cmd(&["run", "--bundle", &b.path().display().to_string(), &id]);
    let _ = rt.cmd(&["delete", "--force", &id]);
    if ran.code != 0 {
        return Err(format!("run: {}", ran.describe()));
    }
    let order = std::fs::read_to_string(dir.join("order")).unwrap_or_default();
    let want = "prestart\ncreateRuntime\ncreateContainer\npoststart\npoststop\n";
    if order != want {
        return Err(format!(
            "runtime-side hooks ran as {order:?}, want {want:?}"
        ));
    }
    let inside = std::fs::read_to_string(b.rootfs().join("order")).unwrap_or_default();
    if inside != "startContainer\nprocess\n" {
        return Err(format!(
            "in the container: {inside:?}, want startContainer then the process"
        ));
    }
    for kind in ["prestart", "createContainer", "poststop"] {
        let text = std::fs::read_to_string(dir.join(format!("{kind}.json"))).unwrap_or_default();
        let state: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{kind} state {text:?}: {e}"))?;
        let bundle = b.path().canonicalize().unwrap();
        if state["id"] != json!(id)
            || state["bundle"] != json!(bundle.display().to_string())
            || state["pid"].as_i64().unwrap_or(0) <= 0 && kind != "poststop"
        {
            return Err(format!("{kind} hook got state {state}"));
        }
    }
    Ok(())
}

pub fn failing_hook_fails_create(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new("touch /ran");
    b.spec["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 3"]}]});
    let id = rt.id();
    let ran = rt.create(&b, &id);
    let _ = rt.cmd(&["delete", "--force", &id]);
    if ran.code == 0 {
        let _ = rt.cmd(&["delete", "--force", &id]);
        return Err("create succeeded with a failing createRuntime hook".into());
    }
    if rt.cmd(&["state", &id]).code == 0 {
        return Err("a failed create left its container".into());
    }
    if b.rootfs().join("ran").exists() {
        return Err("the user program ran".into());
    }
    Ok(())
}

/// Receives the fd a runtime sends over a console socket.
fn receive_fd(stream: &std::os::unix::net::UnixStream) -> Result<OwnedFd, String> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| format!("recvmsg: {e}"))?;
    for c in msg.cmsgs().map_err(|e| e.to_string())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just gave us this descriptor; we own it.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err("no fd on the console socket".into())
}

pub fn terminal_over_console_socket(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(tty)" /dev/pts/0 tty
[ -t 0 ] && [ -t 1 ] || fail "stdin and stdout are the terminal"
eq "$(stty size)" "30 100" consoleSize"#,
    );
    b.process()["terminal"] = json!(true);
    b.process()["consoleSize"] = json!({"height": 30, "width": 100});
    let sock = b.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let id = rt.id();
    b.write();
    let create = rt.cmd(&[
        "create",
        "--bundle",
        &b.path().display().to_string(),
        "--console-socket",
        &sock.display().to_string(),
        &id,
    ]);
    let _cleanup = Running {
        rt,
        id: id.clone(),
        bundle: Bundle::new(""),
    };
    ok("create with a terminal", create)?;
    listener.set_nonblocking(true).unwrap();
    let (stream, _) = listener
        .accept()
        .map_err(|e| format!("no console socket connection: {e}"))?;
    let master = receive_fd(&stream)?;
    ok("start", rt.cmd(&["start", &id]))?;
    let mut output = Vec::new();
    let mut f = std::fs::File::from(master);
    let mut chunk = [0u8; 4096];
    // EIO once the container's side of the terminal is closed.
    while let Ok(n) = f.read(&mut chunk) {
        if n == 0 {
            break;
        }
        output.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&output);
    if !text.lines().any(|l| l.trim_end_matches('\r') == "PASS") {
        return Err(format!("terminal output: {text:?}"));
    }
    Ok(())
}

/// A foreground `run` passes the signals it gets on to the container.
pub fn run_forwards_signals(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(
        r#"trap 'exit 5' TERM
touch /tmp/ready
while :; do sleep 0.1; done"#,
    );
    b.write();
    let id = rt.id();
    let mut child = rt
        .command()
        .args(["run", "--bundle", &b.path().display().to_string(), &id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _cleanup = Running {
        rt,
        id,
        bundle: Bundle::new(""),
    };
    let ready = wait_for_file(&b.rootfs().join("tmp/ready"));
    // SAFETY: kill(2) on the runtime process we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    ready?;
    match status.and_then(|s| s.code()) {
        Some(5) => Ok(()),
        other => Err(format!(
            "run after SIGTERM ended with {other:?}, want exit 5 from the container's trap"
        )),
    }
}

pub fn bad_input_is_refused(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new("");
    std::fs::write(b.path().join("config.json"), "{\"ociVersion\": 1").unwrap();
    let ran = rt.cmd(&[
        "create",
        "--bundle",
        &b.path().display().to_string(),
        &rt.id(),
    ]);
    refused("create from a malformed config.json", ran)?;
    refused(
        "state of a missing container",
        rt.cmd(&["state", "no-such-container"]),
    )?;
    refused(
        "kill of a missing container",
        rt.cmd(&["kill", "no-such-container", "KILL"]),
    )?;
    let mut b = Bundle::new("");
    b.spec["root"]["path"] = json!("missing-rootfs");
    b.write();
    let ran = rt.cmd(&[
        "create",
        "--bundle",
        &b.path().display().to_string(),
        &rt.id(),
    ]);
    refused("create with a missing root.path", ran)
}

/// `--log FILE --log-format json`: a failed command leaves its reason there
/// as a JSON line, which is where containerd looks for it.
pub fn log_file_gets_json_errors(rt: &Runtime) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.json");
    let ran = rt.cmd(&[
        "--log",
        &log.display().to_string(),
        "--log-format",
        "json",
        "state",
        "no-such-container",
    ]);
    refused("state of a missing container", ran)?;
    let text = std::fs::read_to_string(&log).map_err(|e| format!("no log file: {e}"))?;
    let error_line = text.lines().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        (v["level"] == "error").then_some(v)
    });
    match error_line {
        Some(v) if v["msg"].as_str().is_some_and(|m| !m.trim().is_empty()) => Ok(()),
        _ => Err(format!("no error line with a reason in the log: {text:?}")),
    }
}

/// `spec` writes a valid default config.json; `features` describes the
/// runtime as the OCI features document.
pub fn spec_and_features(rt: &Runtime) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    ok(
        "spec",
        rt.cmd(&["spec", "--bundle", &dir.path().display().to_string()]),
    )?;
    let text =
        std::fs::read_to_string(dir.path().join("config.json")).map_err(|e| e.to_string())?;
    let spec: oci_spec::runtime::Spec =
        serde_json::from_str(&text).map_err(|e| format!("spec output: {e}"))?;
    if spec.root().is_none() || spec.process().is_none() {
        return Err("the default spec has no root or process".into());
    }
    refused(
        "spec over an existing config.json",
        rt.cmd(&["spec", "--bundle", &dir.path().display().to_string()]),
    )?;
    let ran = ok("features", rt.cmd(&["features"]))?;
    let f: oci_spec::runtime::Features =
        serde_json::from_str(&ran.stdout).map_err(|e| format!("features output: {e}"))?;
    let namespaces = f
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    if f.oci_version_max().is_empty() || namespaces.len() < 7 {
        return Err(format!("features: {}", ran.stdout));
    }
    Ok(())
}
