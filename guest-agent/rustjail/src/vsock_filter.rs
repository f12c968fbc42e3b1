//! A seccomp filter that keeps a container's processes off AF_VSOCK. In a
//! Hull guest, vsock is the line to the host (the shim's listeners at CID
//! 2): only the agent may use it. Written as BPF by hand, because it must
//! answer every architecture the guest kernel runs (seccompiler's filters
//! kill any other), and it is stacked on whatever profile the container
//! has: the kernel takes the most restrictive answer, so no profile's
//! allow can undo it.
//!
//! - x86_64 and x32: `socket(AF_VSOCK, ...)` fails with EAFNOSUPPORT;
//! - i386: `socket(AF_VSOCK, ...)` likewise, and `socketcall(SYS_SOCKET)`,
//!   whose domain the filter cannot read (it is behind a pointer), fails
//!   the same way: 32-bit programs that make sockets through socketcall
//!   get none;
//! - everything else is allowed.

use seccompiler::{sock_filter, BpfProgram};

use crate::seccomp::Compiled;

const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
const NR_SOCKET_X86_64: u32 = 41;
const NR_SOCKET_I386: u32 = 359;
const NR_SOCKETCALL_I386: u32 = 102;
const SYS_SOCKET: u32 = 1;
const AF_VSOCK: u32 = libc::AF_VSOCK as u32;

// struct seccomp_data: nr, arch, instruction_pointer, args[6].
const OFFSET_NR: u32 = 0;
const OFFSET_ARCH: u32 = 4;
const OFFSET_ARG0: u32 = 16;

const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const RET: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jeq(k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: JEQ,
        jt,
        jf,
        k,
    }
}

/// The program. Jump offsets count instructions after the jump.
pub fn program() -> BpfProgram {
    let allow = || stmt(RET, libc::SECCOMP_RET_ALLOW);
    let deny = stmt(RET, libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32);
    vec![
        /* 0 */ stmt(LD_ABS, OFFSET_ARCH),
        /* 1 */ jeq(AUDIT_ARCH_X86_64, 2, 0), // -> 4
        /* 2 */ jeq(AUDIT_ARCH_I386, 5, 0), // -> 8
        /* 3 */ allow(),
        /* 4 */ stmt(LD_ABS, OFFSET_NR),
        /* 5 */ jeq(NR_SOCKET_X86_64, 8, 0), // -> 14
        /* 6 */ jeq(X32_SYSCALL_BIT | NR_SOCKET_X86_64, 7, 0), // -> 14
        /* 7 */ allow(),
        /* 8 */ stmt(LD_ABS, OFFSET_NR),
        /* 9 */ jeq(NR_SOCKET_I386, 4, 0), // -> 14
        /* 10 */ jeq(NR_SOCKETCALL_I386, 1, 0), // -> 12
        /* 11 */ allow(),
        /* 12 */ stmt(LD_ABS, OFFSET_ARG0), // socketcall's call number
        /* 13 */ jeq(SYS_SOCKET, 3, 2), // -> 17 deny, else 16 allow
        /* 14 */ stmt(LD_ABS, OFFSET_ARG0), // socket's domain
        /* 15 */ jeq(AF_VSOCK, 1, 0), // -> 17 deny
        /* 16 */ allow(),
        /* 17 */ deny,
    ]
}

/// The filter, ready to install (needs no_new_privs or CAP_SYS_ADMIN).
pub fn compiled() -> Compiled {
    Compiled {
        filters: vec![program()],
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every jump lands inside the program, and every path ends in a return.
    #[test]
    fn jumps_stay_inside_the_program() {
        let p = program();
        for (i, ins) in p.iter().enumerate() {
            if ins.code == JEQ {
                for off in [ins.jt, ins.jf] {
                    assert!(i + 1 + (off as usize) < p.len(), "instruction {i}");
                }
            }
        }
        assert_eq!(p.last().map(|i| i.code), Some(RET));
    }

    /// In a forked child (the filter is for life): AF_VSOCK is refused with
    /// EAFNOSUPPORT, other families still work.
    #[test]
    fn vsock_sockets_are_refused_and_others_are_not() {
        // SAFETY: the child only makes syscalls and exits; it touches no
        // state shared with the test harness's threads.
        match unsafe { libc::fork() } {
            0 => {
                // The control: without the filter this host makes vsock
                // sockets, so a refusal below is the filter's doing.
                // SAFETY: socket(2) with constant arguments.
                let before = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
                // SAFETY: prctl with constant arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = match compiled().install() {
                    _ if before < 0 => 14,
                    Err(_) => 10,
                    Ok(()) => {
                        // SAFETY: socket(2) with constant arguments.
                        let vsock = unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) };
                        let errno = std::io::Error::last_os_error().raw_os_error();
                        // SAFETY: as above.
                        let unix = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
                        match (vsock, errno, unix >= 0) {
                            (-1, Some(libc::EAFNOSUPPORT), true) => 0,
                            (-1, _, true) => 11,
                            (_, _, true) => 12,
                            _ => 13,
                        }
                    }
                };
                // SAFETY: ends the child without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                assert!(libc::WIFEXITED(status), "status {status}");
                assert_eq!(libc::WEXITSTATUS(status), 0, "10 install, 11 errno, 12 vsock allowed, 13 unix refused, 14 no vsock before the filter");
            }
            _ => panic!("fork failed"),
        }
    }
}
