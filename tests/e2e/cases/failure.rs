//! When things die: QEMU or a helper killed, a frozen VM, containerd
//! restarted under a running task.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::*;
use crate::env::{finish, run, Env, CMD_TIMEOUT};

/// kill -9 of QEMU or of either helper: containerd gets the task's
/// TaskExit (status 255) within 2 seconds, `ctr run --rm` returns, and the
/// leak check finds nothing. The timings are printed for the record.
pub(super) fn dead_vm_or_helper_ends_the_task(env: &Env) -> Result<(), String> {
    for victim in ["qemu-system", "vhost-device-vsock", "virtiofsd"] {
        let id = env.unique(&format!(
            "dead-{}",
            victim.split('-').next().unwrap_or(victim)
        ));
        let mut events = ctr_events(env)?;
        let outcome = kill_and_time(env, &id, victim, &mut events);
        let _ = events.kill();
        let _ = events.wait();
        let (to_event, to_return) = outcome?;
        println!(
            "    kill -9 {victim}: TaskExit after {to_event:?}, ctr returned after {to_return:?}"
        );
        if to_event > Duration::from_secs(2) {
            return Err(format!(
                "after kill -9 {victim}: TaskExit only after {to_event:?}"
            ));
        }
        env.check_no_leaks()?;
    }
    Ok(())
}

/// Kills `victim` under a sleeping task: (time to its TaskExit event, time
/// until `ctr run` returned with 255).
fn kill_and_time(
    env: &Env,
    id: &str,
    victim: &str,
    events: &mut std::process::Child,
) -> Result<(Duration, Duration), String> {
    let child = run_sleeping(env, id)?;
    let pid = vm_process(env, id, victim)?;
    let killed = Instant::now();
    run(Command::new("kill").args(["-9", &pid]))?;
    wait_for_line_where(events, "/tasks/exit", Duration::from_secs(30), |l| {
        l.contains("/tasks/exit") && l.contains(id)
    })?;
    let to_event = killed.elapsed();
    let o = finish(child, CMD_TIMEOUT)?;
    let to_return = killed.elapsed();
    if o.status.code() != Some(255) {
        return Err(format!(
            "after kill -9 {victim}: ctr exited {:?}: {}",
            o.status.code(),
            stderr(&o)
        ));
    }
    Ok((to_event, to_return))
}

/// kill -9 of the shim itself: containerd notices, runs the shim binary's
/// cleanup (`delete`), the task ends, and no VM, helper, mount or state is
/// left behind.
pub(super) fn dead_shim_leaves_nothing_behind(env: &Env) -> Result<(), String> {
    let id = env.unique("dead-shim");
    let child = run_sleeping(env, &id)?;
    kill_shim_of(env, &id, child)?;
    env.check_no_leaks()
}

/// The same with the task in a pod network namespace (`--with-ns`, as CNI
/// leaves one): the mirror rules the shim put on its interfaces go too,
/// though the shim that made them is dead.
pub(super) fn dead_shim_leaves_no_tc_rules(env: &Env) -> Result<(), String> {
    let pair = super::network::VethPair::create(env)?;
    let id = env.unique("dead-shim-net");
    let netns = format!("network:/var/run/netns/{}", pair.pod);
    let child = env
        .run_with(&id, &["--with-ns", &netns], &["sleep", "1000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    wait_running(env, &id)?;
    let wired = pair.tc_rules()?;
    if !wired.contains("ingress") {
        return Err(format!(
            "the running pod's interfaces are not wired: {wired}"
        ));
    }
    kill_shim_of(env, &id, child)?;
    let left = pair.tc_rules()?;
    if left.contains("ingress") {
        return Err(format!(
            "left in the pod namespace after the shim died:\n{left}"
        ));
    }
    env.check_no_leaks()
}

/// kill -9 of task `id`'s shim; `ctr run` (`child`) must fail, and the
/// container is deleted.
fn kill_shim_of(env: &Env, id: &str, child: std::process::Child) -> Result<(), String> {
    let shim = Env::processes_with("containerd-shim-hull-v2")
        .into_iter()
        .find(|p| p.contains(&format!("-id {id} ")))
        .and_then(|p| p.split_whitespace().next().map(str::to_string))
        .ok_or(format!("no shim process for {id}"))?;
    let killed = Instant::now();
    run(Command::new("kill").args(["-9", &shim]))?;
    let o = finish(child, CMD_TIMEOUT)?;
    println!(
        "    kill -9 shim: ctr returned after {:?} ({:?})",
        killed.elapsed(),
        o.status.code()
    );
    if o.status.success() {
        return Err("ctr run reported success for a task whose shim was killed".into());
    }
    let _ = run(env.ctr().args(["container", "delete", id]));
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

/// A task exits while containerd is down, and stays down longer than the
/// 15 s after which containerd-shim's own publisher gives up: its TaskExit
/// reaches containerd once containerd is back (a `ctr events` subscribed as
/// soon as containerd listens sees it; should the shim deliver in the few
/// milliseconds before that subscription, the shim's log line, written
/// only when containerd's Forward answered OK, shows it).
pub(super) fn an_exit_while_containerd_is_down_is_delivered(env: &Env) -> Result<(), String> {
    let task = Detached::start(env, "evdown", &["sh", "-c", "sleep 8; exit 7"])?;
    env.stop_containerd()?;
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(25));
    let log = env.path("containerd.log");
    let log_before = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let subscriber = EventSubscriber::start(env);
    env.start_containerd()?;
    let wanted = |l: &str| l.contains("/tasks/exit") && l.contains(&task.id);
    let seen = subscriber.wait_for(wanted, Duration::from_secs(15));
    let shim_lines = lines_naming(&log, log_before, &task.id);
    let logged = shim_lines.iter().any(|l| {
        l.contains("event delivered after containerd was unreachable") && l.contains("/tasks/exit")
    });
    match (seen, logged) {
        (true, _) => println!(
            "    /tasks/exit seen by ctr events after {:.0}s of containerd down",
            down.elapsed().as_secs_f64()
        ),
        (false, true) => {
            println!("    /tasks/exit delivered before ctr events subscribed (shim log)")
        }
        (false, false) => {
            return Err(format!(
                "the TaskExit made while containerd was down never arrived; the shim's lines \
                 since the restart:\n{}",
                shim_lines[shim_lines.len().saturating_sub(12)..].join("\n")
            ))
        }
    }
    wait_status(env, &task.id, "STOPPED")
}

/// The lines of containerd's log after `offset` that name `id`.
fn lines_naming(log: &std::path::Path, offset: u64, id: &str) -> Vec<String> {
    let text = std::fs::read(log).unwrap_or_default();
    let tail = String::from_utf8_lossy(text.get(offset as usize..).unwrap_or_default());
    tail.lines()
        .filter(|l| l.contains(id))
        .map(str::to_owned)
        .collect()
}

/// A shim daemon that no containerd calls (its `start` caller went away)
/// exits by itself after `timeouts.unclaimed_secs` and removes its socket;
/// one that gets SIGTERM ends at once the same way; a `start` whose daemon
/// cannot listen fails and leaves no process.
pub(super) fn shim_daemons_never_linger(env: &Env) -> Result<(), String> {
    let config = env.path("unclaimed.toml");
    let text = env
        .good_config()
        .replace("unclaimed_secs = 30", "unclaimed_secs = 3");
    if !text.contains("unclaimed_secs = 3") {
        return Err("test bug: unclaimed_secs not in the configuration".into());
    }
    std::fs::write(&config, text).map_err(|e| e.to_string())?;
    let bundle = env.path("unclaimed-bundle");
    std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
    for (name, terminate) in [("unclaimed", false), ("terminated", true)] {
        let id = env.unique(name);
        let o = run(Command::new("containerd-shim-hull-v2")
            .current_dir(&bundle)
            .args(["-namespace", "hull-e2e", "-id", &id, "-address"])
            .arg(&env.sock)
            .arg("start")
            .env("HULL_CONFIG", &config)
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", env.sock.display())))?;
        expect_success(&o)?;
        let address = stdout(&o);
        let socket = std::path::PathBuf::from(address.trim_start_matches("unix://"));
        let daemon = Env::processes_with(&format!("-id {id} "))
            .into_iter()
            .find(|p| p.contains("-socket"))
            .and_then(|p| p.split_whitespace().next().map(str::to_string))
            .ok_or(format!("no daemon for {address}"))?;
        if !socket.exists() {
            return Err(format!("{name}: no socket at {}", socket.display()));
        }
        let started = Instant::now();
        if terminate {
            run(Command::new("kill").args(["-TERM", &daemon]))?;
        } else {
            std::thread::sleep(Duration::from_secs(1));
            if !Path::new(&format!("/proc/{daemon}")).exists() {
                return Err("the daemon exited before its wait was over".into());
            }
        }
        while Path::new(&format!("/proc/{daemon}")).exists() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("{name}: the daemon {daemon} is still running"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if socket.exists() {
            return Err(format!("{name}: its socket {} is left", socket.display()));
        }
        println!(
            "    {name}: gone after {:.1}s",
            started.elapsed().as_secs_f64()
        );
        if terminate {
            failed_start_leaves_nothing(env, &config, &bundle, &id, &socket)?;
        }
    }
    Ok(())
}

/// `start` again for `id`, with a directory where its socket goes: the
/// daemon cannot listen, so `start` fails, and no process is left.
fn failed_start_leaves_nothing(
    env: &Env,
    config: &Path,
    bundle: &Path,
    id: &str,
    socket: &Path,
) -> Result<(), String> {
    std::fs::create_dir_all(socket).map_err(|e| e.to_string())?;
    let o = run(Command::new("containerd-shim-hull-v2")
        .current_dir(bundle)
        .args(["-namespace", "hull-e2e", "-id", id, "-address"])
        .arg(&env.sock)
        .arg("start")
        .env("HULL_CONFIG", config)
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", env.sock.display())));
    let left = Env::processes_with(&format!("-id {id} "));
    let _ = std::fs::remove_dir(socket);
    let o = o?;
    if o.status.success() || !left.is_empty() {
        return Err(format!(
            "a start that cannot listen: {:?} {}, left {left:?}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    println!(
        "    failed start: {}",
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(())
}
