//! `ctr run` as a runc user sees it: output, exit codes, stdin, a terminal,
//! signals, two VMs at once, a missing program.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::*;
use crate::env::{finish, run, Env, CMD_TIMEOUT};

pub(super) fn runs_in_its_own_vm(env: &Env) -> Result<(), String> {
    let host = run(Command::new("uname").arg("-r"))?;
    let o = run(&mut env.run_cmd(&env.unique("vm"), &["uname", "-r"]))?;
    expect_success(&o)?;
    let guest = stdout(&o);
    let modules: Vec<String> = std::fs::read_dir("/lib/modules")
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if guest.trim() == stdout(&host).trim() {
        return Err(format!("guest kernel {guest:?} is the host's"));
    }
    if !modules.iter().any(|m| m == guest.trim()) {
        return Err(format!(
            "guest kernel {guest:?} is not the installed guest kernel ({modules:?})"
        ));
    }
    // The agent's own log lines reach containerd's log through the shim.
    let log = std::fs::read_to_string(env.path("containerd.log")).map_err(|e| e.to_string())?;
    let forwarded = log
        .lines()
        .any(|l| l.contains("\"msg\":\"agent ready\"") && l.contains("source: guest"));
    if !forwarded {
        return Err("no forwarded guest agent log line in containerd's log".into());
    }
    Ok(())
}

pub(super) fn exit_code_propagates(env: &Env) -> Result<(), String> {
    for code in [0, 7, 255] {
        let o = run(&mut env.run_cmd(
            &env.unique(&format!("exit{code}")),
            &["sh", "-c", &format!("exit {code}")],
        ))?;
        if o.status.code() != Some(code) {
            return Err(format!(
                "sh -c 'exit {code}' made ctr exit {:?}: {}",
                o.status.code(),
                stderr(&o)
            ));
        }
    }
    Ok(())
}

pub(super) fn stdout_and_stderr_are_separate(env: &Env) -> Result<(), String> {
    let o = run(&mut env.run_cmd(
        &env.unique("streams"),
        &["sh", "-c", "echo to-out; echo to-err >&2"],
    ))?;
    expect_success(&o)?;
    if stdout(&o) != "to-out\n" || !stderr(&o).contains("to-err\n") || stderr(&o).contains("to-out")
    {
        return Err(format!("stdout {:?}, stderr {:?}", stdout(&o), stderr(&o)));
    }
    Ok(())
}

pub(super) fn stdin_reaches_the_container(env: &Env) -> Result<(), String> {
    let mut child = env
        .run_cmd(&env.unique("stdin"), &["sh", "-c", "cat; echo done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let data = "line one\nline two\n";
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(data.as_bytes())
        .map_err(|e| e.to_string())?;
    let o = finish(child, CMD_TIMEOUT)?;
    expect_success(&o)?;
    if stdout(&o) != format!("{data}done\n") {
        return Err(format!("stdout {:?}", stdout(&o)));
    }
    Ok(())
}

pub(super) fn large_binary_output_is_byte_exact(env: &Env) -> Result<(), String> {
    // 16 MiB of random bytes; the container reports their checksum on
    // stderr, and what its shell's stdout and stderr are.
    let script = "head -c 16777216 /dev/urandom > /tmp/blob && sha256sum /tmp/blob >&2 \
        && readlink /proc/$$/fd/1 >&2 && readlink /proc/$$/fd/2 >&2 && cat /tmp/blob";
    let o = run(&mut env.run_cmd(&env.unique("blob"), &["sh", "-c", script]))?;
    expect_success(&o)?;
    let got = format!("{:x}", Sha256::digest(&o.stdout));
    let want = stderr(&o)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    if o.stdout.len() != 16 << 20 || got != want {
        return Err(format!(
            "received {} bytes with sha256 {got}, container sent {want}",
            o.stdout.len()
        ));
    }
    // The shim announces both outputs before the process exists, so they
    // are the process's own vsock connections, not pipes the agent copies.
    let sockets = stderr(&o)
        .lines()
        .filter(|l| l.starts_with("socket:["))
        .count();
    if sockets != 2 {
        return Err(format!(
            "stdout and stderr should be the streams' sockets: {:?}",
            stderr(&o)
        ));
    }
    Ok(())
}

pub(super) fn terminal_is_a_real_tty(env: &Env) -> Result<(), String> {
    // `script` gives ctr a terminal of its own, as a user's shell would.
    let ctr = format!(
        "ctr --address {} -n hull-e2e run --rm -t --runtime {} {} {} sh -c 'tty; exit 3'",
        env.sock.display(),
        crate::env::RUNTIME,
        crate::env::IMAGE,
        env.unique("tty")
    );
    let log = env.path("tty.log");
    let o = run(Command::new("script")
        .arg("-qec")
        .arg(&ctr)
        .arg(&log)
        .stdin(Stdio::null()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    if !text.contains("/dev/pts/0") {
        return Err(format!(
            "tty inside the container printed {text:?}; {}",
            stderr(&o)
        ));
    }
    if !text.contains("COMMAND_EXIT_CODE=\"3\"") && o.status.code() != Some(3) {
        return Err(format!("exit code lost: {:?} / {text:?}", o.status.code()));
    }
    Ok(())
}

pub(super) fn kill_delivers_signals(env: &Env) -> Result<(), String> {
    // SIGTERM reaches a handler in the container; SIGKILL ends anything.
    let cases: [(&str, &[&str], Option<&str>, i32); 2] = [
        (
            "term",
            &[
                "sh",
                "-c",
                "trap 'exit 42' TERM; echo ready; while true; do sleep 0.1; done",
            ],
            None,
            42,
        ),
        (
            "kill",
            &["sh", "-c", "echo ready; exec sleep 1000"],
            Some("KILL"),
            137,
        ),
    ];
    for (name, args, signal, want) in cases {
        let id = env.unique(&format!("kill-{name}"));
        let mut child = env
            .run_cmd(&id, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        // The container's PID 1 ignores SIGTERM until its handler is
        // installed (as under runc): signal only once it says so.
        wait_for_line(&mut child, "ready")?;
        let mut kill = env.ctr();
        kill.args(["task", "kill"]);
        if let Some(s) = signal {
            kill.args(["-s", s]);
        }
        let k = run(kill.arg(&id))?;
        expect_success(&k)?;
        let o = finish(child, CMD_TIMEOUT)?;
        if o.status.code() != Some(want) {
            return Err(format!(
                "after kill {name}: ctr exited {:?}, want {want}: {}",
                o.status.code(),
                stderr(&o)
            ));
        }
    }
    Ok(())
}

pub(super) fn two_containers_run_in_two_vms(env: &Env) -> Result<(), String> {
    let script = "cat /proc/sys/kernel/random/boot_id; sleep 3";
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|n| {
            env.run_cmd(&env.unique(&format!("pair-{n}")), &["sh", "-c", script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    // Both VMs must be up at the same time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_two = false;
    while Instant::now() < deadline && !seen_two {
        seen_two = Env::processes_with(&env.state_dir.display().to_string())
            .iter()
            .filter(|p| p.contains("qemu-system"))
            .count()
            == 2;
        std::thread::sleep(Duration::from_millis(100));
    }
    let outs: Vec<_> = children
        .into_iter()
        .map(|c| finish(c, CMD_TIMEOUT))
        .collect::<Result<_, _>>()?;
    for o in &outs {
        expect_success(o)?;
    }
    if !seen_two {
        return Err("never saw two QEMU processes at once".into());
    }
    if stdout(&outs[0]).trim().is_empty() || stdout(&outs[0]) == stdout(&outs[1]) {
        return Err(format!(
            "boot ids {:?} and {:?} must differ (one kernel each)",
            stdout(&outs[0]),
            stdout(&outs[1])
        ));
    }
    Ok(())
}

pub(super) fn bad_command_fails_cleanly(env: &Env) -> Result<(), String> {
    let o = run(&mut env.run_cmd(&env.unique("nocmd"), &["/no/such/program"]))?;
    if o.status.success() {
        return Err("running a missing program succeeded".into());
    }
    if !stderr(&o).contains("/no/such/program") {
        return Err(format!("error does not name the program: {}", stderr(&o)));
    }
    // A failed create must leave no container record behind either.
    let _ = run(env
        .ctr()
        .args(["container", "delete", &env.unique("nocmd")]));
    Ok(())
}
