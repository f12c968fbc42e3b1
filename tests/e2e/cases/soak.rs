//! The soak and fault suite: many lifecycles of `ctr` tasks and CRI pods,
//! kill -9 of each VM process at each step with a containerd restart in
//! the middle, many pods and execs at once, and PID reuse in the guest.
//! Sizes come from the environment, small by default (`make test` runs
//! this smoke version); `make soak` sets the sizes:
//! HULL_SOAK_CYCLES (plain cycles), HULL_SOAK_FAULTS (fault cycles),
//! HULL_SOAK_PODS (pods at once), HULL_SOAK_EXECS (execs at once),
//! HULL_SOAK_HOURS (plain cycles go on until then), HULL_SOAK_SEED (which
//! fault points come first; printed).

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_cri::v1::{ContainerState, NamespaceMode, PodSandboxConfig};

use super::hostile::{attacker_config, guest_root};
use super::*;
use crate::cri::{container_config, pod_config, Cri};
use crate::env::{finish, run, Env};

pub(super) fn knob(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What the host holds that a leak would grow.
#[derive(Debug, PartialEq)]
struct HostCounts {
    cgroups: usize,
    netns: usize,
    links: usize,
    qdiscs: usize,
}

fn count_dirs(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| 1 + count_dirs(&e.path()))
        .sum()
}

fn lines_of(cmd: &mut Command) -> Result<usize, String> {
    let o = run(cmd)?;
    expect_success(&o)?;
    Ok(stdout(&o).lines().count())
}

fn host_counts() -> Result<HostCounts, String> {
    Ok(HostCounts {
        cgroups: count_dirs(std::path::Path::new("/sys/fs/cgroup")),
        netns: std::fs::read_dir("/var/run/netns").map_or(0, |d| d.count()),
        links: lines_of(Command::new("ip").args(["-o", "link", "show"]))?,
        qdiscs: lines_of(Command::new("tc").args(["qdisc", "show"]))?,
    })
}

/// containerd's open files and resident memory (KiB), and its pid.
fn containerd_use(env: &Env) -> Result<(String, usize, u64), String> {
    let pid = std::fs::read_to_string(env.path("containerd.pid"))
        .map_err(|e| format!("containerd.pid: {e}"))?
        .trim()
        .to_string();
    Ok((pid.clone(), open_fds(&pid), rss_kib(&pid)?))
}

fn open_fds(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn rss_kib(pid: &str) -> Result<u64, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| e.to_string())?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
        .ok_or("no VmRSS".into())
}

/// Compares host counts and containerd's use after a phase with before it.
/// containerd's heap settles in steps; a real leak over hundreds of cycles
/// grows far beyond the allowance.
fn check_host(
    env: &Env,
    what: &str,
    counts: &HostCounts,
    ctrd: &(String, usize, u64),
) -> Result<(), String> {
    let now = host_counts()?;
    if &now != counts {
        return Err(format!("{what}: host went from {counts:?} to {now:?}"));
    }
    let (pid, fds, rss) = containerd_use(env)?;
    if pid == ctrd.0 {
        println!(
            "    {what}: containerd fds {} -> {fds}, RSS {} -> {rss} KiB; host {now:?}",
            ctrd.1, ctrd.2
        );
        if fds > ctrd.1 + 8 {
            return Err(format!("{what}: containerd's fds grew {} -> {fds}", ctrd.1));
        }
        if rss > ctrd.2 + (64 << 10) {
            return Err(format!(
                "{what}: containerd's RSS grew {} -> {rss} KiB",
                ctrd.2
            ));
        }
    }
    env.check_no_leaks()
}

/// Plain cycles, alternating a `ctr` task and a CRI pod of two
/// containers: create, start, exec (byte-exact output, its own exit
/// code), stop, delete; then the host is as before.
pub(super) fn soak_plain_cycles(env: &Env) -> Result<(), String> {
    let cycles = knob("HULL_SOAK_CYCLES", 4);
    let until = Instant::now() + Duration::from_secs(knob("HULL_SOAK_HOURS", 0) * 3600);
    let mut cri = Cri::connect(&env.sock)?;
    // The first cycles warm containerd (images unpacked, CRI caches).
    ctr_cycle(env, 0)?;
    cri_cycle(env, &mut cri, 1)?;
    let (counts, ctrd) = (host_counts()?, containerd_use(env)?);
    let start = Instant::now();
    let mut done = 0;
    while done < cycles || Instant::now() < until {
        let n = done + 2;
        let r = if n % 2 == 0 {
            ctr_cycle(env, n)
        } else {
            cri_cycle(env, &mut cri, n)
        };
        r.map_err(|e| format!("cycle {n}: {e}"))?;
        done += 1;
        if done % 50 == 0 {
            check_host(env, &format!("after {done} cycles"), &counts, &ctrd)?;
        }
    }
    check_host(env, &format!("after {done} cycles"), &counts, &ctrd)?;
    println!("    {done} cycles in {:.0}s", start.elapsed().as_secs_f64());
    Ok(())
}

fn ctr_cycle(env: &Env, n: u64) -> Result<(), String> {
    let task = Detached::start(env, &format!("soak{n}"), &["sleep", "1000"])?;
    let code = n % 7 + 1;
    let o = run(&mut task.exec(
        "probe",
        &[],
        &["sh", "-c", &format!("echo cycle {n}; exit {code}")],
    ))?;
    if stdout(&o) != format!("cycle {n}\n") || o.status.code() != Some(code as i32) {
        return Err(format!("exec: {:?} {:?}", o.status.code(), stdout(&o)));
    }
    expect_success(&run(env
        .ctr()
        .args(["task", "kill", "-s", "KILL", &task.id]))?)?;
    wait_status(env, &task.id, "STOPPED")?;
    expect_success(&run(env.ctr().args(["task", "delete", &task.id]))?)?;
    expect_success(&run(env.ctr().args(["container", "delete", &task.id]))?)
}

/// A CRI pod (handler `hull`) with two sleeping containers.
struct CriPod {
    id: String,
    config: PodSandboxConfig,
}

fn cri_pod(env: &Env, cri: &mut Cri, name: &str) -> Result<CriPod, String> {
    let name = env.unique(name);
    let config = pod_config(&name, &env.path(&format!("pods/{name}")));
    let id = cri.run_pod(config.clone(), "hull")?;
    Ok(CriPod { id, config })
}

impl CriPod {
    fn container(&self, cri: &mut Cri, name: &str) -> Result<String, String> {
        let c = container_config(name, NamespaceMode::Container, &["sleep", "1000"]);
        cri.create_container(&self.id, &self.config, c)
    }

    fn remove(&self, cri: &mut Cri) -> Result<(), String> {
        cri.stop_pod(&self.id)
            .and_then(|()| cri.remove_pod(&self.id))
    }
}

fn cri_cycle(env: &Env, cri: &mut Cri, n: u64) -> Result<(), String> {
    let pod = cri_pod(env, cri, &format!("soakpod{n}"))?;
    let body = (|| {
        let ids = [pod.container(cri, "a")?, pod.container(cri, "b")?];
        for id in &ids {
            cri.start_container(id)?;
        }
        let out = cri.exec_sync(&ids[1], &["sh", "-c", &format!("echo pod {n}; exit 3")])?;
        if out.stdout != format!("pod {n}\n").as_bytes() || out.exit_code != 3 {
            return Err(format!("ExecSync: {} {:?}", out.exit_code, out.stdout));
        }
        for id in &ids {
            cri.stop_container(id, 0)?;
            let status = cri.container_status(id)?;
            if status.state != ContainerState::ContainerExited as i32 || status.exit_code != 137 {
                return Err(format!("stopped container: {status:?}"));
            }
            cri.remove_container(id)?;
        }
        Ok(())
    })();
    let removed = pod.remove(cri);
    body?;
    removed
}

/// Where in a lifecycle a VM process is killed.
#[derive(Clone, Copy, Debug)]
enum Step {
    Create,
    Start,
    Exec,
    Delete,
}

const STEPS: [Step; 4] = [Step::Create, Step::Start, Step::Exec, Step::Delete];
const VICTIMS: [&str; 4] = [
    "containerd-shim-hull-v2",
    "qemu-system",
    "vhost-device-vsock",
    "virtiofsd",
];

/// The pid of `victim` for the VM `vm_id`, once it exists: its shim, or a
/// child of that shim (a pod's long id puts the VM's sockets under a
/// shorter path, so the command lines need not name it).
fn victim_pid(vm_id: &str, victim: &str, limit: Duration) -> Result<String, String> {
    let deadline = Instant::now() + limit;
    loop {
        let shim = Env::processes_with(&format!("-id {vm_id} "))
            .into_iter()
            .find(|p| p.contains("containerd-shim-hull-v2"))
            .and_then(|p| p.split_whitespace().next().map(str::to_string));
        let found = match shim {
            Some(shim) if victim.starts_with("containerd-shim") => Some(shim),
            Some(shim) => child_named(&shim, victim),
            None => None,
        };
        match found {
            Some(pid) => return Ok(pid),
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            None => return Err(format!("no {victim} for {vm_id}")),
        }
    }
}

/// The pid of a child of `parent` whose command line contains `name`.
fn child_named(parent: &str, name: &str) -> Option<String> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries.flatten().find_map(|e| {
        let pid = e.file_name().to_string_lossy().to_string();
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        // The fields after the command name (which may hold spaces).
        let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == parent && String::from_utf8_lossy(&cmdline).contains(name)).then_some(pid)
    })
}

fn kill9(pid: &str) -> Result<(), String> {
    expect_success(&run(Command::new("kill").args(["-9", pid]))?)
}

/// Kills `victim` of `vm_id` as soon as one exists, while its create runs
/// (the first process found may end by itself first: another is sought).
fn kill_when_seen(vm_id: &str, victim: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let pid = victim_pid(vm_id, victim, left)?;
        match kill9(&pid) {
            Err(e) if e.contains("No such process") && Instant::now() < deadline => continue,
            r => return r,
        }
    }
}

/// Fault cycles: each kills one VM process (shim, QEMU, vhost-device-vsock
/// or virtiofsd) at one step (create, start, exec, delete) of a `ctr` task
/// or a CRI pod, with a containerd restart in the middle. Every task ends
/// with a status, its TaskExit reaches containerd's clients, the teardown
/// succeeds, and nothing is left.
pub(super) fn soak_fault_cycles(env: &Env) -> Result<(), String> {
    let cycles = knob("HULL_SOAK_FAULTS", 4);
    let seed = knob(
        "HULL_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    println!("    HULL_SOAK_SEED={seed}");
    let counts = host_counts()?;
    let events = EventSubscriber::start(env);
    for n in 0..cycles {
        let combo = (seed + n) % 32;
        let (victim, step) = (VICTIMS[combo as usize % 4], STEPS[combo as usize / 4 % 4]);
        let cri = combo >= 16;
        let start = Instant::now();
        let r = if cri {
            cri_fault(env, &events, n, victim, step)
        } else {
            ctr_fault(env, &events, n, victim, step)
        };
        let what = format!(
            "{} {victim} at {step:?}",
            if cri { "CRI pod" } else { "ctr task" }
        );
        r.and_then(|()| env.check_no_leaks_but(Some(" events")))
            .map_err(|e| format!("fault cycle {n} ({what}): {e}"))?;
        println!(
            "    kill -9 {what}: ok ({:.1}s)",
            start.elapsed().as_secs_f64()
        );
    }
    let now = host_counts()?;
    if now != counts {
        return Err(format!("host went from {counts:?} to {now:?}"));
    }
    Ok(())
}

/// Restarts containerd and waits until the event subscriber is back: it
/// sees an event made after the restart (a namespace created and removed).
fn restart(env: &Env, events: &EventSubscriber) -> Result<(), String> {
    env.restart_containerd()?;
    for attempt in 0..20 {
        let marker = format!("soak-marker-{}-{attempt}", std::process::id());
        expect_success(&run(env.ctr().args(["namespaces", "create", &marker]))?)?;
        let seen = events.wait_for(|l| l.contains(&marker), Duration::from_millis(500));
        expect_success(&run(env.ctr().args(["namespaces", "remove", &marker]))?)?;
        if seen {
            return Ok(());
        }
    }
    Err("ctr events never saw an event after the restart".into())
}

/// `ctr run -d` of a sleeping task `id`.
fn run_detached(env: &Env, id: &str) -> Command {
    let mut c = env.ctr();
    c.args([
        "run",
        "-d",
        "--runtime",
        crate::env::RUNTIME,
        crate::env::IMAGE,
        id,
    ])
    .args(["sleep", "1000"]);
    c
}

fn ctr_fault(
    env: &Env,
    events: &EventSubscriber,
    n: u64,
    victim: &str,
    step: Step,
) -> Result<(), String> {
    let id = env.unique(&format!("fault{n}"));
    let mut started = true;
    match step {
        Step::Create => {
            let child = run_detached(env, &id)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())?;
            let killed = kill_when_seen(&id, victim);
            let o = finish(child, CMD_TIMEOUT)?;
            killed?;
            started = o.status.success();
            restart(env, events)?;
        }
        _ => {
            let o = run(&mut run_detached(env, &id))?;
            expect_success(&o)?;
            wait_running(env, &id)?;
            restart(env, events)?;
            wait_status(env, &id, "RUNNING")?;
            let pid = victim_pid(&id, victim, Duration::from_secs(5))?;
            match step {
                Step::Exec => {
                    let mut exec = env.ctr();
                    exec.args(["task", "exec", "--exec-id", "long", &id, "sleep", "1000"]);
                    let child = exec
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .map_err(|e| e.to_string())?;
                    std::thread::sleep(Duration::from_secs(2));
                    kill9(&pid)?;
                    let o = finish(child, Duration::from_secs(60))?;
                    if o.status.success() {
                        return Err("the exec succeeded though its VM was killed".into());
                    }
                }
                Step::Delete => {
                    let kill = env
                        .ctr()
                        .args(["task", "kill", "-s", "KILL", &id])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .map_err(|e| e.to_string())?;
                    kill9(&pid)?;
                    finish(kill, Duration::from_secs(60))?;
                }
                _ => kill9(&pid)?,
            }
        }
    }
    if started && !events.exit_of(&id, Duration::from_secs(30)) {
        return Err(format!("no /tasks/exit for {id}"));
    }
    let status = task_status(env, &id)?;
    if status != "STOPPED" && status != "absent" {
        return Err(format!("task {id} is {status} after its VM was killed"));
    }
    let _ = run(env.ctr().args(["task", "delete", &id]))?;
    let _ = run(env.ctr().args(["container", "delete", &id]))?;
    let o = run(env.ctr().args(["container", "ls", "-q"]))?;
    if stdout(&o).lines().any(|l| l == id) {
        return Err(format!("container {id} could not be deleted"));
    }
    Ok(())
}

fn cri_fault(
    env: &Env,
    events: &EventSubscriber,
    n: u64,
    victim: &str,
    step: Step,
) -> Result<(), String> {
    let mut cri = Cri::connect(&env.sock)?;
    let pod = cri_pod(env, &mut cri, &format!("faultpod{n}"))?;
    let mut started = Vec::new();
    let body = (|| {
        let a = pod.container(&mut cri, "a")?;
        cri.start_container(&a)?;
        started.push(a.clone());
        restart(env, events)?;
        cri = Cri::connect_ready(&env.sock)?;
        let pid = victim_pid(&pod.id, victim, Duration::from_secs(5))?;
        match step {
            Step::Create => {
                let killer = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(100));
                    kill9(&pid)
                });
                // Either outcome is right; what follows checks the ends.
                let _ = pod.container(&mut cri, "b");
                killer.join().map_err(|_| "killer panicked")??;
            }
            Step::Start => {
                let b = pod.container(&mut cri, "b")?;
                kill9(&pid)?;
                if cri.start_container(&b).is_ok() {
                    started.push(b);
                }
            }
            Step::Exec => {
                let sock = env.sock.clone();
                let target = a.clone();
                let exec = std::thread::spawn(move || {
                    Cri::connect(&sock).and_then(|mut c| c.exec_sync(&target, &["sleep", "1000"]))
                });
                std::thread::sleep(Duration::from_secs(2));
                kill9(&pid)?;
                let out = exec.join().map_err(|_| "exec thread panicked")?;
                if out.as_ref().is_ok_and(|o| o.exit_code == 0) {
                    return Err("ExecSync succeeded though its VM was killed".into());
                }
            }
            Step::Delete => {
                let sock = env.sock.clone();
                let target = a.clone();
                let stop = std::thread::spawn(move || {
                    Cri::connect(&sock).and_then(|mut c| c.stop_container(&target, 0))
                });
                kill9(&pid)?;
                let _ = stop.join();
            }
        }
        for id in &started {
            if !events.exit_of(id, Duration::from_secs(30)) {
                return Err(format!("no /tasks/exit for container {id}"));
            }
            exited(&mut cri, id)?;
        }
        Ok(())
    })();
    let mut removed = pod.remove(&mut cri);
    if removed.is_err() {
        // A dead shim's cleanup can still be under way.
        std::thread::sleep(Duration::from_secs(2));
        removed = pod.remove(&mut cri);
    }
    body?;
    removed
}

/// Waits (30 s at most) until CRI reports container `id` exited: CRI
/// applies a TaskExit a moment after containerd's clients see it.
fn exited(cri: &mut Cri, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = cri.container_status(id)?;
        if status.state == ContainerState::ContainerExited as i32 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("container {id} after the fault: {status:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// HULL_SOAK_PODS CRI pods started at once, each with a container whose
/// exec output is checked byte for byte, then removed at once.
pub(super) fn soak_pods_at_once(env: &Env) -> Result<(), String> {
    let pods = knob("HULL_SOAK_PODS", 3);
    let (counts, ctrd) = (host_counts()?, containerd_use(env)?);
    let start = Instant::now();
    let threads: Vec<_> = (0..pods)
        .map(|k| {
            let sock = env.sock.clone();
            let name = env.unique(&format!("many{k}"));
            let logs = env.path(&format!("pods/{name}"));
            std::thread::spawn(move || -> Result<Duration, String> {
                let mut cri = Cri::connect(&sock)?;
                let config = pod_config(&name, &logs);
                let begun = Instant::now();
                let id = cri.run_pod(config.clone(), "hull")?;
                let pod = CriPod { id, config };
                let body = (|| {
                    let c = pod.container(&mut cri, "c")?;
                    cri.start_container(&c)?;
                    let ready = begun.elapsed();
                    let want: String = (0..200).map(|i| format!("pod {k} line {i}\n")).collect();
                    let script =
                        format!("for i in $(seq 0 199); do echo \"pod {k} line $i\"; done");
                    let out = cri.exec_sync(&c, &["sh", "-c", &script])?;
                    if out.stdout != want.as_bytes() || out.exit_code != 0 {
                        return Err(format!(
                            "pod {k}: exec output differs ({} bytes)",
                            out.stdout.len()
                        ));
                    }
                    Ok(ready)
                })();
                let removed = pod.remove(&mut cri);
                let ready = body?;
                removed.map(|()| ready)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    for t in threads {
        slowest = slowest.max(t.join().map_err(|_| "pod thread panicked")??);
    }
    println!(
        "    {pods} pods at once: all ready within {:.1}s, done in {:.1}s",
        slowest.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
    check_host(env, &format!("{pods} pods at once"), &counts, &ctrd)
}

/// The guest's cgroup directories and processes, counted from root in the
/// guest outside every container.
fn guest_counts(env: &Env, vm_id: &str) -> Result<(usize, usize), String> {
    let out = guest_root(
        env,
        vm_id,
        "echo cg=$(find /sys/fs/cgroup -type d | wc -l) ps=$(ls -d /proc/[0-9]* | wc -l)",
    )?;
    let field = |key: &str| {
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .ok_or(format!("no {key} in {out:?}"))
    };
    Ok((field("cg=")?, field("ps=")?))
}

/// One exec per thread, at once; each prints its own lines and exits with
/// its own code, checked byte for byte.
fn execs_at_once(task: &Detached, round: &str, count: u64) -> Result<(), String> {
    let threads: Vec<_> = (0..count)
        .map(|k| {
            let mut cmd = task.exec(
                &format!("{round}{k}"),
                &[],
                &["sh", "-c", &format!("seq {k} {}; exit {}", k + 300, k % 50)],
            );
            std::thread::spawn(move || run(&mut cmd).map(|o| (k, o)))
        })
        .collect();
    for t in threads {
        let (k, o) = t.join().map_err(|_| "exec thread panicked")??;
        let want: String = (k..=k + 300).map(|i| format!("{i}\n")).collect();
        if stdout(&o) != want || o.status.code() != Some((k % 50) as i32) {
            return Err(format!(
                "exec {round}{k}: exit {:?}, {} bytes of output: {}",
                o.status.code(),
                stdout(&o).len(),
                stderr(&o)
            ));
        }
    }
    Ok(())
}

/// Execs one after another, each with its own exit code.
fn execs_in_turn(task: &Detached, round: &str, count: u64, base: u64) -> Result<(), String> {
    for k in 0..count {
        let code = (base + k) % 200 + 1;
        let o = run(&mut task.exec(
            &format!("{round}{k}"),
            &[],
            &["sh", "-c", &format!("exit {code}")],
        ))?;
        if o.status.code() != Some(code as i32) {
            return Err(format!(
                "exec {round}{k} reported {:?}, not its own {code}",
                o.status.code()
            ));
        }
    }
    Ok(())
}

/// In one pod: HULL_SOAK_EXECS execs at once (twice), then execs whose
/// pids are ones the guest handed out before (ns_last_pid set back), then
/// execs across the wrap of the guest's pid_max. Every exec's output and
/// exit code is its own, and the shim's fds and the guest's cgroups and
/// processes are as before.
pub(super) fn soak_execs_at_once_and_pid_reuse(env: &Env) -> Result<(), String> {
    let execs = knob("HULL_SOAK_EXECS", 10);
    let config = attacker_config(env, "soak-execs")?;
    let pod = run_sleeping_pod(env, "execs", &config)?;
    let task = pod.member_detached(&env.unique("execs-c"), &[])?;
    let shim = victim_pid(&pod.id, "containerd-shim-hull-v2", Duration::from_secs(5))?;
    let (fds, guest) = (open_fds(&shim), guest_counts(env, &pod.id)?);
    let start = Instant::now();
    for round in ["a", "b"] {
        execs_at_once(&task, round, execs)?;
    }
    println!(
        "    2 x {execs} execs at once in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    let sysctl = "/proc/sys/kernel";
    let first = guest_root(
        env,
        &pod.id,
        &format!("echo last=$(cat {sysctl}/ns_last_pid)"),
    )?;
    let last: u64 = first
        .split_whitespace()
        .find_map(|w| w.strip_prefix("last="))
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no ns_last_pid in {first:?}"))?;
    let reuse = 20;
    execs_in_turn(&task, "before", reuse, 0)?;
    guest_root(env, &pod.id, &format!("echo {last} > {sysctl}/ns_last_pid"))?;
    execs_in_turn(&task, "reused", reuse, 100)?;
    guest_root(
        env,
        &pod.id,
        &format!("echo $(( $(cat {sysctl}/pid_max) - 8 )) > {sysctl}/ns_last_pid"),
    )?;
    execs_in_turn(&task, "wrapped", 10, 50)?;
    let after = guest_root(
        env,
        &pod.id,
        &format!("echo last=$(cat {sysctl}/ns_last_pid)"),
    )?;
    let wrapped_to = after
        .split_whitespace()
        .find(|w| w.starts_with("last="))
        .unwrap_or_default();
    println!("    {reuse} execs on reused pids, 10 across the pid_max wrap (then {wrapped_to})");
    let (fds_now, guest_now) = (open_fds(&shim), guest_counts(env, &pod.id)?);
    println!(
        "    shim fds {fds} -> {fds_now}; guest cgroups, processes {guest:?} -> {guest_now:?}"
    );
    if fds_now > fds || guest_now.0 != guest.0 || guest_now.1 > guest.1 {
        return Err(format!(
            "after the execs: shim fds {fds} -> {fds_now}, guest (cgroups, processes) {guest:?} -> {guest_now:?}"
        ));
    }
    Ok(())
}
