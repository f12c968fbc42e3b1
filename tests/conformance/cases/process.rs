//! `process`: what the container's process is and what it may do.

use serde_json::json;

use crate::bundle::Bundle;
use crate::runtime::Runtime;

/// Capability bit numbers to the hex mask /proc/PID/status shows.
fn mask(bits: &[u32]) -> String {
    format!("{:016x}", bits.iter().fold(0u64, |m, b| m | 1 << b))
}

pub fn args_env_cwd(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$GREETING" "hello world" env
eq "$(pwd)" /tmp cwd
eq "$(cat /proc/self/cmdline | tr '\0' ' ' | cut -c1-6)" "cat /p" "args reach execve"
eq "$(cat /proc/1/comm)" sh "the process is pid 1 of its pid namespace""#,
    );
    b.process()["env"]
        .as_array_mut()
        .unwrap()
        .push(json!("GREETING=hello world"));
    b.process()["cwd"] = json!("/tmp");
    rt.check(&b)
}

pub fn user_groups_umask(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(id -u)" 1000 uid
eq "$(id -g)" 100 gid
eq "$(status_field Groups) $(awk '/^Groups:/ {print $3}' /proc/self/status)" "10 2000" additionalGids
eq "$(umask)" 0027 umask"#,
    );
    b.process()["user"] =
        json!({"uid": 1000, "gid": 100, "additionalGids": [10, 2000], "umask": 23});
    rt.check(&b)
}

pub fn home_from_container_passwd(rt: &Runtime) -> Result<(), String> {
    let mut b =
        Bundle::new(r#"eq "$HOME" /home/u "HOME of uid 1000 from the container's /etc/passwd""#);
    b.process()["user"] = json!({"uid": 1000, "gid": 1000});
    rt.check(&b)
}

pub fn capabilities_of_a_user(rt: &Runtime) -> Result<(), String> {
    let script = format!(
        r#"eq "$(status_field CapBnd)" {bnd} bounding
eq "$(status_field CapInh)" {inh} inheritable
eq "$(status_field CapPrm)" {amb} "permitted (ambient, after execve as a user)"
eq "$(status_field CapEff)" {amb} "effective (ambient, after execve as a user)"
eq "$(status_field CapAmb)" {amb} ambient"#,
        bnd = mask(&[0, 5, 7, 13]),
        inh = mask(&[5, 13]),
        amb = mask(&[13]),
    );
    let mut b = Bundle::new(&script);
    b.process()["user"] = json!({"uid": 1000, "gid": 1000});
    b.process()["capabilities"] = json!({
        "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
        "effective": ["CAP_KILL", "CAP_NET_RAW"],
        "permitted": ["CAP_KILL", "CAP_NET_RAW"],
        "inheritable": ["CAP_KILL", "CAP_NET_RAW"],
        "ambient": ["CAP_NET_RAW"]
    });
    rt.check(&b)
}

pub fn capabilities_of_root(rt: &Runtime) -> Result<(), String> {
    let script = format!(
        r#"eq "$(status_field CapBnd)" {m} bounding
eq "$(status_field CapEff)" {m} effective
touch /tmp/f && chown 1000 /tmp/f || fail "CAP_CHOWN is granted"
mknod /tmp/n c 1 3 2>/dev/null && fail "CAP_MKNOD is not granted"
true"#,
        m = mask(&[0, 5])
    );
    let mut b = Bundle::new(&script);
    let caps = json!(["CAP_CHOWN", "CAP_KILL"]);
    b.process()["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    rt.check(&b)
}

pub fn rlimits(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(awk '/^Max open files/ {print $4, $5}' /proc/self/limits)" "1000 2000" RLIMIT_NOFILE
eq "$(awk '/^Max core file size/ {print $5, $6}' /proc/self/limits)" "0 0" RLIMIT_CORE
eq "$(awk '/^Max processes/ {print $3, $4}' /proc/self/limits)" "300 400" RLIMIT_NPROC"#,
    );
    b.process()["rlimits"] = json!([
        {"type": "RLIMIT_NOFILE", "soft": 1000, "hard": 2000},
        {"type": "RLIMIT_CORE", "soft": 0, "hard": 0},
        {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}
    ]);
    rt.check(&b)
}

pub fn no_new_privileges(rt: &Runtime) -> Result<(), String> {
    let on = Bundle::new(r#"eq "$(status_field NoNewPrivs)" 1 NoNewPrivs"#);
    rt.check(&on)?;
    let mut off = Bundle::new(r#"eq "$(status_field NoNewPrivs)" 0 NoNewPrivs"#);
    off.process()["noNewPrivileges"] = json!(false);
    rt.check(&off)
}

/// The process starts with no signal blocked or ignored by the runtime
/// (a Rust init ignores SIGPIPE; a foreground runtime blocks signals).
pub fn default_signal_state(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(
        r#"sig() { awk -v k="$1:" '$1==k {print $2}' /proc/$$/status; }
eq "$(sig SigBlk)" 0000000000000000 "signals blocked in the process"
# SIGPIPE (13) is bit 12: the 13th of the 16 hex digits, lowest bit.
case "$(sig SigIgn | cut -c13)" in [02468ace]) ;; *) fail "SIGPIPE is ignored: $(sig SigIgn)";; esac"#,
    );
    rt.check(&b)
}

pub fn oom_score_adj(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(r#"eq "$(cat /proc/self/oom_score_adj)" 500 oom_score_adj"#);
    b.process()["oomScoreAdj"] = json!(500);
    rt.check(&b)
}

pub fn process_io_priority(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(r#"eq "$(ionice -p $$)" "best-effort: prio 6" ioPriority"#);
    b.process()["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 6});
    rt.check(&b)
}

pub fn process_scheduler(rt: &Runtime) -> Result<(), String> {
    // /proc/PID/stat: field 19 is nice, 41 the policy (3 = SCHED_BATCH).
    let mut b =
        Bundle::new(r#"eq "$(awk '{print $19, $41}' /proc/self/stat)" "7 3" "nice and policy""#);
    b.process()["scheduler"] = json!({"policy": "SCHED_BATCH", "nice": 7});
    rt.check(&b)
}

pub fn linux_personality(rt: &Runtime) -> Result<(), String> {
    let mut b = Bundle::new(
        r#"eq "$(uname -m)" i686 "uname under LINUX32"
eq "$(cat /proc/self/personality)" 00000008 "persona under LINUX32""#,
    );
    b.linux()["personality"] = json!({"domain": "LINUX32"});
    rt.check(&b)
}

/// The user's program is placed at random addresses: no ADDR_NO_RANDOMIZE
/// (0x0040000), which rustjail's init is started with, in its persona.
pub fn address_space_is_randomized(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new(r#"eq "$(cat /proc/self/personality)" 00000000 "personality""#);
    rt.check(&b)
}

pub fn exit_codes(rt: &Runtime) -> Result<(), String> {
    let b = Bundle::new("exit 42");
    let ran = rt.run(&b);
    if ran.code != 42 {
        return Err(format!(
            "run of `exit 42` exited {}\n{}",
            ran.code,
            ran.describe()
        ));
    }
    // Not pid 1 of a pid namespace, which SIGKILL from inside cannot kill.
    let mut b = Bundle::new("kill -9 $$");
    b.linux()["namespaces"] = json!([{"type": "mount"}, {"type": "uts"}, {"type": "ipc"}]);
    let ran = rt.run(&b);
    if ran.code != 137 {
        return Err(format!(
            "run of a SIGKILLed process exited {}, want 137",
            ran.code
        ));
    }
    let mut b = Bundle::new("");
    b.process()["args"] = json!(["/no/such/program"]);
    let ran = rt.run(&b);
    if ran.code == 0 || ran.stderr.is_empty() {
        return Err(format!(
            "a missing program must fail with a reason\n{}",
            ran.describe()
        ));
    }
    Ok(())
}
