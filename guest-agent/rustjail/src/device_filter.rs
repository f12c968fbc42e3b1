//! Device rules on cgroup v2: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE` attached to the container's cgroup (v2 has
//! no devices.allow file). The program reproduces v1's semantics: the last
//! rule that matches decides, and a rule for every device (`a *:* rwm`)
//! resets the default and drops the rules before it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

#[derive(Debug, thiserror::Error)]
pub enum DeviceFilterError {
    #[error("device rules: load the cgroup device program: {0}")]
    Load(#[source] std::io::Error),
    #[error("device rules: attach to {path}: {source}")]
    Attach {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes (linux/bpf.h, linux/bpf_common.h).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV64_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X
const MOV64_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

// Registers: r1 = struct bpf_cgroup_dev_ctx *; r2 type, r3 access,
// r4 major, r5 minor; r6 scratch.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;
const R6: u8 = 6;

/// The device type as the program sees it (BPF_DEVCG_DEV_*).
fn type_code(t: Option<LinuxDeviceType>) -> Option<i32> {
    match t {
        Some(LinuxDeviceType::B) => Some(1),
        Some(LinuxDeviceType::C | LinuxDeviceType::U) => Some(2),
        _ => None,
    }
}

/// Access bits (BPF_DEVCG_ACC_MKNOD/READ/WRITE) of an `rwm` string.
fn access_bits(access: Option<&str>) -> i32 {
    let a = access.unwrap_or("rwm");
    [('m', 1), ('r', 2), ('w', 4)]
        .into_iter()
        .filter(|(c, _)| a.contains(*c))
        .map(|(_, b)| b)
        .sum()
}

fn is_wildcard_all(r: &LinuxDeviceCgroup) -> bool {
    type_code(r.typ()).is_none()
        && r.major().unwrap_or(-1) == -1
        && r.minor().unwrap_or(-1) == -1
        && access_bits(r.access().as_deref()) == 7
}

/// The instructions of one rule: fall through to the next rule unless it
/// matches, else return its verdict. An allow matches when every requested
/// access is allowed; a deny when any requested access is denied.
fn rule_block(r: &LinuxDeviceCgroup) -> Vec<Insn> {
    let mut tests = Vec::new();
    if let Some(t) = type_code(r.typ()) {
        tests.push(insn(JNE_K, R2, 0, 0, t));
    }
    let acc = access_bits(r.access().as_deref());
    if acc != 7 {
        tests.push(insn(MOV64_X, R6, R3, 0, 0));
        if r.allow() {
            tests.push(insn(AND32_K, R6, 0, 0, !acc & 7));
            tests.push(insn(JNE_K, R6, 0, 0, 0));
        } else {
            tests.push(insn(AND32_K, R6, 0, 0, acc));
            tests.push(insn(JEQ_K, R6, 0, 0, 0));
        }
    }
    if let Some(major) = r.major().filter(|m| *m >= 0) {
        tests.push(insn(JNE_K, R4, 0, 0, major as i32));
    }
    if let Some(minor) = r.minor().filter(|m| *m >= 0) {
        tests.push(insn(JNE_K, R5, 0, 0, minor as i32));
    }
    // Each test jumps past the rest of the block: the tests after it and
    // the two verdict instructions.
    let n = tests.len();
    let mut block: Vec<Insn> = tests
        .into_iter()
        .enumerate()
        .map(|(i, mut t)| {
            if t.code == JNE_K || t.code == JEQ_K {
                t.off = (n - i - 1 + 2) as i16;
            }
            t
        })
        .collect();
    block.push(insn(MOV64_K, R0, 0, 0, i32::from(r.allow())));
    block.push(insn(EXIT, 0, 0, 0, 0));
    block
}

/// The whole program for `rules` in spec order.
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let (default_allow, exceptions) = match rules.iter().rposition(is_wildcard_all) {
        Some(i) => (rules[i].allow(), &rules[i + 1..]),
        None => (true, rules),
    };
    let mut p = vec![
        insn(LDX_W, R2, R1, 0, 0),
        insn(AND32_K, R2, 0, 0, 0xffff),
        insn(LDX_W, R3, R1, 0, 0),
        insn(RSH32_K, R3, 0, 0, 16),
        insn(LDX_W, R4, R1, 4, 0),
        insn(LDX_W, R5, R1, 8, 0),
    ];
    // The last matching rule decides: test them from the last.
    for r in exceptions.iter().rev() {
        p.extend(rule_block(r));
    }
    p.push(insn(MOV64_K, R0, 0, 0, i32::from(default_allow)));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; 16]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zeroed, 128-byte bpf_attr union laid out for
    // `cmd`; the kernel reads at most its size, passed alongside.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), 128usize) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// How many times a program load is tried. The kernel answers EAGAIN when
/// the verifier is interrupted, and libbpf retries as many times.
const LOAD_ATTEMPTS: u32 = 5;

fn load_program(attr: &mut [u64; 16]) -> Result<i64, DeviceFilterError> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    let mut attempt = 1;
    loop {
        match bpf(BPF_PROG_LOAD, attr) {
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) && attempt < LOAD_ATTEMPTS => {
                attempt += 1;
            }
            r => return r.map_err(DeviceFilterError::Load),
        }
    }
}

/// Loads the program for `rules` and attaches it to the cgroup v2
/// directory `dir`.
pub fn attach(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), DeviceFilterError> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u64 = 15;
    const BPF_CGROUP_DEVICE: u64 = 6;
    const BPF_F_ALLOW_MULTI: u64 = 2;
    let insns = program(rules);
    let license = c"Apache-2.0";
    let mut load = [0u64; 16];
    load[0] = BPF_PROG_TYPE_CGROUP_DEVICE | (insns.len() as u64) << 32;
    load[1] = insns.as_ptr() as u64;
    load[2] = license.as_ptr() as u64;
    let prog = load_program(&mut load)?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
    let cgroup = std::fs::File::open(dir).map_err(|source| DeviceFilterError::Attach {
        path: dir.display().to_string(),
        source,
    })?;
    let mut at = [0u64; 16];
    at[0] = cgroup.as_raw_fd() as u64 | (prog.as_raw_fd() as u64) << 32;
    at[1] = BPF_CGROUP_DEVICE | BPF_F_ALLOW_MULTI << 32;
    bpf(BPF_PROG_ATTACH, &mut at).map_err(|source| DeviceFilterError::Attach {
        path: dir.display().to_string(),
        source,
    })?;
    // The attachment holds the program; our descriptor may go.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(json: &str) -> Vec<LinuxDeviceCgroup> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_deny_all_sets_the_default_and_drops_earlier_rules() {
        let p = program(&rules(
            r#"[{"allow": true, "type": "c", "major": 9, "minor": 9},
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}]"#,
        ));
        // Prologue 6, one rule (type, major, minor, verdict 2), default 2.
        assert_eq!(p.len(), 6 + 5 + 2);
        assert_eq!(p[p.len() - 2], insn(MOV64_K, R0, 0, 0, 0), "default deny");
        assert_eq!(p[6], insn(JNE_K, R2, 0, 4, 2), "type test skips the block");
    }

    #[test]
    fn partial_access_allow_tests_for_a_subset() {
        let p = program(&rules(
            r#"[{"allow": true, "type": "b", "major": 8, "access": "r"}]"#,
        ));
        assert_eq!(p[7], insn(MOV64_X, R6, R3, 0, 0));
        assert_eq!(p[8], insn(AND32_K, R6, 0, 0, 1 | 4), "anything but read");
        assert_eq!(
            p[p.len() - 2],
            insn(MOV64_K, R0, 0, 0, 1),
            "no deny-all: allow"
        );
    }

    /// The program in a real kernel: the hybrid cgroup2 mount of this host
    /// (or the v2 root) takes the program whatever v1 does.
    #[test]
    fn the_kernel_enforces_the_rules() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (bpf, cgroups)"
        );
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
            .expect("a cgroup2 mount");
        let dir = base.join(format!("hull-test-devices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let r = rules(
            r#"[{"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}]"#,
        );
        attach(&dir, &r).unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs; head -c 1 /dev/zero | wc -c; \
             (cat /dev/null) 2>/dev/null && echo null-open || echo null-denied",
            dir.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir(&dir);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text,
            "1\nnull-denied\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
