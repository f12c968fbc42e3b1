//! A keeper: the process that boots one pool VM and owns it. QEMU and the
//! helpers are its children and die with it (PDEATHSIG, as under a shim).
//! It reports the booted VM on its socket (descriptor 3), then waits for
//! that socket to close, held by the service while the VM waits and by
//! the shim that took it afterwards, and ends the VM then. A VM that dies
//! first is reported (`Died`) and cleaned up.

use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use super::wire;
use super::{KeeperReport, VmInfo, HOTPLUG_SLOTS};
use crate::config::HullConfig;
use crate::share::Share;
use crate::vm::{BootPlan, Vm, VmPaths};

/// The descriptor number of the keeper's socket.
pub const SOCKET_FD: i32 = 3;

/// How long a VM gets to exit after SIGTERM when its owner lets go.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The VM name of `dir` when it is one name in `cache.pool_dir`.
pub fn name_in_pool(cfg: &HullConfig, dir: &std::path::Path) -> Option<String> {
    let name = dir.file_name()?.to_str()?;
    let plain = !name.is_empty() && !name.starts_with('.') && !name.contains('/');
    (plain && dir.parent()? == cfg.cache.pool_dir).then(|| name.to_string())
}

/// Runs the keeper of the pool VM `name`; its exit code.
pub async fn run(cfg: HullConfig, name: String, log: slog::Logger) -> i32 {
    // SAFETY: the service starts a keeper with its socket at SOCKET_FD and
    // nothing else owns that descriptor in this process.
    let socket = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    let paths = VmPaths::in_dir(cfg.cache.pool_dir.join(&name));
    let code = match boot(&cfg, &name, &paths, &log).await {
        Ok(vm) => {
            let cid = crate::vm::kernel_vsock_cid(&cfg, &name);
            let code = serve(&vm, &name, cid, socket, &log).await;
            vm.stop(STOP_GRACE).await;
            code
        }
        Err(reason) => {
            slog::warn!(log, "pool VM did not boot"; "vm" => &name, "reason" => &reason);
            report(socket.as_fd(), &KeeperReport::Died { reason }, &[]);
            1
        }
    };
    // A VM that was taken has its directory moved into a shim's state
    // directory: this path is gone, and nothing of the shim's is touched.
    if paths.dir.exists() {
        if let Err(e) = Share::remove_at(&paths) {
            slog::warn!(log, "pool VM directory not removed"; "vm" => &name, "error" => %e);
        }
    }
    code
}

/// Boots the VM with its share and hot-plug slots, and waits for its agent.
async fn boot(
    cfg: &HullConfig,
    name: &str,
    paths: &VmPaths,
    log: &slog::Logger,
) -> Result<Vm, String> {
    Share::create(paths).map_err(|e| e.to_string())?;
    let plan = BootPlan {
        name,
        paths: paths.clone(),
        network: None,
        hotplug_slots: HOTPLUG_SLOTS,
    };
    let mut vm = Vm::boot(cfg, plan, log).await.map_err(|e| e.to_string())?;
    if let Err(e) = vm.connect_agent(cfg).await {
        vm.stop(STOP_GRACE).await;
        return Err(e.to_string());
    }
    Ok(vm)
}

/// Reports the VM ready, then holds it until the socket closes (its owner
/// let go, or died) or the VM dies.
async fn serve(
    vm: &Vm,
    name: &str,
    vsock_cid: Option<u32>,
    socket: OwnedFd,
    log: &slog::Logger,
) -> i32 {
    let processes = match vm.handover_processes() {
        Ok(p) => p,
        Err(e) => {
            report(
                socket.as_fd(),
                &KeeperReport::Died {
                    reason: e.to_string(),
                },
                &[],
            );
            return 1;
        }
    };
    let info = VmInfo {
        name: name.to_string(),
        accel: vm.accel.accel.qemu_name().to_string(),
        accel_reason: vm.accel.reason.clone(),
        vsock_cid,
        processes: processes.iter().map(|p| (p.name.clone(), p.pid)).collect(),
    };
    let fds: Vec<BorrowedFd> = processes.iter().map(|p| p.pidfd.as_fd()).collect();
    if !report(socket.as_fd(), &KeeperReport::Ready(info), &fds) {
        return 1;
    }
    drop(processes);
    let socket = match wire::register(socket) {
        Ok(s) => s,
        Err(e) => {
            slog::warn!(log, "keeper socket"; "vm" => name, "error" => %e);
            return 1;
        }
    };
    let mut died = vm.died.clone();
    tokio::select! {
        // Nothing is ever sent to a keeper: readable means closed.
        _ = socket.readable() => {
            slog::info!(log, "pool VM released by its owner"; "vm" => name);
            0
        }
        _ = died.wait_for(|d| d.is_some()) => {
            let reason = vm.death().unwrap_or_default();
            if vm.paths.dir.exists() {
                slog::warn!(log, "pool VM died while waiting"; "vm" => name, "reason" => &reason);
            } else {
                // Taken: its shim ended it (or saw it die, and reports it).
                slog::info!(log, "taken VM ended"; "vm" => name, "reason" => &reason);
            }
            report(socket.get_ref().as_fd(), &KeeperReport::Died { reason }, &[]);
            1
        }
    }
}

/// Sends `msg`; whether it went (a closed socket is no error here: the
/// owner is gone, and the VM ends anyway).
fn report(socket: BorrowedFd, msg: &KeeperReport, fds: &[BorrowedFd]) -> bool {
    wire::send(socket, msg, fds).is_ok()
}
