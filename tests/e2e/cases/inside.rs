//! Working with a running task: exec, pause/resume, metrics and Update,
//! OOM events, error codes, seccomp, volumes, pods.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::env::{finish, run, Env, CMD_TIMEOUT};

/// An exec shares the container's mounts and PID namespace, keeps stdout,
/// stderr, stdin and its exit code apart from the init's, and a missing
/// program is named.
pub(super) fn exec_joins_the_running_container(env: &Env) -> Result<(), String> {
    let task = Detached::start(
        env,
        "exec",
        &["sh", "-c", "echo from-init > /tmp/marker; exec sleep 1000"],
    )?;
    let o = run(&mut task.exec(
        "probe",
        &[],
        &[
            "sh",
            "-c",
            "cat /tmp/marker; cat /proc/1/comm; echo to-err >&2; exit 7",
        ],
    ))?;
    if stdout(&o) != "from-init\nsleep\n" || !stderr(&o).contains("to-err") {
        return Err(format!(
            "exec saw stdout {:?}, stderr {:?}",
            stdout(&o),
            stderr(&o)
        ));
    }
    if o.status.code() != Some(7) {
        return Err(format!("exec exit {:?}, want 7", o.status.code()));
    }
    let mut child = task
        .exec("stdin", &[], &["sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| e.to_string())?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(b"typed\n")
        .map_err(|e| e.to_string())?;
    let o = finish(child, CMD_TIMEOUT)?;
    if stdout(&o) != "typed\ndone\n" {
        return Err(format!(
            "exec stdin: stdout {:?} {}",
            stdout(&o),
            stderr(&o)
        ));
    }
    let o = run(&mut task.exec("missing", &[], &["/no/such/program"]))?;
    if o.status.success() || !stderr(&o).contains("/no/such/program") {
        return Err(format!(
            "exec of a missing program: {:?} {}",
            o.status,
            stderr(&o)
        ));
    }
    Ok(())
}

/// `ctr task exec -t` from a 33x101 terminal: the exec gets a pty of that
/// size (ctr's ResizePty), and its exit code.
pub(super) fn exec_with_a_terminal(env: &Env) -> Result<(), String> {
    let task = Detached::start(env, "exectty", &["sleep", "1000"])?;
    let ctr = format!(
        "stty rows 33 cols 101; \
         ctr --address {} -n hull-e2e task exec -t --exec-id tty {} sh -c 'tty; stty size; exit 3'",
        env.sock.display(),
        task.id
    );
    let log = env.path("exec-tty.log");
    let o = run(Command::new("script").arg("-qec").arg(&ctr).arg(&log))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !text.contains("/dev/pts/") || !text.contains("33 101") {
        return Err(format!(
            "tty and size in the exec printed {text:?}; {}",
            stderr(&o)
        ));
    }
    if !text.contains("COMMAND_EXIT_CODE=\"3\"") && o.status.code() != Some(3) {
        return Err(format!(
            "exec exit code lost: {:?} / {text:?}",
            o.status.code()
        ));
    }
    Ok(())
}

/// A paused container makes no progress (its ticks, written through the
/// shared rootfs, are read on the host), refuses exec, resumes where it
/// was, and still dies on SIGKILL while paused.
pub(super) fn pause_freezes_and_resume_thaws(env: &Env) -> Result<(), String> {
    let task = Detached::start(
        env,
        "pause",
        &[
            "sh",
            "-c",
            "i=0; while :; do i=$((i+1)); echo $i > /tmp/tick; sleep 0.05; done",
        ],
    )?;
    let tick_file = task.rootfs_file("tmp/tick");
    let tick = || -> u64 {
        std::fs::read_to_string(&tick_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    };
    let advances = |from: u64| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if tick() > from {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    };
    if !advances(0) {
        return Err(format!("no ticks in {}", tick_file.display()));
    }
    expect_success(&run(env.ctr().args(["task", "pause", &task.id]))?)?;
    wait_status(env, &task.id, "PAUSED")?;
    let frozen_at = tick();
    std::thread::sleep(Duration::from_secs(1));
    if tick() != frozen_at {
        return Err(format!(
            "ticked from {frozen_at} to {} while paused",
            tick()
        ));
    }
    let o = run(&mut task.exec("while-paused", &[], &["true"]))?;
    if o.status.success() || !stderr(&o).contains("PAUSED") {
        return Err(format!(
            "exec into a paused task: {:?} {}",
            o.status,
            stderr(&o)
        ));
    }
    expect_success(&run(env.ctr().args(["task", "resume", &task.id]))?)?;
    wait_status(env, &task.id, "RUNNING")?;
    if !advances(frozen_at) {
        return Err(format!("no tick after resume (stuck at {frozen_at})"));
    }
    expect_success(&run(env.ctr().args(["task", "pause", &task.id]))?)?;
    expect_success(&run(env
        .ctr()
        .args(["task", "kill", "-s", "KILL", &task.id]))?)?;
    wait_status(env, &task.id, "STOPPED")
}

/// `ctr task ps` lists the container's processes (their guest pids), and
/// `ctr task kill --all` signals every one of them: the children die of
/// SIGTERM while PID 1, which has no handler, carries on.
pub(super) fn pids_and_kill_all_reach_every_process(env: &Env) -> Result<(), String> {
    let task = Detached::start(
        env,
        "killall",
        &[
            "sh",
            "-c",
            "sleep 1000 & sleep 1001 & wait; echo gone > /tmp/children-gone; sleep 1000; true",
        ],
    )?;
    // RUNNING comes before the shell has started its children.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = run(env.ctr().args(["task", "ps", &task.id]))?;
        expect_success(&o)?;
        let pids = stdout(&o)
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|p| p.parse::<u32>().is_ok())
            })
            .count();
        if pids == 3 {
            break;
        }
        if pids > 3 || Instant::now() > deadline {
            return Err(format!("want 3 processes (sh, 2 sleeps): {}", stdout(&o)));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    expect_success(&run(env
        .ctr()
        .args(["task", "kill", "--all", "-s", "TERM", &task.id]))?)?;
    task.wait_for_file("tmp/children-gone", "kill --all did not reach the children")?;
    wait_status(env, &task.id, "RUNNING")
}

/// containerd's metric names for the limit, usage, processes and CPU time,
/// in its cgroups v1 and v2 metrics types.
const METRIC_NAMES: [(&str, [&str; 4]); 2] = [
    (
        "v1",
        [
            "memory.limit_in_bytes",
            "memory.usage_in_bytes",
            "pids.current",
            "cpuacct.usage",
        ],
    ),
    (
        "v2",
        [
            "memory.usage_limit",
            "memory.usage",
            "pids.current",
            "cpu.usage_usec",
        ],
    ),
];

/// `ctr task metrics`, as either metrics type the configuration chooses:
/// the values are the guest cgroup's (the limit given to `ctr run`, memory
/// the container really holds, its processes), and Update changes that
/// limit.
pub(super) fn metrics_come_from_the_guest_cgroup(env: &Env) -> Result<(), String> {
    for (format, names) in METRIC_NAMES {
        env.write_config(
            &env.good_config()
                .replace("metrics = \"v2\"", &format!("metrics = \"{format}\"")),
        )?;
        let checked = metrics_as(env, format, names);
        env.restore_config()?;
        checked?;
        env.check_no_leaks()?;
    }
    Ok(())
}

fn metrics_as(env: &Env, format: &str, names: [&str; 4]) -> Result<(), String> {
    let [limit_name, usage_name, pids_name, cpu_name] = names;
    let limit = 96u64 << 20;
    let task = Detached::start_with(
        env,
        &format!("metrics-{format}"),
        &["--memory-limit", &limit.to_string()],
        &[
            "sh",
            "-c",
            // tmpfs pages are charged to the writer's cgroup; the last
            // `true` keeps sh from exec'ing sleep (so two processes).
            "head -c 16000000 /dev/zero > /dev/shm/blob; echo held > /tmp/held; sleep 1000; true",
        ],
    )?;
    task.wait_for_file("tmp/held", "the container never reported its memory held")?;
    let metric = |name: &str| -> Result<u64, String> {
        let o = run(env.ctr().args(["task", "metrics", &task.id]))?;
        expect_success(&o)?;
        let table = stdout(&o);
        table
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .ok_or(format!("{format}: no {name} in {table}"))
    };
    if metric(limit_name)? != limit {
        return Err(format!("{format}: {limit_name} is not {limit}"));
    }
    let usage = metric(usage_name)?;
    if usage < 16_000_000 {
        return Err(format!(
            "{format}: the 16 MB the shell holds are not counted: {usage}"
        ));
    }
    if metric(pids_name)? != 2 || metric(cpu_name)? == 0 {
        return Err(format!(
            "{format}: want 2 processes (sh, sleep) and CPU used"
        ));
    }
    // Update (containerd's Task.Update; ctr 1.6 has no command for it)
    // reaches the same cgroup.
    let raised = 128u64 << 20;
    crate::shim::update(
        env,
        &task.id,
        &format!(r#"{{"memory":{{"limit":{raised}}}}}"#),
    )?;
    let updated = metric(limit_name)?;
    if updated != raised {
        return Err(format!("{format}: after update to {raised}: {updated}"));
    }
    Ok(())
}

/// A process killed for exceeding the container's memory limit in the
/// guest is reported to containerd as a TaskOOM event.
pub(super) fn oom_kill_is_published(env: &Env) -> Result<(), String> {
    let mut events = ctr_events(env)?;
    let task = Detached::start_with(
        env,
        "oom",
        &["--memory-limit", &(32u64 << 20).to_string()],
        // dd's 64 MiB buffer cannot fit under 32 MiB: the kernel kills dd,
        // the shell stays.
        &[
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 1000; true",
        ],
    );
    let found = task.and_then(|task| {
        let id = task.id.clone();
        wait_for_line_where(&mut events, "/tasks/oom", Duration::from_secs(60), |l| {
            l.contains("/tasks/oom") && l.contains(&id)
        })
    });
    let _ = events.kill();
    let _ = events.wait();
    found
}

/// Wrong task RPCs get the code containerd acts on, never a blanket one.
pub(super) fn task_errors_carry_the_right_code(env: &Env) -> Result<(), String> {
    let task = Detached::start(env, "codes", &["sleep", "1000"])?;
    let got = crate::shim::error_codes(env, &task.id)?;
    let want = [
        ("Checkpoint", "UNIMPLEMENTED"),
        ("State of an unknown exec", "NOT_FOUND"),
        ("Start of a running task", "FAILED_PRECONDITION"),
        ("Exec with a malformed spec", "INVALID_ARGUMENT"),
        ("Exec", "OK"),
        ("Exec with an id in use", "ALREADY_EXISTS"),
        ("Delete of an unstarted exec", "OK"),
        ("State after its delete", "NOT_FOUND"),
    ];
    let wrong: Vec<_> = want
        .iter()
        .zip(&got)
        .filter(|((_, w), (_, g))| w != g)
        .map(|((call, w), (_, g))| format!("{call}: got {g}, want {w}"))
        .collect();
    if wrong.is_empty() && got.len() == want.len() {
        Ok(())
    } else {
        Err(format!("{wrong:#?} (all: {got:?})"))
    }
}

/// Device rules hold in the guest (cgroup v2: an eBPF program). ctr's
/// default spec denies every device but the standard ones, so a node the
/// container makes for /dev/kmsg (c 1:11) cannot be opened; with
/// `--privileged` (every device allowed) the same node reads.
pub(super) fn device_rules_hold_in_the_guest(env: &Env) -> Result<(), String> {
    // The node is made on the container's own tmpfs /dev: the shared rootfs
    // takes no device nodes (virtiofsd runs without CAP_MKNOD).
    let script = "mknod /dev/kmsg-test c 1 11 || exit 9; \
        dd if=/dev/kmsg-test of=/tmp/out bs=4096 count=1 2>/tmp/err && echo kmsg-read || cat /tmp/err; \
        head -c 1 /dev/zero | wc -c";
    let o = run(&mut env.run_cmd(&env.unique("devices"), &["sh", "-c", script]))?;
    expect_success(&o)?;
    let out = stdout(&o);
    if !out.contains("Operation not permitted") || !out.trim_end().ends_with('1') {
        return Err(format!("default device rules: {out:?}"));
    }
    let o = run(&mut env.run_with(
        &env.unique("devicespriv"),
        &["--privileged"],
        &["sh", "-c", script],
    ))?;
    expect_success(&o)?;
    if !stdout(&o).contains("kmsg-read") {
        return Err(format!(
            "privileged (all devices allowed): {:?}",
            stdout(&o)
        ));
    }
    Ok(())
}

/// containerd's default profile (`--seccomp`) is installed and the
/// container still runs; a custom profile's errno reaches the program, in
/// the init and in an exec.
pub(super) fn seccomp_profiles_confine_the_container(env: &Env) -> Result<(), String> {
    let o = run(&mut env.run_with(
        &env.unique("seccompdefault"),
        &["--seccomp"],
        &["grep", "Seccomp:", "/proc/self/status"],
    ))?;
    expect_success(&o)?;
    if stdout(&o).split_whitespace().nth(1) != Some("2") {
        return Err(format!("default profile: {:?}", stdout(&o)));
    }
    let profile = env.path("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
    )
    .map_err(|e| e.to_string())?;
    let options = [
        "--seccomp",
        "--seccomp-profile",
        profile.to_str().unwrap_or_default(),
    ];
    let task = Detached::start_with(env, "seccomp", &options, &["sleep", "1000"])?;
    let o = run(&mut task.exec("mkdir", &[], &["sh", "-c", "mkdir /tmp/x; echo rc=$?"]))?;
    if !stdout(&o).contains("rc=1") || !stderr(&o).contains("Permission denied") {
        return Err(format!(
            "mkdir under the profile: {:?} {:?}",
            stdout(&o),
            stderr(&o)
        ));
    }
    let o = run(&mut task.exec("other", &[], &["sh", "-c", "touch /tmp/y && echo ok"]))?;
    if stdout(&o) != "ok\n" {
        return Err(format!(
            "what the profile allows failed: {:?} {:?}",
            stdout(&o),
            stderr(&o)
        ));
    }
    Ok(())
}

/// `ctr run --mount type=bind,...`, over each shared filesystem the
/// configuration offers (virtio-fs, 9p): the rootfs arrives over it, a host
/// directory and a host file reach the container; writes come back to the
/// host; a read-only volume cannot be written.
pub(super) fn volumes_are_shared_read_only_where_asked(env: &Env) -> Result<(), String> {
    for (kind, fstype) in [("virtio-fs", "virtiofs"), ("9p", "9p")] {
        let config = env
            .good_config()
            .replace("kind = \"virtio-fs\"", &format!("kind = \"{kind}\""));
        env.write_config(&config)?;
        let checked = volumes_over(env, kind, fstype);
        env.restore_config()?;
        checked.map_err(|e| format!("shared_fs.kind = {kind}: {e}"))?;
        env.check_no_leaks()?;
    }
    Ok(())
}

fn volumes_over(env: &Env, kind: &str, fstype: &str) -> Result<(), String> {
    let rw = env.path(&format!("volume-rw-{kind}"));
    let ro = env.path(&format!("volume-ro-{kind}"));
    let file = env.path(&format!("volume-file-{kind}"));
    for d in [&rw, &ro] {
        std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
    }
    std::fs::write(rw.join("hello"), "from-host\n").map_err(|e| e.to_string())?;
    std::fs::write(ro.join("keep"), "kept\n").map_err(|e| e.to_string())?;
    std::fs::write(&file, "a-file\n").map_err(|e| e.to_string())?;
    let mount = |src: &Path, dst: &str, opts: &str| {
        format!("type=bind,src={},dst={dst},options={opts}", src.display())
    };
    let (rw_mount, ro_mount) = (mount(&rw, "/rw", "rbind:rw"), mount(&ro, "/ro", "rbind:ro"));
    let file_mount = mount(&file, "/etc/motd", "bind:ro");
    let o = run(&mut env.run_with(
        &env.unique(&format!("volumes-{kind}")),
        &[
            "--mount",
            &rw_mount,
            "--mount",
            &ro_mount,
            "--mount",
            &file_mount,
        ],
        &[
            "sh",
            "-c",
            "awk '$2 == \"/\" {print $3}' /proc/mounts; \
             cat /rw/hello /ro/keep /etc/motd; echo from-guest > /rw/new; \
             echo x > /ro/new || echo ro-refused",
        ],
    ))?;
    expect_success(&o)?;
    let want = format!("{fstype}\nfrom-host\nkept\na-file\nro-refused\n");
    if stdout(&o) != want {
        return Err(format!(
            "stdout {:?}, want {want:?}; {}",
            stdout(&o),
            stderr(&o)
        ));
    }
    let back = std::fs::read_to_string(rw.join("new")).unwrap_or_default();
    if back != "from-guest\n" || ro.join("new").exists() {
        return Err(format!(
            "host sees rw/new {back:?}, ro/new {}",
            ro.join("new").exists()
        ));
    }
    Ok(())
}

/// The namespaces a process of `task` is in, as `readlink` shows them.
fn namespaces_of(task: &Detached, exec_id: &str) -> Result<Vec<String>, String> {
    let o = run(&mut task.exec(
        exec_id,
        &[],
        // busybox readlink takes one file at a time.
        &[
            "sh",
            "-c",
            "for n in net ipc uts mnt; do readlink /proc/self/ns/$n; done",
        ],
    ))?;
    expect_success(&o)?;
    Ok(stdout(&o).lines().map(str::to_string).collect())
}

/// CRI's pod annotations (given here through ctr): the sandbox container
/// boots the VM, a pod container joins it (one QEMU) and shares its
/// network, IPC and UTS namespaces but not its mounts, and deleting the
/// pod container leaves the sandbox running.
pub(super) fn pod_containers_share_one_vm(env: &Env) -> Result<(), String> {
    let pod = env.unique("pod");
    let sandbox_id = format!("io.kubernetes.cri.sandbox-id={pod}");
    let sandbox = Detached::start_with(
        env,
        "pod",
        &[
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
            "--annotation",
            &sandbox_id,
        ],
        &["sleep", "1000"],
    )?;
    // CRI hands a pod container the sandbox's namespaces as host paths.
    let app = Detached::start_with(
        env,
        "podapp",
        &[
            "--annotation",
            "io.kubernetes.cri.container-type=container",
            "--annotation",
            &sandbox_id,
            "--with-ns",
            "network:/proc/1/ns/net",
            "--with-ns",
            "ipc:/proc/1/ns/ipc",
            "--with-ns",
            "uts:/proc/1/ns/uts",
        ],
        &["sleep", "1000"],
    )?;
    let qemus = Env::vm_processes_under(&env.state_dir)
        .iter()
        .filter(|p| p.contains("qemu-system"))
        .count();
    if qemus != 1 {
        return Err(format!("{qemus} QEMU processes for one pod"));
    }
    let (s, a) = (namespaces_of(&sandbox, "ns1")?, namespaces_of(&app, "ns2")?);
    if s.len() != 4 || s[..3] != a[..3] || s[3] == a[3] {
        return Err(format!("sandbox namespaces {s:?}, pod container's {a:?}"));
    }
    drop(app);
    wait_status(env, &pod, "RUNNING")?;
    let after = namespaces_of(&sandbox, "ns3")?;
    if after != s {
        return Err(format!(
            "the sandbox changed after its pod container left: {after:?}"
        ));
    }
    Ok(())
}
