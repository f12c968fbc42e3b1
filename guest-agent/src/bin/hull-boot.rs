//! hull-boot: `/init` of the boot initrd of a rootfs image. It does what
//! the agent's own image boot does (`root_image`: the device's modules,
//! dm-verity, erofs, the switch to the image and the exec of its
//! `/sbin/init`) without the agent's 10 MB: the initrd is unpacked into
//! guest memory, so every byte of it costs each VM until it is freed.

// PID 1 must never panic on a path the host can reach.
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::unwrap_used)
)]

// Shared with the agent, which uses more of them than this boot does.
#[allow(dead_code)]
#[path = "../boot_steps.rs"]
mod boot_steps;
#[allow(dead_code)]
#[path = "../dm.rs"]
mod dm;
#[allow(dead_code)]
#[path = "../modules.rs"]
mod modules;
#[allow(dead_code)]
#[path = "../root_image.rs"]
mod root_image;

use nix::mount::MsFlags;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let error = boot(&args);
    eprintln!("hull-boot: {error}");
    power_off();
}

/// Mounts /proc, reads what to boot and boots it; returns only on failure.
fn boot(args: &[String]) -> Box<dyn std::error::Error> {
    if let Err(e) = nix::mount::mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        return format!("mount /proc: {e}").into();
    }
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(c) => c,
        Err(e) => return format!("read /proc/cmdline: {e}").into(),
    };
    match root_image::requested(&cmdline) {
        None => {
            "no hull.root= on the kernel command line: this initrd only boots a rootfs image".into()
        }
        Some(Err(e)) => e.into(),
        Some(Ok(image)) => root_image::boot(&image, args).into(),
    }
}

/// PID 1 cannot exit (the kernel would panic): the VM powers off, and the
/// shim reports the console's last lines, this error among them.
fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF);
    loop {
        std::thread::park();
    }
}
