//! Process file descriptors: a handle on one process that a reused pid
//! can never be mistaken for. A VM taken from hull-cache was started by
//! another process, so the shim cannot wait for it as a child; it watches
//! and signals it through pidfds handed over with the VM instead.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// A pidfd for `pid`. Opened by the process's parent before it reaps the
/// child, it names that process and no later one.
pub fn open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Sends `signal` to the process `fd` names; nothing if it has exited.
pub fn send_signal(fd: &OwnedFd, signal: nix::sys::signal::Signal) -> std::io::Result<()> {
    // SAFETY: the descriptor is open for the call; siginfo is null and
    // flags 0, as pidfd_send_signal allows.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as i32,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `fd` is a pidfd of a live process (signal 0 checks without
/// sending anything).
pub fn is_alive(fd: &OwnedFd) -> bool {
    // SAFETY: as in send_signal, with signal 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    r == 0
}

/// Resolves when the process exits (a pidfd turns readable then).
pub async fn exited(fd: OwnedFd) -> std::io::Result<()> {
    // SAFETY: an OwnedFd keeps its one descriptor open, unchanged, until
    // the AsyncFd that owns it is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let _guard = fd.readable().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pidfd_sees_its_process_exit_and_signals_only_it() {
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap();
        let fd = open(child.id() as i32).unwrap();
        assert!(is_alive(&fd));
        let watched = fd.try_clone().unwrap();
        let waiter = tokio::spawn(exited(watched));
        send_signal(&fd, nix::sys::signal::Signal::SIGKILL).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("exit seen within 5 s")
            .unwrap()
            .unwrap();
        child.wait().unwrap();
        assert!(!is_alive(&fd), "reaped: the pidfd names no process");
        assert!(send_signal(&fd, nix::sys::signal::Signal::SIGKILL).is_err());
    }
}
