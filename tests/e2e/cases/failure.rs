//! When things die: QEMU or a helper killed, a frozen VM, containerd
//! restarted under a running task.

use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::env::{finish, run, Env, CMD_TIMEOUT};

/// kill -9 of QEMU or of either helper: the task is reported exited (255)
/// promptly, `ctr run --rm` returns, and the leak check finds nothing.
pub(super) fn dead_vm_or_helper_ends_the_task(env: &Env) -> Result<(), String> {
    for victim in ["qemu-system", "vhost-device-vsock", "virtiofsd"] {
        let id = env.unique(&format!(
            "dead-{}",
            victim.split('-').next().unwrap_or(victim)
        ));
        let child = run_sleeping(env, &id)?;
        let pid = vm_process(env, &id, victim)?;
        let killed = Instant::now();
        run(Command::new("kill").args(["-9", &pid]))?;
        let o = finish(child, CMD_TIMEOUT)?;
        let took = killed.elapsed();
        if o.status.code() != Some(255) {
            return Err(format!(
                "after kill -9 {victim}: ctr exited {:?}: {}",
                o.status.code(),
                stderr(&o)
            ));
        }
        if took > Duration::from_secs(5) {
            return Err(format!("after kill -9 {victim}: the exit took {took:?}"));
        }
        env.check_no_leaks()?;
    }
    Ok(())
}

/// A VM that stops answering (QEMU frozen with SIGSTOP: alive, useless)
/// fails its health checks; the shim stops it and the task ends with 255
/// instead of hanging `ctr` forever.
pub(super) fn hung_guest_is_declared_dead(env: &Env) -> Result<(), String> {
    let id = env.unique("hung");
    let child = run_sleeping(env, &id)?;
    let pid = vm_process(env, &id, "qemu-system")?;
    let frozen = Instant::now();
    run(Command::new("kill").args(["-STOP", &pid]))?;
    let o = finish(child, CMD_TIMEOUT)?;
    let took = frozen.elapsed();
    if o.status.code() != Some(255) {
        return Err(format!("ctr exited {:?}: {}", o.status.code(), stderr(&o)));
    }
    // 3 checks 5 s apart (the default), each allowed 5 s.
    if took > Duration::from_secs(45) {
        return Err(format!("the hung VM was noticed only after {took:?}"));
    }
    Ok(())
}

/// After containerd restarts it reconnects to the running task's shim
/// (through the bundle's `address`): the task is still RUNNING, can be
/// exec'd into, killed and deleted.
pub(super) fn task_survives_a_containerd_restart(env: &Env) -> Result<(), String> {
    let task = Detached::start(env, "restart", &["sleep", "1000"])?;
    env.restart_containerd()?;
    wait_status(env, &task.id, "RUNNING")?;
    let o = run(&mut task.exec("after", &[], &["sh", "-c", "echo alive"]))?;
    if stdout(&o) != "alive\n" || !o.status.success() {
        return Err(format!(
            "exec after restart: {:?} {:?} {}",
            o.status,
            stdout(&o),
            stderr(&o)
        ));
    }
    expect_success(&run(env
        .ctr()
        .args(["task", "kill", "-s", "KILL", &task.id]))?)?;
    wait_status(env, &task.id, "STOPPED")
}
