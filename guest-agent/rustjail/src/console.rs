//! The container's terminal, created inside the container (its own devpts)
//! so `tty` and `/dev/console` are right, as runc does. The master goes to
//! the runtime over the channel; the slave becomes stdio and the
//! controlling terminal.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use oci_spec::runtime::Box as ConsoleSize;

#[derive(Debug, thiserror::Error)]
#[error("console: {op}: {source}")]
pub struct ConsoleError {
    op: &'static str,
    #[source]
    source: nix::Error,
}

fn err(op: &'static str) -> impl FnOnce(nix::Error) -> ConsoleError {
    move |source| ConsoleError { op, source }
}

/// Opens a pty in the current /dev/pts, makes its slave this process's
/// stdio and controlling terminal, and returns the master.
pub fn create(size: Option<&ConsoleSize>) -> Result<OwnedFd, ConsoleError> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(err("open /dev/ptmx"))?;
    grantpt(&master).map_err(err("grantpt"))?;
    unlockpt(&master).map_err(err("unlockpt"))?;
    let name = ptsname_r(&master).map_err(err("ptsname"))?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(err("open pty slave"))?;
    if let Some(s) = size {
        let ws = libc::winsize {
            ws_row: s.height() as u16,
            ws_col: s.width() as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize from a pointer valid for the call.
        if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
            return Err(err("set window size")(nix::Error::last()));
        }
    }
    // Bind the slave on /dev/console when the rootfs has one to bind on.
    if std::path::Path::new("/dev/console").exists() {
        let _ = nix::mount::mount(
            Some(name.as_str()),
            "/dev/console",
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    for target in 0..=2 {
        // SAFETY: fds 0-2 are this process's stdio, which the slave replaces;
        // nothing in this single-threaded init holds them as OwnedFds.
        let fd = unsafe { nix::unistd::dup2_raw(&slave, target) }.map_err(err("dup2 pty slave"))?;
        // The stdio fd must stay open for the user program: give up ownership.
        let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
    }
    drop(slave);
    // SAFETY: TIOCSCTTY on fd 0, now the slave; this process leads its session.
    if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
        return Err(err("TIOCSCTTY")(nix::Error::last()));
    }
    Ok(master.into())
}

/// Hands the terminal's master to whoever listens on `socket` (runc's
/// `--console-socket` protocol: one message, the fd as SCM_RIGHTS and the
/// terminal's name as data).
pub fn send_to_socket(
    socket: &std::path::Path,
    master: std::os::fd::BorrowedFd<'_>,
) -> std::io::Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int through the pointer, which
    // points at `number`.
    let name = match unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number) } {
        0 => format!("/dev/pts/{number}"),
        _ => "/dev/ptmx".to_string(),
    };
    crate::channel::send_fd_with(std::os::fd::AsFd::as_fd(&stream), master, name.as_bytes())
}

/// Relays between this process's stdio and a terminal's master, for a
/// foreground container with a terminal and no console socket. The
/// returned thread ends when the terminal closes (every process holding
/// its slave has exited); the input side ends with this process.
pub fn relay(master: OwnedFd) -> std::io::Result<std::thread::JoinHandle<()>> {
    let input = std::fs::File::from(master.try_clone()?);
    std::thread::spawn(move || {
        let mut input = input;
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
    });
    Ok(std::thread::spawn(move || {
        let mut output = std::fs::File::from(master);
        // EIO once the slave side is closed: that is the end.
        let _ = std::io::copy(&mut output, &mut std::io::stdout().lock());
    }))
}
