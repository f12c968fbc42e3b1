//! `linux.seccomp`: actions, errno codes, argument conditions.

use serde_json::{json, Value};

use crate::bundle::Bundle;
use crate::runtime::Runtime;

fn with_profile(script: &str, syscalls: Value) -> Bundle {
    let mut b = Bundle::new(script);
    b.linux()["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls
    });
    b
}

pub fn errno_with_code(rt: &Runtime) -> Result<(), String> {
    let b = with_profile(
        r#"has "$(mkdir /tmp/d 2>&1)" "Permission denied" "mkdir gets errnoRet 13 (EACCES)"
has "$(ln -s x /tmp/l 2>&1)" "Operation not permitted" "symlink gets the default errno (EPERM)"
touch /tmp/ok || fail "other syscalls are allowed""#,
        json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
            {"names": ["symlink", "symlinkat"], "action": "SCMP_ACT_ERRNO"}
        ]),
    );
    rt.check(&b)
}

pub fn kill_and_trap(rt: &Runtime) -> Result<(), String> {
    let b = with_profile(
        // In child shells: busybox may run applets inside the shell.
        r#"mkdir /tmp/d
sh -c "rmdir /tmp/d" 2>/dev/null; eq $? 159 "rmdir is killed by SIGSYS (kill_process)"
[ -d /tmp/d ] || fail "the killed rmdir removed the directory"
sh -c sync 2>/dev/null; eq $? 159 "sync traps (SIGSYS)""#,
        json!([
            {"names": ["rmdir"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["sync"], "action": "SCMP_ACT_TRAP"}
        ]),
    );
    rt.check(&b)
}

pub fn argument_conditions(rt: &Runtime) -> Result<(), String> {
    let b = with_profile(
        r#"touch /tmp/f
chmod 755 /tmp/f || fail "mode 755 is allowed"
has "$(chmod 777 /tmp/f 2>&1)" "Operation not permitted" "mode 777 is denied"
eq "$(stat -c %a /tmp/f)" 755 "the denied chmod changed nothing""#,
        json!([
            {"names": ["chmod"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 1, "value": 511, "op": "SCMP_CMP_EQ"}]},
            {"names": ["fchmodat"], "action": "SCMP_ACT_ERRNO",
             "args": [{"index": 2, "value": 511, "op": "SCMP_CMP_EQ"}]}
        ]),
    );
    rt.check(&b)
}

pub fn trace_without_tracer_and_log(rt: &Runtime) -> Result<(), String> {
    let b = with_profile(
        r#"has "$(mkdir /tmp/d 2>&1)" "Function not implemented" "traced syscall with no tracer is ENOSYS"
ln -s x /tmp/l || fail "a logged syscall is allowed""#,
        json!([
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_TRACE"},
            {"names": ["symlink", "symlinkat"], "action": "SCMP_ACT_LOG"}
        ]),
    );
    rt.check(&b)
}
