//! The debug console: with `hull.debug_console=on` (off by default) each
//! connection to vsock port [`protocols::DEBUG_CONSOLE_PORT`] gets a shell in
//! the guest, outside every container. A guest image carries a shell only
//! when built with `hull-image --debug-shell`; without one the connection is
//! told so and closed.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

/// The shell a debug connection runs.
pub const SHELL: &str = "/bin/sh";

/// Serves the console on its own thread (plain blocking vsock: one shell
/// per connection, nothing shared with the async runtime).
pub fn serve(log: slog::Logger) -> std::io::Result<()> {
    let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, protocols::DEBUG_CONSOLE_PORT);
    let listener = vsock::VsockListener::bind(&addr)?;
    slog::warn!(log, "debug console enabled"; "vsock_port" => protocols::DEBUG_CONSOLE_PORT);
    std::thread::Builder::new()
        .name("debug-console".into())
        .spawn(move || loop {
            match listener.accept() {
                Ok((conn, _)) => {
                    if let Err(e) = start_shell(conn, Path::new(SHELL), &log) {
                        slog::warn!(log, "debug console session failed"; "error" => %e);
                    }
                }
                Err(e) => {
                    slog::error!(log, "debug console accept failed"; "error" => %e);
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        })?;
    Ok(())
}

fn start_shell(
    mut conn: vsock::VsockStream,
    shell: &Path,
    log: &slog::Logger,
) -> std::io::Result<()> {
    if !shell.exists() {
        let msg = format!(
            "hull debug console: this guest image has no {} (build it with hull-image --debug-shell)\n",
            shell.display()
        );
        return conn.write_all(msg.as_bytes());
    }
    let fd = OwnedFd::from(conn);
    let child = Command::new(shell)
        .arg("-i")
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .stdin(Stdio::from(fd.try_clone()?))
        .stdout(Stdio::from(fd.try_clone()?))
        .stderr(Stdio::from(fd))
        .spawn()?;
    slog::warn!(log, "debug console session started"; "pid" => child.id());
    // The agent's reaper collects every child (waitpid(-1)); waiting here
    // would race it.
    drop(child);
    Ok(())
}
