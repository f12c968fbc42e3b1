//! hull-cache: sandboxes that take a booted VM behave as those that boot
//! one; the pool refills and replaces a VM that dies; a sandbox of another
//! shape boots its own; stopping (or killing) the service leaves running
//! pods alone and nothing else behind.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::*;
use crate::env::{finish, run, Containerd, Env};

const HULL_CACHE: &str = "/usr/local/bin/hull-cache";
/// A pool VM boots in about 2 s under TCG; refills wait for other VMs too.
const FILL_WITHIN: Duration = Duration::from_secs(90);

/// The suite's hull-cache (its own socket and pool directory, from the
/// suite's configuration), ended with SIGTERM when dropped.
struct Cache<'a> {
    env: &'a Env,
    child: Option<Child>,
}

/// What `hull-cache status` says.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Status {
    waiting: u32,
    size: u32,
    booting: u32,
    taken: u64,
    replaced: u64,
}

/// "hull-cache runs: 1/1 VMs waiting, 0 booting (...); 2 taken, 0 replaced"
fn parse_status(text: &str) -> Option<Status> {
    let rest = text.trim().strip_prefix("hull-cache runs: ")?;
    let (waiting, rest) = rest.split_once('/')?;
    let (size, rest) = rest.split_once(" VMs waiting, ")?;
    let (booting, rest) = rest.split_once(" booting")?;
    let tail = rest.rsplit_once("); ")?.1;
    let (taken, replaced) = tail.split_once(" taken, ")?;
    Some(Status {
        waiting: waiting.parse().ok()?,
        size: size.parse().ok()?,
        booting: booting.parse().ok()?,
        taken: taken.trim().parse().ok()?,
        replaced: replaced.trim_end_matches(" replaced").parse().ok()?,
    })
}

impl<'a> Cache<'a> {
    fn start(env: &'a Env) -> Result<Cache<'a>, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env.path("hull-cache.log"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(HULL_CACHE)
            .env("HULL_CONFIG", &env.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start {HULL_CACHE}: {e}"))?;
        let cache = Cache {
            env,
            child: Some(child),
        };
        cache.wait_for("the pool to fill", |s| s.waiting == s.size && s.size > 0)?;
        Ok(cache)
    }

    fn status(&self) -> Result<Status, String> {
        let o = run(Command::new(HULL_CACHE)
            .arg("status")
            .env("HULL_CONFIG", &self.env.config))?;
        parse_status(&stdout(&o)).ok_or(format!("hull-cache status: {:?}", stdout(&o)))
    }

    fn wait_for(&self, what: &str, done: impl Fn(&Status) -> bool) -> Result<Status, String> {
        let deadline = Instant::now() + FILL_WITHIN;
        let mut last = Err("not asked".to_string());
        while Instant::now() < deadline {
            last = self.status();
            if let Ok(s) = &last {
                if done(s) {
                    return Ok(*s);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "hull-cache: no {what} within {FILL_WITHIN:?} (last: {last:?}); log:\n{}",
            self.log_tail()
        ))
    }

    fn wait_full(&self) -> Result<Status, String> {
        self.wait_for("full pool", |s| s.waiting == s.size)
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.env.path("hull-cache.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Runs `case` with a full pool; it must have taken a VM.
    fn run_taking(&self, name: &str, case: Case) -> Result<(), String> {
        let before = self.wait_full()?.taken;
        case(self.env).map_err(|e| format!("{name} with the cache: {e}"))?;
        let after = self.status()?.taken;
        if after == before {
            return Err(format!("{name}: no VM was taken from the cache"));
        }
        self.env.check_no_leaks()?;
        println!(
            "    {name}: ok, {} VM(s) taken from the cache",
            after - before
        );
        Ok(())
    }

    /// SIGTERM, and the service's exit within 30 s.
    fn stop(mut self) -> Result<(), String> {
        let child = self.child.take().ok_or("stopped twice")?;
        signal(&child, "TERM")?;
        let o = finish(child, Duration::from_secs(30))?;
        if !o.status.success() {
            return Err(format!(
                "hull-cache exited {}: {}",
                o.status,
                self.log_tail()
            ));
        }
        Ok(())
    }

    fn kill(mut self) -> Result<(), String> {
        let child = self.child.take().ok_or("stopped twice")?;
        signal(&child, "KILL")?;
        finish(child, Duration::from_secs(10)).map(drop)
    }
}

impl Drop for Cache<'_> {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = signal(&child, "TERM");
            let _ = finish(child, Duration::from_secs(30));
        }
    }
}

fn signal(child: &Child, sig: &str) -> Result<(), String> {
    run(Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()])).map(drop)
}

/// Processes of VMs still waiting in the pool (their directory is there).
fn waiting_vm_processes(env: &Env) -> Vec<String> {
    Env::processes_with(&format!("{}/", env.pool_dir().display()))
        .into_iter()
        .filter(|p| {
            !env.taken_vm_processes()
                .iter()
                .any(|t| t.ends_with(p.as_str()))
        })
        .collect()
}

fn pool_entries(env: &Env) -> Vec<String> {
    std::fs::read_dir(env.pool_dir())
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The existing pod, network, volume, exec, fault and leak cases, once
/// more with every sandbox taking its VM from the cache.
pub(super) fn cache_pods_behave_as_booted_ones(env: &Env) -> Result<(), String> {
    let cache = Cache::start(env)?;
    let mut cases: Vec<(&str, Case)> = vec![
        ("runs_in_its_own_vm", runs_in_its_own_vm),
        (
            "exec_joins_the_running_container",
            exec_joins_the_running_container,
        ),
        (
            "volumes_are_shared_read_only_where_asked",
            volumes_are_shared_read_only_where_asked,
        ),
        ("cri_pod_runs_in_one_vm", cri_pod_runs_in_one_vm),
        (
            "pod_network_reaches_the_vm_both_ways",
            pod_network_reaches_the_vm_both_ways,
        ),
        (
            "dead_vm_or_helper_ends_the_task",
            dead_vm_or_helper_ends_the_task,
        ),
        (
            "dead_shim_leaves_nothing_behind",
            dead_shim_leaves_nothing_behind,
        ),
    ];
    if env.containerd == Containerd::V2_3 {
        cases.push((
            "cri_sandbox_api_pod_has_no_pause_container",
            cri_sandbox_api_pod_has_no_pause_container,
        ));
    }
    for (name, case) in cases {
        cache.run_taking(name, case)?;
    }
    cache.stop()
}

/// A waiting VM killed is replaced (and logged); a taken one is replaced.
pub(super) fn cache_replaces_a_killed_vm_and_refills(env: &Env) -> Result<(), String> {
    let cache = Cache::start(env)?;
    let qemu = waiting_vm_processes(env)
        .into_iter()
        .find(|p| p.contains("qemu-system"))
        .and_then(|p| p.split_whitespace().next().map(str::to_string))
        .ok_or("no waiting VM's QEMU")?;
    run(Command::new("kill").args(["-9", &qemu]))?;
    let s = cache.wait_for("replacement", |s| s.replaced == 1 && s.waiting == s.size)?;
    if !cache
        .log_tail()
        .contains("pool VM died while waiting; replacing it")
    {
        return Err(format!("the death was not logged:\n{}", cache.log_tail()));
    }
    let o = run(&mut env.run_cmd(&env.unique("after-kill"), &["true"]))?;
    expect_success(&o)?;
    let after = cache.wait_for("refill after a take", |t| {
        t.taken == s.taken + 1 && t.waiting == t.size
    })?;
    println!("    killed waiting VM replaced; after a take the pool is full again: {after:?}");
    cache.stop()
}

/// A sandbox larger than the pool's VM boots its own; the pool keeps its VM.
pub(super) fn cache_larger_sandbox_boots_fresh(env: &Env) -> Result<(), String> {
    let allowing = env.good_config().replace(
        "annotation_allowlist = []",
        "annotation_allowlist = [\"hypervisor.memory_mib\"]",
    );
    env.write_config(&allowing)?;
    let result = (|| {
        let cache = Cache::start(env)?;
        let before = cache.status()?;
        let big = ["--annotation", "io.hull.config.hypervisor.memory_mib=768"];
        let mem = guest_mem_total_kb(env, "cache-big", &big)?;
        let after = cache.status()?;
        if mem < 600 * 1024 || after.taken != before.taken || after.waiting != before.waiting {
            return Err(format!(
                "768 MiB sandbox: MemTotal {mem} kB, pool {before:?} -> {after:?}"
            ));
        }
        let mem = guest_mem_total_kb(env, "cache-default", &[])?;
        let taken = cache.status()?.taken;
        if mem > 600 * 1024 || taken != before.taken + 1 {
            return Err(format!("512 MiB sandbox: MemTotal {mem} kB, taken {taken}"));
        }
        cache.stop()
    })();
    env.restore_config()?;
    result
}

/// SIGTERM to the service: its waiting VM ends, a pod that took one runs
/// on (exec works), nothing of the pool is left; then SIGKILL to a new
/// service: its waiting VM ends all the same (its keeper's socket closed).
pub(super) fn cache_stop_leaves_running_pods_untouched(env: &Env) -> Result<(), String> {
    let cache = Cache::start(env)?;
    let id = env.unique("cache-survivor");
    let child = run_sleeping(env, &id)?;
    if cache.status()?.taken != 1 {
        return Err("the running task did not take a VM from the cache".into());
    }
    cache.wait_full()?;
    cache.stop()?;
    let nothing_waits = || -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (procs, dirs) = (waiting_vm_processes(env), pool_entries(env));
            if procs.is_empty() && dirs.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("left of the pool: {procs:#?} {dirs:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    nothing_waits()?;
    let o = run(env.ctr().args([
        "task",
        "exec",
        "--exec-id",
        "after-stop",
        &id,
        "echo",
        "alive",
    ]))?;
    expect_success(&o)?;
    if stdout(&o).trim() != "alive" {
        return Err(format!("exec after the cache stopped: {:?}", stdout(&o)));
    }
    run(env.ctr().args(["task", "kill", "-s", "KILL", &id]))?;
    let o = finish(child, Duration::from_secs(60))?;
    if o.status.code() != Some(137) {
        return Err(format!("the task ended with {:?}", o.status.code()));
    }
    env.check_no_leaks()?;
    let crashed = Cache::start(env)?;
    crashed.kill()?;
    nothing_waits()?;
    println!("    SIGTERM and SIGKILL: no waiting VM left, the running task untouched");
    Ok(())
}
