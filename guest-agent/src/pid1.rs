//! Duties of the agent as the VM's PID 1: the base filesystems, kernel
//! modules, and an orderly power-off instead of a kernel panic on exit.

use std::path::Path;

use nix::mount::MsFlags;

#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("mkdir {path}: {source}")]
    Mkdir {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Modules(#[from] crate::modules::ModulesError),
}

struct BaseMount {
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

const fn base(
    fstype: &'static str,
    target: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
) -> BaseMount {
    BaseMount {
        fstype,
        target,
        flags,
        data,
    }
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

const BASE_MOUNTS: &[BaseMount] = &[
    base("sysfs", "/sys", NOSUID_NODEV_NOEXEC, None),
    base("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
    base(
        "devpts",
        "/dev/pts",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        Some("newinstance,ptmxmode=0666,mode=0620"),
    ),
    base(
        "tmpfs",
        "/dev/shm",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        Some("mode=1777"),
    ),
    base(
        "tmpfs",
        "/run",
        MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        Some("mode=0755"),
    ),
    base("cgroup2", "/sys/fs/cgroup", NOSUID_NODEV_NOEXEC, None),
];

const PROC: BaseMount = base("proc", "/proc", NOSUID_NODEV_NOEXEC, None);

fn mount_base(m: &BaseMount) -> Result<(), Pid1Error> {
    std::fs::create_dir_all(m.target).map_err(|source| Pid1Error::Mkdir {
        path: m.target,
        source,
    })?;
    match nix::mount::mount(Some(m.fstype), m.target, Some(m.fstype), m.flags, m.data) {
        Ok(()) | Err(nix::Error::EBUSY) => Ok(()),
        Err(source) => Err(Pid1Error::Mount {
            fstype: m.fstype,
            target: m.target,
            source,
        }),
    }
}

/// Mounts /proc, which the configuration (the kernel command line) needs
/// before anything else runs.
pub fn mount_proc() -> Result<(), Pid1Error> {
    mount_base(&PROC)
}

pub fn setup(log: &slog::Logger) -> Result<(), Pid1Error> {
    for m in BASE_MOUNTS {
        mount_base(m)?;
    }
    enable_cgroup_controllers(log);
    crate::boot_steps::mark("mounts");
    Ok(crate::modules::load_from_image(log)?)
}

/// Lets child cgroups use every controller the kernel offers.
fn enable_cgroup_controllers(log: &slog::Logger) {
    let root = Path::new("/sys/fs/cgroup");
    let Ok(available) = std::fs::read_to_string(root.join("cgroup.controllers")) else {
        return;
    };
    let enable: Vec<String> = available
        .split_whitespace()
        .map(|c| format!("+{c}"))
        .collect();
    if let Err(e) = std::fs::write(root.join("cgroup.subtree_control"), enable.join(" ")) {
        slog::warn!(log, "cannot enable cgroup controllers"; "error" => %e);
    }
}

/// Logs a panic and, as PID 1, powers the VM off instead of letting the
/// kernel panic or the VM hang.
pub fn install_panic_hook(log: slog::Logger, is_pid1: bool) {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        slog::crit!(log, "agent panicked"; "panic" => %info);
        if is_pid1 {
            power_off();
        }
        default(info);
    }));
}

/// Ends the agent: as PID 1 by powering off (exiting would panic the kernel).
pub fn exit(code: i32) -> ! {
    if std::process::id() == 1 {
        power_off();
    }
    std::process::exit(code)
}

fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    // reboot(2) does not return on success; if it failed, there is nothing
    // left to do but wait for the host to end the VM.
    loop {
        std::thread::park();
    }
}
