//! Exit statuses after PID reuse: a status the agent reaped for a process
//! nobody waits on (the forking step of a container's init) must never be
//! handed to a later process that gets the same pid.

use std::time::Duration;

use protocols::agent;

use crate::fixture::{ctx, Agent};

/// The pids the agent logged as reaped.
fn reaped(log: &str) -> Vec<i32> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "reaped")
        .filter_map(|v| v["pid"].as_i64().map(|p| p as i32))
        .collect()
}

/// The pid the agent logged for exec `exec_id`.
fn exec_pid(log: &str, exec_id: &str) -> Option<i32> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["msg"] == "process started" && v["exec"] == exec_id)
        .and_then(|v| v["pid"].as_i64().map(|p| p as i32))
}

/// The PID 1 (a shell) of the agent's PID namespace, as the host sees it.
fn namespace_init(unshare: u32) -> u32 {
    let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .expect("unshare's children");
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("unshare has its forked child")
}

/// Makes `next` the next pid handed out in the agent's PID namespace.
fn set_next_pid(ns_init: u32, next: i32) {
    let script = format!("echo {} > /proc/sys/kernel/ns_last_pid", next - 1);
    let ok = std::process::Command::new("nsenter")
        .args([
            "--target",
            &ns_init.to_string(),
            "--pid",
            "--mount",
            "--",
            "sh",
            "-c",
            &script,
        ])
        .status()
        .expect("nsenter")
        .success();
    assert!(ok, "write ns_last_pid");
}

/// Starts `sleep 30` as exec `exec_id` with `next` as the next pid; its pid.
async fn exec_from(a: &Agent, ns_init: u32, next: i32, exec_id: &str) -> i32 {
    set_next_pid(ns_init, next);
    a.exec("c", exec_id, &Agent::process(&["sleep", "30"], false))
        .await
        .expect("ExecProcess");
    exec_pid(&a.log(), exec_id).expect("logged exec pid")
}

async fn kill(a: &Agent, exec_id: &str) {
    let req = agent::SignalProcessRequest {
        container_id: "c".into(),
        exec_id: exec_id.into(),
        signal: 9,
        ..Default::default()
    };
    a.agent
        .signal_process(ctx(), &req)
        .await
        .expect("kill the exec");
}

/// An exec's forking step (the process that forks into the container's
/// PID namespace and exits) is reaped with status 0 and nobody waits for
/// it. The next exec is aimed so that its process gets that same pid: it
/// must be seen running, not handed the old 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pid_never_gets_an_old_status() {
    let a = Agent::start_in_pid_namespace().await;
    a.run("c", &["sleep", "300"]).await;
    let ns_init = namespace_init(a.pid());
    let base = 200;
    let first = exec_from(&a, ns_init, base, "first").await;
    assert!(
        first > base,
        "the forking step took {base}, the exec {first}"
    );
    kill(&a, "first").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        reaped(&a.log()).contains(&base),
        "pid {base} reaped unwatched"
    );
    let mut reused = None;
    for back in 1..=4 {
        let exec_id = format!("aimed-{back}");
        let pid = exec_from(&a, ns_init, base - back, &exec_id).await;
        let early = tokio::time::timeout(Duration::from_millis(1500), a.wait("c", &exec_id)).await;
        assert!(
            early.is_err(),
            "exec {exec_id} (pid {pid}, running) was reported exited: {early:?}"
        );
        // The wait cut short above is still pending in the agent and
        // collects this exit.
        kill(&a, &exec_id).await;
        if pid == base {
            reused = Some(exec_id);
            break;
        }
    }
    assert!(
        reused.is_some(),
        "no exec got pid {base}: the case did not exercise reuse"
    );
}
