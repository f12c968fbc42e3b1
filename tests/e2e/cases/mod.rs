//! The cases: each drives `ctr` and checks what a runc user would see.
//! This module holds the list and the helpers the case modules share.

mod agent;
mod cache;
mod config;
mod cri;
mod deploy;
mod failure;
mod hostile;
mod image;
mod inside;
mod memory;
mod network;
mod run;
mod soak;
mod subscriber;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use self::{
    agent::*, cache::*, config::*, cri::*, deploy::*, failure::*, hostile::*, image::*, inside::*,
    memory::*, network::*, run::*, soak::*,
};
use crate::env::{run, Env, CMD_TIMEOUT};
use subscriber::EventSubscriber;

type Case = fn(&Env) -> Result<(), String>;

/// Which containerd versions a case runs against: the ctr and CRI cases
/// against every one the suite starts, the rest (the guest, the shim's own
/// failures, attacks) against the first.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Every,
    First,
    /// Every containerd with the sandbox API (2.x).
    SandboxApi,
}

pub const ALL: &[(&str, Case, Scope)] = &[
    (
        "cache_pods_behave_as_booted_ones",
        cache_pods_behave_as_booted_ones,
        Scope::Every,
    ),
    (
        "image_core_cases_run_as_on_the_initrd",
        image_core_cases_run_as_on_the_initrd,
        Scope::First,
    ),
    (
        "image_distro_runs_the_agent_under_systemd",
        image_distro_runs_the_agent_under_systemd,
        Scope::First,
    ),
    (
        "image_loads_modules_on_demand",
        image_loads_modules_on_demand,
        Scope::First,
    ),
    (
        "image_modified_does_not_boot",
        image_modified_does_not_boot,
        Scope::First,
    ),
    (
        "freed_guest_memory_returns_to_the_host",
        freed_guest_memory_returns_to_the_host,
        Scope::First,
    ),
    (
        "cache_replaces_a_killed_vm_and_refills",
        cache_replaces_a_killed_vm_and_refills,
        Scope::First,
    ),
    (
        "cache_larger_sandbox_boots_fresh",
        cache_larger_sandbox_boots_fresh,
        Scope::First,
    ),
    (
        "cache_stop_leaves_running_pods_untouched",
        cache_stop_leaves_running_pods_untouched,
        Scope::First,
    ),
    ("runs_in_its_own_vm", runs_in_its_own_vm, Scope::Every),
    (
        "cri_privileged_container_manages_a_bridge",
        cri_privileged_container_manages_a_bridge,
        Scope::Every,
    ),
    (
        "cri_sandbox_api_pod_has_no_pause_container",
        cri_sandbox_api_pod_has_no_pause_container,
        Scope::SandboxApi,
    ),
    (
        "agent_api_answers_in_the_vm",
        agent_api_answers_in_the_vm,
        Scope::First,
    ),
    (
        "debug_console_only_when_enabled",
        debug_console_only_when_enabled,
        Scope::First,
    ),
    ("exit_code_propagates", exit_code_propagates, Scope::Every),
    (
        "stdout_and_stderr_are_separate",
        stdout_and_stderr_are_separate,
        Scope::Every,
    ),
    (
        "stdin_reaches_the_container",
        stdin_reaches_the_container,
        Scope::Every,
    ),
    (
        "large_binary_output_is_byte_exact",
        large_binary_output_is_byte_exact,
        Scope::First,
    ),
    (
        "terminal_is_a_real_tty",
        terminal_is_a_real_tty,
        Scope::Every,
    ),
    ("kill_delivers_signals", kill_delivers_signals, Scope::Every),
    (
        "two_containers_run_in_two_vms",
        two_containers_run_in_two_vms,
        Scope::First,
    ),
    (
        "exec_joins_the_running_container",
        exec_joins_the_running_container,
        Scope::Every,
    ),
    ("exec_with_a_terminal", exec_with_a_terminal, Scope::Every),
    (
        "pause_freezes_and_resume_thaws",
        pause_freezes_and_resume_thaws,
        Scope::Every,
    ),
    (
        "metrics_come_from_the_guest_cgroup",
        metrics_come_from_the_guest_cgroup,
        Scope::Every,
    ),
    ("oom_kill_is_published", oom_kill_is_published, Scope::Every),
    (
        "pids_and_kill_all_reach_every_process",
        pids_and_kill_all_reach_every_process,
        Scope::Every,
    ),
    (
        "task_errors_carry_the_right_code",
        task_errors_carry_the_right_code,
        Scope::Every,
    ),
    (
        "task_survives_a_containerd_restart",
        task_survives_a_containerd_restart,
        Scope::Every,
    ),
    (
        "foreign_oom_events_are_not_published",
        foreign_oom_events_are_not_published,
        Scope::First,
    ),
    ("soak_plain_cycles", soak_plain_cycles, Scope::Every),
    ("soak_fault_cycles", soak_fault_cycles, Scope::First),
    ("soak_pods_at_once", soak_pods_at_once, Scope::First),
    (
        "soak_execs_at_once_and_pid_reuse",
        soak_execs_at_once_and_pid_reuse,
        Scope::First,
    ),
    (
        "an_exit_while_containerd_is_down_is_delivered",
        an_exit_while_containerd_is_down_is_delivered,
        Scope::Every,
    ),
    (
        "runtime_config_path_chooses_the_configuration",
        runtime_config_path_chooses_the_configuration,
        Scope::Every,
    ),
    (
        "hung_guest_is_declared_dead",
        hung_guest_is_declared_dead,
        Scope::First,
    ),
    (
        "seccomp_profiles_confine_the_container",
        seccomp_profiles_confine_the_container,
        Scope::First,
    ),
    (
        "device_rules_hold_in_the_guest",
        device_rules_hold_in_the_guest,
        Scope::First,
    ),
    (
        "volumes_are_shared_read_only_where_asked",
        volumes_are_shared_read_only_where_asked,
        Scope::Every,
    ),
    (
        "annotations_change_only_allowlisted_keys",
        annotations_change_only_allowlisted_keys,
        Scope::First,
    ),
    (
        "pod_containers_share_one_vm",
        pod_containers_share_one_vm,
        Scope::Every,
    ),
    (
        "cri_pod_runs_in_one_vm",
        cri_pod_runs_in_one_vm,
        Scope::Every,
    ),
    (
        "cri_host_network_pod_is_refused",
        cri_host_network_pod_is_refused,
        Scope::Every,
    ),
    (
        "cri_propagating_volumes_are_refused_by_name",
        cri_propagating_volumes_are_refused_by_name,
        Scope::Every,
    ),
    (
        "node_install_upgrade_and_removal_spare_running_pods",
        node_install_upgrade_and_removal_spare_running_pods,
        Scope::Every,
    ),
    (
        "pod_network_reaches_the_vm_both_ways",
        pod_network_reaches_the_vm_both_ways,
        Scope::Every,
    ),
    (
        "hooks_are_refused_by_name",
        hooks_are_refused_by_name,
        Scope::First,
    ),
    (
        "missing_kernel_is_named",
        missing_kernel_is_named,
        Scope::First,
    ),
    (
        "missing_helper_is_named",
        missing_helper_is_named,
        Scope::First,
    ),
    (
        "kernel_vsock_transport_runs_or_names_the_device",
        kernel_vsock_transport_runs_or_names_the_device,
        Scope::First,
    ),
    (
        "bad_command_fails_cleanly",
        bad_command_fails_cleanly,
        Scope::Every,
    ),
    (
        "dead_vm_or_helper_ends_the_task",
        dead_vm_or_helper_ends_the_task,
        Scope::First,
    ),
    (
        "dead_shim_leaves_nothing_behind",
        dead_shim_leaves_nothing_behind,
        Scope::Every,
    ),
    (
        "dead_shim_leaves_no_tc_rules",
        dead_shim_leaves_no_tc_rules,
        Scope::First,
    ),
    (
        "planted_symlinks_do_not_redirect_the_share",
        planted_symlinks_do_not_redirect_the_share,
        Scope::First,
    ),
    (
        "planted_symlinks_do_not_redirect_teardown",
        planted_symlinks_do_not_redirect_teardown,
        Scope::First,
    ),
    (
        "guest_setuid_files_and_devices_stay_inert",
        guest_setuid_files_and_devices_stay_inert,
        Scope::First,
    ),
    (
        "console_flood_stays_within_its_cap",
        console_flood_stays_within_its_cap,
        Scope::First,
    ),
    (
        "frozen_qemu_does_not_hold_delete",
        frozen_qemu_does_not_hold_delete,
        Scope::First,
    ),
    (
        "exit_arrives_while_a_child_holds_stdout",
        exit_arrives_while_a_child_holds_stdout,
        Scope::First,
    ),
    (
        "containers_cannot_reach_the_host_over_vsock",
        containers_cannot_reach_the_host_over_vsock,
        Scope::First,
    ),
    (
        "shim_daemons_never_linger",
        shim_daemons_never_linger,
        Scope::Every,
    ),
];

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn expect_success(o: &std::process::Output) -> Result<(), String> {
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("ctr failed ({}): {}", o.status, stderr(o)))
    }
}

fn wait_running(env: &Env, id: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let o = run(env.ctr().args(["task", "ls"]))?;
        if stdout(&o)
            .lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING"))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("task {id} never reached RUNNING"))
}

/// Reads the child's stdout until a line equal to `want` (within
/// `CMD_TIMEOUT`); the rest of its stdout is drained in the background.
fn wait_for_line(child: &mut std::process::Child, want: &str) -> Result<(), String> {
    wait_for_line_where(child, want, CMD_TIMEOUT, |l| l == want)
}

/// Reads the child's stdout until a line satisfies `is` (within `limit`).
fn wait_for_line_where(
    child: &mut std::process::Child,
    what: &str,
    limit: Duration,
    is: impl Fn(&str) -> bool,
) -> Result<(), String> {
    let stdout = child.stdout.take().ok_or("stdout is not piped")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if is(&line) => return Ok(()),
            Ok(line) => seen.push(line),
            Err(e) => return Err(format!("no {what:?} line ({e}); saw {seen:#?}")),
        }
    }
}

/// `ctr events`, its stdout piped for `wait_for_line_where`.
fn ctr_events(env: &Env) -> Result<std::process::Child, String> {
    env.ctr()
        .arg("events")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())
}

/// `ctr run --rm ... sleep 1000` in the background, once RUNNING.
fn run_sleeping(env: &Env, id: &str) -> Result<std::process::Child, String> {
    let child = env
        .run_cmd(id, &["sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_running(env, id)?;
    Ok(child)
}

/// The pid of the task's QEMU or helper whose command line names `what`
/// (a VM taken from hull-cache is found by its output in the task's
/// directory).
fn vm_process(env: &Env, id: &str, what: &str) -> Result<String, String> {
    Env::vm_processes_under(&env.state_dir.join(id))
        .into_iter()
        .find(|p| p.contains(what) && !p.contains("hull-cache keeper"))
        .and_then(|p| p.split_whitespace().next().map(str::to_string))
        .ok_or(format!("no {what} process for {id}"))
}

/// A task started with `ctr run -d`, killed and deleted when dropped.
struct Detached<'a> {
    env: &'a Env,
    id: String,
}

impl<'a> Detached<'a> {
    fn start(env: &'a Env, name: &str, args: &[&str]) -> Result<Self, String> {
        Detached::start_with(env, name, &[], args)
    }

    /// Like `start`, with extra `ctr run` options.
    fn start_with(
        env: &'a Env,
        name: &str,
        options: &[&str],
        args: &[&str],
    ) -> Result<Self, String> {
        Detached::start_as(env, env.unique(name), options, args)
    }

    /// Like `start_with`, with the task id exactly `id`.
    fn start_as(env: &'a Env, id: String, options: &[&str], args: &[&str]) -> Result<Self, String> {
        let mut cmd = env.ctr();
        cmd.args(["run", "-d", "--runtime", crate::env::RUNTIME])
            .args(options)
            .args([crate::env::IMAGE, &id])
            .args(args);
        let o = run(&mut cmd)?;
        let task = Detached { env, id };
        expect_success(&o)?;
        wait_running(env, &task.id)?;
        Ok(task)
    }

    /// A file of the task's rootfs, as the host sees it.
    fn rootfs_file(&self, rel: &str) -> std::path::PathBuf {
        self.env
            .path("state/io.containerd.runtime.v2.task/hull-e2e")
            .join(&self.id)
            .join("rootfs")
            .join(rel)
    }

    /// Waits (30 s at most) until the task has written `rel` in its rootfs.
    fn wait_for_file(&self, rel: &str, what: &str) -> Result<(), String> {
        let path = self.rootfs_file(rel);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            if Instant::now() > deadline {
                return Err(what.to_string());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// `ctr task exec --exec-id EXEC [extra] ID args...`
    fn exec(&self, exec_id: &str, extra: &[&str], args: &[&str]) -> Command {
        let mut c = self.env.ctr();
        c.args(["task", "exec", "--exec-id", exec_id])
            .args(extra)
            .arg(&self.id)
            .args(args);
        c
    }
}

impl Drop for Detached<'_> {
    fn drop(&mut self) {
        let ctr = |args: &[&str]| {
            let _ = run(self.env.ctr().args(args).arg(&self.id));
        };
        ctr(&["task", "kill", "-s", "KILL"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let o = run(self.env.ctr().args(["task", "ls"]));
            let running = o.map(|o| {
                stdout(&o)
                    .lines()
                    .any(|l| l.starts_with(&self.id) && !l.contains("STOPPED"))
            });
            if !running.unwrap_or(false) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        ctr(&["task", "delete"]);
        ctr(&["container", "delete"]);
    }
}

fn task_status(env: &Env, id: &str) -> Result<String, String> {
    let o = run(env.ctr().args(["task", "ls"]))?;
    Ok(stdout(&o)
        .lines()
        .find(|l| l.starts_with(id))
        .and_then(|l| l.split_whitespace().nth(2))
        .unwrap_or("absent")
        .to_string())
}

fn wait_status(env: &Env, id: &str, want: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let now = task_status(env, id)?;
        if now == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("task {id} is {now}, never {want}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn guest_mem_total_kb(env: &Env, id: &str, options: &[&str]) -> Result<u64, String> {
    let o = run(&mut env.run_with(
        &env.unique(id),
        options,
        &["grep", "MemTotal", "/proc/meminfo"],
    ))?;
    expect_success(&o)?;
    stdout(&o)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or(format!("no MemTotal in {:?}", stdout(&o)))
}

/// A pod through CRI's annotations (given with ctr): its sandbox container,
/// running `sleep`, with the configuration file `config`.
struct Pod<'a> {
    sandbox: Detached<'a>,
    pub id: String,
    config: String,
}

fn run_sleeping_pod<'a>(
    env: &'a Env,
    name: &str,
    config: &std::path::Path,
) -> Result<Pod<'a>, String> {
    let id = env.unique(name);
    let config = config.display().to_string();
    let sandbox_id = format!("io.kubernetes.cri.sandbox-id={id}");
    let sandbox = Detached::start_as(
        env,
        id.clone(),
        &[
            "--runtime-config-path",
            &config,
            "--annotation",
            "io.kubernetes.cri.container-type=sandbox",
            "--annotation",
            &sandbox_id,
        ],
        &["sleep", "1000"],
    )?;
    Ok(Pod {
        sandbox,
        id,
        config,
    })
}

impl<'a> Pod<'a> {
    /// `ctr run` options that make a container of this pod.
    fn member_options(&self) -> Vec<String> {
        vec![
            "--runtime-config-path".into(),
            self.config.clone(),
            "--annotation".into(),
            "io.kubernetes.cri.container-type=container".into(),
            "--annotation".into(),
            format!("io.kubernetes.cri.sandbox-id={}", self.id),
        ]
    }

    /// Runs a container `id` of the pod to its end; its stdout, or what
    /// ctr said when it failed.
    fn member(&self, id: &str, options: &[&str], args: &[&str]) -> Result<String, String> {
        let mut cmd = self.sandbox.env.ctr();
        cmd.args(["run", "--rm", "--runtime", crate::env::RUNTIME])
            .args(self.member_options())
            .args(options)
            .args([crate::env::IMAGE, id])
            .args(args);
        let o = run(&mut cmd)?;
        if o.status.success() {
            Ok(stdout(&o))
        } else {
            Err(stderr(&o))
        }
    }

    /// Starts a sleeping container `id` of the pod.
    fn member_detached(&self, id: &str, options: &[&str]) -> Result<Detached<'a>, String> {
        let mut all: Vec<String> = self.member_options();
        all.extend(options.iter().map(|o| o.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        Detached::start_as(self.sandbox.env, id.to_string(), &all, &["sleep", "1000"])
    }
}
