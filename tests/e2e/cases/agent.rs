//! The agent API in a real VM, driven by `hull-agentctl` through the
//! sandbox's vsock socket next to the shim: guest details, metrics, both
//! stdio paths and raw vsock (with CopyFile placing the helper), and
//! containers created directly in the running sandbox.

use super::{expect_success, stdout, Detached};
use crate::env::{run, Env};

fn agentctl(env: &Env, id: &str, args: &[&str]) -> Result<String, String> {
    let sock = env.state_dir.join(id).join("vsock.sock");
    let o = run(std::process::Command::new("hull-agentctl")
        .arg("--vm-socket")
        .arg(&sock)
        .args(args))?;
    expect_success(&o)?;
    Ok(stdout(&o))
}

pub(super) fn agent_api_answers_in_the_vm(env: &Env) -> Result<(), String> {
    // The raw vsock baseline listens in the container: vsock allowed.
    let config = super::hostile::vsock_allowed_config(env)?;
    let option = ["--runtime-config-path", config.to_str().unwrap_or_default()];
    let task = Detached::start_with(env, "agentapi", &option, &["sleep", "1000"])?;
    let details = agentctl(env, &task.id, &["details"])?;
    for want in [
        "init_daemon: true",
        "blk",
        "overlayfs",
        "supports_seccomp: true",
    ] {
        if !details.contains(want) {
            return Err(format!("details lack {want:?}:\n{details}"));
        }
    }
    let metrics = agentctl(env, &task.id, &["metrics"])?;
    for want in [
        "hull_agent_containers 1\n",
        "hull_agent_resident_memory_bytes ",
        "hull_guest_memory_bytes{item=\"MemTotal\"}",
    ] {
        if !metrics.contains(want) {
            return Err(format!("metrics lack {want:?}:\n{metrics}"));
        }
    }
    // 4 MiB through each path; the tool fails unless every byte arrives.
    let agent = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/x86_64-unknown-linux-gnu/release/hull-agent");
    let agent = agent.display().to_string();
    let stdio = agentctl(
        env,
        &task.id,
        &[
            "bench-stdio",
            "--container",
            &task.id,
            "--mib",
            "4",
            "--source-binary",
            &agent,
        ],
    )?;
    for path in ["raw-stream", "read-stdout-rpc", "raw-vsock"] {
        if !stdio.contains(&format!("path={path} bytes=4194304 ")) {
            return Err(format!("no full {path} transfer:\n{stdio}"));
        }
    }
    let rss = agentctl(
        env,
        &task.id,
        &["bench-containers", "--container", &task.id, "--count", "2"],
    )?;
    if !rss.contains("containers=3 ") {
        return Err(format!(
            "two more containers not created in the sandbox:\n{rss}"
        ));
    }
    let rpc = agentctl(env, &task.id, &["bench-rpc", "--count", "20"])?;
    if !rpc.contains("count=20") {
        return Err(format!("RPC round trips not measured:\n{rpc}"));
    }
    Ok(())
}

/// Off by default: no console port. With `hull.debug_console=on` and the
/// debug image, a shell in the guest answers through `hull-agentctl console`.
pub(super) fn debug_console_only_when_enabled(env: &Env) -> Result<(), String> {
    let task = Detached::start(env, "noconsole", &["sleep", "1000"])?;
    let sock = env.state_dir.join(&task.id).join("vsock.sock");
    let o = run(std::process::Command::new("hull-agentctl")
        .arg("--vm-socket")
        .arg(&sock)
        .arg("console")
        .stdin(std::process::Stdio::null()))?;
    if o.status.success() {
        return Err(format!("a console answered by default: {}", stdout(&o)));
    }
    drop(task);

    let config = super::hostile::attacker_config(env, "debug-console")?;
    let option = ["--runtime-config-path", config.to_str().unwrap_or_default()];
    let task = Detached::start_with(env, "console", &option, &["sleep", "1000"])?;
    let out = super::hostile::guest_root(env, &task.id, "echo guest-$((40+2)); cat /proc/1/comm")?;
    if !out.contains("guest-42") || !out.contains("init") {
        return Err(format!("debug console output: {out:?}"));
    }
    Ok(())
}
