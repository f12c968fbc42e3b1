//! One function per command: arguments in, rustjail call, output out.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use rustjail::container::{Created, InitCommand, InitStdio};
use rustjail::lifecycle::{self, Attach, Jail};

use crate::cli::{Cli, Command, CreateArgs, ExecArgs, Format};
use crate::output::{self, Log, StateJson};

pub type Error = Box<dyn std::error::Error>;

fn jail(cli: &Cli) -> Jail {
    let init = InitCommand {
        binary: PathBuf::from("/proc/self/exe"),
        args: vec!["init".into()],
    };
    Jail::new(&cli.root, init)
}

/// Runs the command; the process's exit code.
pub fn run(cli: &Cli, log: &Log) -> Result<i32, Error> {
    if cli.systemd_cgroup {
        return Err("--systemd-cgroup is not supported: hull-jail manages cgroupfs itself".into());
    }
    let jail = jail(cli);
    let done = |r: Result<(), Error>| r.map(|()| 0);
    match &cli.command {
        Command::Create(a) => done(create(&jail, a)),
        Command::Start { id } => done(jail.start(id).map(|w| warn_all(log, w)).map_err(Into::into)),
        Command::Run {
            create,
            detach,
            keep,
        } => run_container(&jail, log, create, *detach, *keep),
        Command::Exec(a) => exec(&jail, a),
        Command::State { id } => done(state(&jail, id)),
        Command::Kill { all, id, signal } => done(
            jail.kill(id, parse_signal(signal)?, *all)
                .map_err(Into::into),
        ),
        Command::Delete { force, id } => done(delete(&jail, log, id, *force)),
        Command::List { format, quiet } => done(list(&jail, *format, *quiet)),
        Command::Ps {
            format,
            id,
            ps_args,
        } => done(ps(&jail, *format, id, ps_args)),
        Command::Pause { id } => done(jail.pause(id).map_err(Into::into)),
        Command::Resume { id } => done(jail.resume(id).map_err(Into::into)),
        Command::Spec { bundle, .. } => done(spec(bundle)),
        Command::Features => {
            println!("{:#}", rustjail::features::document());
            Ok(0)
        }
    }
}

fn warn_all(log: &Log, warnings: Vec<String>) {
    for w in warnings {
        log.warn(&w);
    }
}

/// This process's own stdio, for the container process.
fn inherited_stdio() -> Result<InitStdio, Error> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned();
    Ok(InitStdio {
        stdin: dup(std::io::stdin().as_fd())?,
        stdout: dup(std::io::stdout().as_fd())?,
        stderr: dup(std::io::stderr().as_fd())?,
    })
}

fn attach(console_socket: &Option<PathBuf>) -> Result<Attach, Error> {
    Ok(Attach {
        stdio: inherited_stdio()?,
        console_socket: console_socket.clone(),
    })
}

/// runc writes the pid with no newline, through a rename.
fn write_pid_file(path: &Option<PathBuf>, pid: i32) -> Result<(), Error> {
    let Some(path) = path else { return Ok(()) };
    let tmp = path.with_extension("tmp-hull-jail");
    std::fs::write(&tmp, pid.to_string())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn create(jail: &Jail, a: &CreateArgs) -> Result<(), Error> {
    let pid = jail.create_detached(&a.id, &a.bundle, attach(&a.console_socket)?)?;
    write_pid_file(&a.pid_file, pid.as_raw())
}

/// Starts `created`, relaying its terminal if it has one nobody took,
/// runs `after_start`, and waits for it unless `detach`: its exit code.
fn start_and_wait(
    mut created: Created,
    detach: bool,
    after_start: impl FnOnce(),
) -> Result<Option<i32>, Error> {
    let relay = match created.console.take() {
        Some(master) if !detach => Some(rustjail::console::relay(master)?),
        _ => None,
    };
    let pid = created.pid;
    created.start()?;
    after_start();
    if detach {
        return Ok(None);
    }
    lifecycle::forward_signals(pid);
    let code = lifecycle::wait_exit(pid)?;
    if let Some(r) = relay {
        let _ = r.join();
    }
    Ok(Some(code))
}

fn run_container(
    jail: &Jail,
    log: &Log,
    a: &CreateArgs,
    detach: bool,
    keep: bool,
) -> Result<i32, Error> {
    lifecycle::become_subreaper()?;
    if !detach {
        lifecycle::block_forwarded_signals()?;
    }
    let created = jail.create_attached(&a.id, &a.bundle, attach(&a.console_socket)?)?;
    write_pid_file(&a.pid_file, created.pid.as_raw())?;
    let record = jail.root.load(&a.id)?;
    let started = start_and_wait(created, detach, || warn_all(log, jail.poststart(&record)));
    let code = match started {
        Ok(code) => code,
        Err(e) => {
            let _ = jail.delete(&a.id, true);
            return Err(e);
        }
    };
    if detach || keep {
        return Ok(code.unwrap_or(0));
    }
    warn_all(log, jail.delete(&a.id, true)?);
    Ok(code.unwrap_or(0))
}

/// The exec'd process: `--process`, or the container's own process with
/// the command line's changes (as runc builds it).
fn exec_process(jail: &Jail, a: &ExecArgs) -> Result<oci_spec::runtime::Process, Error> {
    if let Some(path) = &a.process {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--process {}: {e}", path.display()))?;
        return serde_json::from_str(&text)
            .map_err(|e| format!("--process {}: {e}", path.display()).into());
    }
    if a.command.is_empty() {
        return Err("exec: give a command or --process".into());
    }
    let record = jail.root.load(&a.id)?;
    let mut p = record.spec.process().clone().unwrap_or_default();
    p.set_args(Some(a.command.clone()));
    p.set_terminal(Some(a.tty));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(a.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &a.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(u) = &a.user {
        let (uid, gid) = rustjail::users::resolve(&jail.container_root(&record), u)?;
        let mut user = p.user().clone();
        user.set_uid(uid);
        user.set_gid(gid);
        p.set_user(user);
    }
    if !a.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(a.additional_gids.clone()));
        p.set_user(user);
    }
    if !a.cap.is_empty() {
        add_caps(&mut p, &a.cap)?;
    }
    if a.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn add_caps(p: &mut oci_spec::runtime::Process, names: &[String]) -> Result<(), Error> {
    use oci_spec::runtime::Capability;
    let mut caps = p.capabilities().clone().unwrap_or_default();
    for name in names {
        let cap: Capability = name
            .parse()
            .map_err(|_| format!("--cap {name}: unknown capability"))?;
        let add = |s: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = s.clone().unwrap_or_default();
            s.insert(cap);
            Some(s)
        };
        caps.set_bounding(add(caps.bounding()));
        caps.set_effective(add(caps.effective()));
        caps.set_permitted(add(caps.permitted()));
    }
    p.set_capabilities(Some(caps));
    Ok(())
}

fn exec(jail: &Jail, a: &ExecArgs) -> Result<i32, Error> {
    let process = exec_process(jail, a)?;
    if !a.detach {
        lifecycle::become_subreaper()?;
        lifecycle::block_forwarded_signals()?;
    }
    let created = jail.exec(&a.id, process, attach(&a.console_socket)?)?;
    write_pid_file(&a.pid_file, created.pid.as_raw())?;
    let code = start_and_wait(created, a.detach, || {})?;
    Ok(code.unwrap_or(0))
}

fn state(jail: &Jail, id: &str) -> Result<(), Error> {
    let record = jail.root.load(id)?;
    let json = StateJson::new(&record, jail.status(&record));
    println!("{}", serde_json::to_string_pretty(&json)?);
    Ok(())
}

fn delete(jail: &Jail, log: &Log, id: &str, force: bool) -> Result<(), Error> {
    match jail.delete(id, force) {
        Ok(w) => {
            warn_all(log, w);
            Ok(())
        }
        // runc: deleting a missing container with --force is not an error.
        Err(lifecycle::JailError::State(rustjail::state::StateError::NotFound(_))) if force => {
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

fn list(jail: &Jail, format: Format, quiet: bool) -> Result<(), Error> {
    let records = jail.root.list()?;
    if quiet {
        records.iter().for_each(|r| println!("{}", r.id));
        return Ok(());
    }
    let states: Vec<_> = records
        .iter()
        .map(|r| StateJson::new(r, jail.status(r)))
        .collect();
    match format {
        Format::Json => println!("{}", serde_json::to_string(&states)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = states
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.pid.to_string(),
                        s.status.to_string(),
                        s.bundle.display().to_string(),
                        s.created.to_string(),
                        s.owner.to_string(),
                    ]
                })
                .collect();
            let header = ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"];
            print!("{}", output::table(&header, &rows));
        }
    }
    Ok(())
}

fn ps(jail: &Jail, format: Format, id: &str, ps_args: &[String]) -> Result<(), Error> {
    let record = jail.root.load(id)?;
    let pids = jail.pids(&record);
    if format == Format::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps").args(&args).output()?;
    if !out.status.success() {
        return Err(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or("ps output has no PID column")?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

fn spec(bundle: &Path) -> Result<(), Error> {
    let path = bundle.join("config.json");
    if path.exists() {
        return Err(format!("{} already exists; remove it first", path.display()).into());
    }
    let spec = oci_spec::runtime::Spec::default();
    std::fs::write(&path, serde_json::to_string_pretty(&spec)?)?;
    Ok(())
}

/// `KILL`, `SIGKILL` or `9`, as runc takes them.
pub fn parse_signal(s: &str) -> Result<Signal, Error> {
    if let Ok(n) = s.parse::<i32>() {
        return Signal::try_from(n).map_err(|_| format!("unknown signal {s:?}").into());
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<Signal>()
        .map_err(|_| format!("unknown signal {s:?}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("NOPE")
            .unwrap_err()
            .to_string()
            .contains("NOPE"));
    }
}
