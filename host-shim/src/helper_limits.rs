//! What the VM's helper processes (QEMU, virtiofsd, vhost-device-vsock) may
//! not do to host files on the guest's behalf.
//!
//! QEMU (9p) and virtiofsd run as root and carry out the guest's file
//! requests on host directories: the container's rootfs and the volumes'
//! own host directories, which host users may reach. A guest that owns its
//! kernel could have them leave privileged files there: a setuid or setgid
//! program, a device node, a program with file capabilities, or a setuid
//! program whose contents it replaced (root keeps the bit on write while it
//! holds CAP_FSETID). Mounts cannot help: the volume's host directory is
//! the user's, with whatever mount options it has.
//!
//! So each helper is started without CAP_MKNOD, CAP_SETFCAP and CAP_FSETID
//! (dropped from the bounding set, which a root exec cannot regain, and from
//! the inheritable and ambient sets, which it could), and under a seccomp
//! filter that refuses with EPERM every call that would set the setuid or
//! setgid bit: chmod and its variants, and file creation with those bits in
//! the mode. The kernel then clears both bits whenever a helper writes to
//! or changes the owner of such a file, and the guest sees EPERM for the
//! rest. `shared_fs.allow_setuid_files` turns off the filter and keeps
//! CAP_FSETID, for guests that must install setuid programs (a `dpkg` of
//! `sudo` in a container's rootfs).

use capctl::{Cap, CapState};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum HelperLimitsError {
    #[error("build the helpers' seccomp filter: {0}")]
    Filter(#[from] seccompiler::BackendError),
    #[error("compile the helpers' seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// fchmodat2 (Linux 6.6), the same number on every architecture; the libc
/// crate may not name it yet.
const SYS_FCHMODAT2: i64 = 452;

/// The bits that give a program its owner's or group's privilege.
const PRIVILEGE_BITS: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];

/// Open flags that create a file (and so take a mode).
const CREATING_FLAGS: [u64; 2] = [libc::O_CREAT as u64, libc::O_TMPFILE as u64];

/// Limits for the helpers of one VM, prepared before any is spawned.
pub struct HelperLimits {
    /// None when setuid files are allowed.
    filter: Option<BpfProgram>,
    dropped: &'static [Cap],
}

const DROPPED_ALWAYS: &[Cap] = &[Cap::MKNOD, Cap::SETFCAP];
const DROPPED_STRICT: &[Cap] = &[Cap::MKNOD, Cap::SETFCAP, Cap::FSETID];

impl HelperLimits {
    pub fn new(allow_setuid_files: bool) -> Result<Self, HelperLimitsError> {
        if allow_setuid_files {
            return Ok(HelperLimits {
                filter: None,
                dropped: DROPPED_ALWAYS,
            });
        }
        Ok(HelperLimits {
            filter: Some(privilege_bit_filter()?),
            dropped: DROPPED_STRICT,
        })
    }

    /// The capabilities a helper starts without.
    pub fn dropped_capabilities(&self) -> &'static [Cap] {
        self.dropped
    }

    /// Applies the limits to the calling process: meant for the child
    /// between fork and exec. Only prctl, capget/capset and seccomp calls,
    /// no allocation, so it is async-signal-safe.
    pub fn apply_to_self(&self) -> std::io::Result<()> {
        let os = |e: capctl::Error| std::io::Error::from_raw_os_error(e.code());
        for cap in self.dropped {
            capctl::bounding::drop(*cap).map_err(os)?;
        }
        capctl::ambient::clear().map_err(os)?;
        let mut state = CapState::get_current().map_err(os)?;
        for cap in self.dropped {
            state.inheritable.drop(*cap);
            state.effective.drop(*cap);
            state.permitted.drop(*cap);
        }
        state.set_current().map_err(os)?;
        if let Some(filter) = &self.filter {
            seccompiler::apply_filter(filter).map_err(|e| match e {
                seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => e,
                _ => std::io::Error::from_raw_os_error(libc::EINVAL),
            })?;
        }
        Ok(())
    }
}

/// `arg` has `bit` set.
fn has_bit(arg: u8, bit: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(bit),
        bit,
    )
}

/// Rules matching a mode argument `mode` with a privilege bit set.
fn privileged_mode(mode: u8) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    PRIVILEGE_BITS
        .iter()
        .map(|bit| SeccompRule::new(vec![has_bit(mode, *bit)?]))
        .collect()
}

/// Rules matching an open that creates (flags in `flags`) with a privilege
/// bit in its mode (`mode`).
fn privileged_create(flags: u8, mode: u8) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    let mut rules = Vec::new();
    for flag in CREATING_FLAGS {
        for bit in PRIVILEGE_BITS {
            rules.push(SeccompRule::new(vec![
                has_bit(flags, flag)?,
                has_bit(mode, bit)?,
            ])?);
        }
    }
    Ok(rules)
}

/// The filter: EPERM for calls that would set a setuid or setgid bit,
/// everything else allowed (the helper's own filter, if any, still applies).
fn privilege_bit_filter() -> Result<BpfProgram, HelperLimitsError> {
    let mut rules = vec![
        (libc::SYS_fchmod, privileged_mode(1)?),
        (libc::SYS_fchmodat, privileged_mode(2)?),
        (SYS_FCHMODAT2, privileged_mode(2)?),
        (libc::SYS_mknodat, privileged_mode(2)?),
        (libc::SYS_openat, privileged_create(2, 3)?),
    ];
    #[cfg(target_arch = "x86_64")]
    rules.extend([
        (libc::SYS_chmod, privileged_mode(1)?),
        (libc::SYS_mknod, privileged_mode(1)?),
        (libc::SYS_creat, privileged_mode(1)?),
        (libc::SYS_open, privileged_create(1, 2)?),
    ]);
    let filter = SeccompFilter::new(
        rules.into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        ARCH,
    )?;
    Ok(filter.try_into()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;

    /// Runs `body` in a forked child under the limits; its exit status is
    /// the errno `body` returns (0 for success).
    fn in_limited_child(limits: &HelperLimits, body: impl FnOnce() -> i32) -> i32 {
        // SAFETY: the child only makes syscalls and exits with _exit; the
        // test binary's other threads are not touched in it.
        match unsafe { libc::fork() } {
            0 => {
                let code = match limits.apply_to_self() {
                    Ok(()) => body(),
                    Err(_) => 200,
                };
                // SAFETY: ends the forked child without running the
                // parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid if pid > 0 => {
                let mut status = 0;
                // SAFETY: waits for the child forked above.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WEXITSTATUS(status)
            }
            _ => panic!("fork failed"),
        }
    }

    fn errno_of(rc: libc::c_int) -> i32 {
        if rc < 0 {
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(255)
        } else {
            0
        }
    }

    fn strict() -> HelperLimits {
        HelperLimits::new(false).expect("filter builds")
    }

    fn c(path: &std::path::Path) -> CString {
        CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL")
    }

    #[test]
    fn setting_a_privilege_bit_is_refused_and_plain_modes_pass() {
        assert_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("prog");
        std::fs::write(&file, b"x").expect("write");
        let path = c(&file);
        let limits = strict();
        for (mode, want) in [
            (0o4755, libc::EPERM),
            (0o2755, libc::EPERM),
            (0o755, 0),
            (0o1777, 0),
        ] {
            let got = in_limited_child(&limits, || {
                // SAFETY: path is a valid C string for the call.
                errno_of(unsafe { libc::chmod(path.as_ptr(), mode) })
            });
            assert_eq!(got, want, "chmod {mode:o}");
            let got = in_limited_child(&limits, || {
                // SAFETY: as above; AT_FDCWD with an absolute path.
                errno_of(unsafe { libc::fchmodat(libc::AT_FDCWD, path.as_ptr(), mode, 0) })
            });
            assert_eq!(got, want, "fchmodat {mode:o}");
        }
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o6000, 0, "a privilege bit was set: {mode:o}");
    }

    #[test]
    fn creating_with_a_privilege_bit_is_refused_and_plain_opens_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = strict();
        let open = |name: &str, flags: libc::c_int, mode: libc::mode_t| {
            let path = c(&dir.path().join(name));
            in_limited_child(&limits, move || {
                // SAFETY: path is a valid C string; the fd is left to _exit.
                errno_of(unsafe { libc::open(path.as_ptr(), flags, mode) })
            })
        };
        let create = libc::O_CREAT | libc::O_WRONLY;
        assert_eq!(open("suid", create, 0o4755), libc::EPERM);
        assert_eq!(open("sgid", create, 0o2755), libc::EPERM);
        assert_eq!(open("plain", create, 0o755), 0);
        assert!(!dir.path().join("suid").exists());
        // Without O_CREAT the mode argument means nothing and is not read.
        assert_eq!(open("plain", libc::O_RDONLY, 0o4755), 0);
    }

    /// Writes to a root-owned setuid file in a child under `limits`; the
    /// file's mode afterwards.
    fn mode_after_write(limits: &HelperLimits) -> u32 {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("setuid");
        std::fs::write(&file, b"original").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4755)).expect("chmod");
        let path = c(&file);
        let got = in_limited_child(limits, || {
            // SAFETY: path is a valid C string.
            let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY) };
            if fd < 0 {
                return errno_of(fd);
            }
            // SAFETY: fd is open for writing; the buffer is 7 bytes long.
            errno_of(unsafe { libc::write(fd, b"payload".as_ptr().cast(), 7) } as i32)
        });
        assert_eq!(got, 0, "the write failed");
        std::fs::metadata(&file).expect("stat").permissions().mode()
    }

    #[test]
    fn writing_to_a_setuid_file_clears_its_bit_without_fsetid() {
        assert_root();
        // The control: root with CAP_FSETID keeps the bit on write.
        let kept = mode_after_write(&HelperLimits::new(true).expect("limits"));
        assert_eq!(kept & 0o4000, 0o4000, "control: {kept:o}");
        let mode = mode_after_write(&strict());
        assert_eq!(
            mode & 0o6000,
            0,
            "the setuid bit survived a write: {mode:o}"
        );
    }

    fn assert_root() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    }

    #[test]
    fn device_nodes_cannot_be_made() {
        assert_root();
        let dir = tempfile::tempdir().expect("tempdir");
        let mknod = |name: &str, limits: &HelperLimits| {
            let path = c(&dir.path().join(name));
            in_limited_child(limits, move || {
                // SAFETY: path is a valid C string.
                errno_of(unsafe {
                    libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 1))
                })
            })
        };
        let no_limits = HelperLimits {
            filter: None,
            dropped: &[],
        };
        assert_eq!(
            mknod("control", &no_limits),
            0,
            "control: root makes a node"
        );
        assert_eq!(
            mknod("mem", &HelperLimits::new(true).expect("limits")),
            libc::EPERM
        );
        assert!(!dir.path().join("mem").exists());
    }

    #[test]
    fn allowing_setuid_files_keeps_fsetid_and_installs_no_filter() {
        let limits = HelperLimits::new(true).expect("limits");
        assert!(limits.filter.is_none());
        assert!(!limits.dropped_capabilities().contains(&Cap::FSETID));
        assert!(strict().dropped_capabilities().contains(&Cap::FSETID));
    }
}
