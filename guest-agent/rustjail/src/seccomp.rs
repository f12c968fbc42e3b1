//! The OCI seccomp profile, compiled to BPF with seccompiler (pure Rust, so
//! it links into the static agent) and installed with seccomp(2).
//!
//! seccompiler's filter has one action for matches and one for the rest,
//! while a profile gives each rule its own. The profile therefore becomes
//! a stack of filters, which the kernel runs together, taking the most
//! restrictive answer (and, between equals, the data of the newest):
//! first the allow list (matches ALLOW, the rest the default action), then
//! one filter per other action (matches that action, the rest ALLOW).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction as Action, LinuxSeccompFilterFlag as Flag,
    LinuxSeccompOperator as Op, LinuxSyscall,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {0} is not supported (no notify listener in the guest)")]
    Unsupported(String),
    #[error("seccomp: syscall {syscall:?}: {reason}")]
    Rule { syscall: String, reason: String },
    #[error("seccomp: {0}")]
    Compile(String),
    #[error("seccomp: install the filter: {0}")]
    Install(std::io::Error),
}

/// A compiled profile: filters in installation order, and seccomp flags.
#[derive(Debug)]
pub struct Compiled {
    pub filters: Vec<BpfProgram>,
    pub flags: libc::c_ulong,
}

const EPERM: u32 = libc::EPERM as u32;

/// The libseccomp name of the one architecture filters are built for.
pub fn native_arch_name() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else {
        "SCMP_ARCH_X86_64"
    }
}

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

fn action(a: Action, errno: Option<u32>) -> Result<SeccompAction, SeccompError> {
    Ok(match a {
        Action::ScmpActAllow => SeccompAction::Allow,
        Action::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(EPERM)),
        // libseccomp's SCMP_ACT_KILL is the thread variant.
        Action::ScmpActKill | Action::ScmpActKillThread => SeccompAction::KillThread,
        Action::ScmpActKillProcess => SeccompAction::KillProcess,
        Action::ScmpActTrap => SeccompAction::Trap,
        Action::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(EPERM)),
        Action::ScmpActLog => SeccompAction::Log,
        Action::ScmpActNotify => return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY".into())),
    })
}

/// One OCI rule's argument conditions (all must hold).
fn conditions(sc: &LinuxSyscall, name: &str) -> Result<Vec<SeccompCondition>, SeccompError> {
    let bad = |reason: String| SeccompError::Rule {
        syscall: name.to_string(),
        reason,
    };
    let mut out = Vec::new();
    for arg in sc.args().as_deref().unwrap_or_default() {
        let (op, value) = match arg.op() {
            Op::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
            Op::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
            Op::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
            Op::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
            Op::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
            Op::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
            // (arg & value) == valueTwo
            Op::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(arg.value()),
                arg.value_two().unwrap_or(0),
            ),
        };
        let index =
            u8::try_from(arg.index()).map_err(|_| bad(format!("argument {}", arg.index())))?;
        out.push(
            SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| bad(e.to_string()))?,
        );
    }
    Ok(out)
}

/// Rules by syscall number for the given OCI rules (an empty list matches
/// the syscall whatever its arguments). Names this architecture does not
/// have are skipped, as runc and libseccomp do.
fn rules<'a>(
    syscalls: impl Iterator<Item = &'a LinuxSyscall>,
) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut unconditional = BTreeSet::new();
    for sc in syscalls {
        for name in sc.names() {
            let Ok(nr) = syscalls::Sysno::from_str(name) else {
                continue;
            };
            let nr = i64::from(nr.id());
            let conds = conditions(sc, name)?;
            if unconditional.contains(&nr) {
                continue;
            }
            if conds.is_empty() {
                unconditional.insert(nr);
                map.insert(nr, Vec::new());
                continue;
            }
            let rule = SeccompRule::new(conds).map_err(|e| SeccompError::Rule {
                syscall: name.clone(),
                reason: e.to_string(),
            })?;
            map.entry(nr).or_default().push(rule);
        }
    }
    Ok(map)
}

fn compile_filter(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, ARCH)
        .map_err(|e| SeccompError::Compile(e.to_string()))?;
    BpfProgram::try_from(filter).map_err(|e| SeccompError::Compile(e.to_string()))
}

/// Compiles the profile; every mistake is reported before the container
/// starts.
pub fn compile(profile: &LinuxSeccomp) -> Result<Compiled, SeccompError> {
    if profile.listener_path().is_some() {
        return Err(SeccompError::Unsupported("listenerPath".into()));
    }
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let syscalls = profile.syscalls().clone().unwrap_or_default();
    let action_of = |sc: &LinuxSyscall| action(sc.action(), sc.errno_ret());
    let mut filters = Vec::new();
    if default != SeccompAction::Allow {
        let mut allowed = Vec::new();
        for sc in &syscalls {
            if action_of(sc)? == SeccompAction::Allow {
                allowed.push(sc);
            }
        }
        filters.push(compile_filter(
            rules(allowed.into_iter())?,
            default.clone(),
            SeccompAction::Allow,
        )?);
    }
    // One filter per other action, in the profile's order.
    let mut others: Vec<SeccompAction> = Vec::new();
    for sc in &syscalls {
        let a = action_of(sc)?;
        if a != SeccompAction::Allow && !others.contains(&a) {
            others.push(a);
        }
    }
    for a in others {
        let mut group = Vec::new();
        for sc in &syscalls {
            if action_of(sc)? == a {
                group.push(sc);
            }
        }
        let rules = rules(group.into_iter())?;
        if !rules.is_empty() {
            filters.push(compile_filter(rules, SeccompAction::Allow, a)?);
        }
    }
    let mut flags = 0;
    for f in profile.flags().as_deref().unwrap_or_default() {
        flags |= match f {
            Flag::SeccompFilterFlagLog => libc::SECCOMP_FILTER_FLAG_LOG,
            Flag::SeccompFilterFlagTsync => libc::SECCOMP_FILTER_FLAG_TSYNC,
            Flag::SeccompFilterFlagSpecAllow => libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
            // Only meaningful for a notify listener, which the guest lacks.
            Flag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::Unsupported(
                    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV".into(),
                ))
            }
        };
    }
    Ok(Compiled { filters, flags })
}

impl Compiled {
    /// Installs every filter on the calling thread. Without no_new_privs
    /// the caller needs CAP_SYS_ADMIN (as with runc, the profile is then
    /// installed before capabilities are dropped).
    pub fn install(&self) -> Result<(), SeccompError> {
        for program in &self.filters {
            let prog = libc::sock_fprog {
                len: u16::try_from(program.len())
                    .map_err(|_| SeccompError::Compile("filter longer than 65535".into()))?,
                // sock_filter is #[repr(C)] with libc's layout; the kernel
                // only reads through this pointer.
                filter: program.as_ptr() as *mut libc::sock_filter,
            };
            // SAFETY: `prog` points at `program`, which outlives the call;
            // seccomp(2) copies the filter into the kernel before returning.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_seccomp,
                    libc::SECCOMP_SET_MODE_FILTER,
                    self.flags,
                    &prog as *const libc::sock_fprog,
                )
            };
            if rc != 0 {
                return Err(SeccompError::Install(std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn allow_list_and_other_actions_become_a_stack_of_filters() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[
              {"names":["read","write","no_such_syscall"],"action":"SCMP_ACT_ALLOW"},
              {"names":["personality"],"action":"SCMP_ACT_ALLOW",
               "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
              {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
              {"names":["ptrace"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
        );
        let c = compile(&p).unwrap();
        // allow list, ERRNO(38), KILL_PROCESS
        assert_eq!(c.filters.len(), 3);
        assert!(c.filters.iter().all(|f| !f.is_empty()));
        assert_eq!(c.flags, 0);
    }

    #[test]
    fn default_allow_needs_no_allow_list() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        );
        let c = compile(&p).unwrap();
        assert_eq!(c.filters.len(), 1);
        assert_eq!(c.flags, libc::SECCOMP_FILTER_FLAG_LOG);
    }

    #[test]
    fn notify_is_refused_by_name() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["mount"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        );
        let err = compile(&p).unwrap_err().to_string();
        assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    }

    /// Installed for real, in a forked child (a filter cannot be removed):
    /// the errno a rule names is what the syscall returns, and what the
    /// profile allows still works.
    #[test]
    fn an_installed_profile_answers_with_its_errno() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW",
            "syscalls":[{"names":["getppid"],"action":"SCMP_ACT_ERRNO","errnoRet":77}]}"#,
        );
        let c = compile(&p).unwrap();
        // SAFETY: the child only makes raw syscalls and exits, which is
        // safe after fork in a multithreaded test process.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: prctl/getppid/getpid take no pointers.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let code = match c.install() {
                    Err(_) => 1,
                    Ok(()) => {
                        // SAFETY: as above. Through syscall(2): glibc's
                        // getppid() cannot fail, so it would not set errno.
                        let (ppid, pid) =
                            unsafe { (libc::syscall(libc::SYS_getppid), libc::getpid()) };
                        let errno = std::io::Error::last_os_error().raw_os_error();
                        if ppid != -1 {
                            2
                        } else if errno != Some(77) {
                            4
                        } else if pid <= 0 {
                            3
                        } else {
                            0
                        }
                    }
                };
                // SAFETY: leaves the child at once, without running the
                // parent's atexit handlers or destructors.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
