//! Bringing up `lo` in a new network namespace. On a host CNI's loopback
//! plugin does it; in a VM there is no CNI, so the runtime must.

use std::os::fd::AsRawFd;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

#[derive(Debug, thiserror::Error)]
#[error("bring up the loopback interface: {op}: {source}")]
pub struct LoopbackError {
    op: &'static str,
    #[source]
    source: nix::Error,
}

/// Sets IFF_UP on `lo` in the calling thread's network namespace.
pub fn bring_up() -> Result<(), LoopbackError> {
    let fail = |op| move |source| LoopbackError { op, source };
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(fail("socket"))?;
    // SAFETY: ifreq is plain data for which all zero bytes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into
    // `req`, which lives across the call; the fd is an open socket.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) };
    nix::errno::Errno::result(rc).map_err(fail("SIOCGIFFLAGS"))?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) };
    nix::errno::Errno::result(rc).map_err(fail("SIOCSIFFLAGS"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_comes_up_in_a_new_network_namespace() {
        // A forked child, so the test process keeps its namespace (root, as
        // CI runs).
        // SAFETY: the child only makes syscalls and exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok()
                    && super::bring_up().is_ok()
                    && std::fs::read_to_string("/sys/class/net/lo/operstate").is_ok()
                    && std::net::TcpListener::bind("127.0.0.1:0")
                        .and_then(|l| std::net::TcpStream::connect(l.local_addr()?))
                        .is_ok();
                // SAFETY: exiting the forked child without running the
                // parent's destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
