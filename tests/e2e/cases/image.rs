//! The minimal rootfs image (`[guest] root = "image"`): the core cases run
//! on it as on the initrd, with the image on virtio-pmem checked by
//! dm-verity, mapped with DAX unchecked, and on virtio-blk; a privileged
//! container gets the kernel modules it asks for (a bridge, a dummy link,
//! nftables) loaded on demand; a modified image does not boot, and the
//! error names dm-verity.

use std::process::Command;

use super::*;
use crate::env::{run, Env};

const INSTALLED_IMAGE: &str = "/usr/local/share/hull/rootfs.img";
const INSTALLED_DISTRO: &str = "/usr/local/share/hull/rootfs-distro.img";

/// The suite's configuration with the guest booting `image` from `device`.
fn image_config(env: &Env, image: &str, device: &str, verity: bool) -> String {
    env.good_config()
        .replace("root = \"initrd\"", "root = \"image\"")
        .replace(
            &format!("image = \"{INSTALLED_IMAGE}\""),
            &format!("image = \"{image}\""),
        )
        .replace("device = \"pmem\"", &format!("device = \"{device}\""))
        .replace("verity = true", &format!("verity = {verity}"))
}

/// Runs `f` with `config` as the suite's base configuration (cases that
/// change the configuration go back to it), then puts the suite's back.
fn with_config<T>(
    env: &Env,
    config: &str,
    f: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    env.with_base_config(config, f)
}

/// The guest's kernel command line, read by a container.
fn guest_cmdline(env: &Env, id: &str, options: &[&str]) -> Result<String, String> {
    let o = run(&mut env.run_with(id, options, &["cat", "/proc/cmdline"]))?;
    expect_success(&o)?;
    Ok(stdout(&o))
}

/// The root hash hull-image wrote for the installed image.
fn installed_root_hash() -> Result<String, String> {
    let text = std::fs::read_to_string(format!("{INSTALLED_IMAGE}.verity"))
        .map_err(|e| format!("{INSTALLED_IMAGE}.verity: {e}"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    v["root_hash"]
        .as_str()
        .map(str::to_string)
        .ok_or(format!("no root_hash in {text}"))
}

/// The cases a guest flavour must pass as the initrd does.
const CORE_CASES: &[(&str, Case)] = &[
    ("runs_in_its_own_vm", runs_in_its_own_vm),
    (
        "exec_joins_the_running_container",
        exec_joins_the_running_container,
    ),
    (
        "stdout_and_stderr_are_separate",
        stdout_and_stderr_are_separate,
    ),
    (
        "large_binary_output_is_byte_exact",
        large_binary_output_is_byte_exact,
    ),
    (
        "volumes_are_shared_read_only_where_asked",
        volumes_are_shared_read_only_where_asked,
    ),
    ("cri_pod_runs_in_one_vm", cri_pod_runs_in_one_vm),
    (
        "pod_network_reaches_the_vm_both_ways",
        pod_network_reaches_the_vm_both_ways,
    ),
];

/// Runs `cases` with the configuration in place, each followed by the
/// leak check; `on` names the guest in messages.
fn run_core_cases(env: &Env, cases: &[(&str, Case)], on: &str) -> Result<(), String> {
    for (name, case) in cases {
        case(env).map_err(|e| format!("{name} on {on}: {e}"))?;
        env.check_no_leaks()?;
        println!("    {name}: ok on {on}");
    }
    Ok(())
}

/// The core cases, booted from the image on pmem with verity; then a
/// container each on pmem with DAX and on blk.
pub(super) fn image_core_cases_run_as_on_the_initrd(env: &Env) -> Result<(), String> {
    let root_hash = installed_root_hash()?;
    let verified = image_config(env, INSTALLED_IMAGE, "pmem", true);
    with_config(env, &verified, || {
        let cmdline = guest_cmdline(env, &env.unique("imgline"), &[])?;
        if !cmdline.contains("hull.root=pmem") || !cmdline.contains(&root_hash) {
            return Err(format!(
                "the guest did not boot the verified image {root_hash}: {cmdline}"
            ));
        }
        run_core_cases(env, CORE_CASES, "the image (pmem, verity)")?;
        Ok(())
    })?;
    for (device, verity, needle) in [
        ("pmem", false, "hull.verity=off"),
        ("blk", true, "hull.root=blk"),
    ] {
        let config = image_config(env, INSTALLED_IMAGE, device, verity);
        with_config(env, &config, || {
            runs_in_its_own_vm(env).map_err(|e| format!("{device}, verity {verity}: {e}"))?;
            let cmdline = guest_cmdline(env, &env.unique("imgline"), &[])?;
            if !cmdline.contains(needle) {
                return Err(format!("{device}: {needle} not in {cmdline}"));
            }
            println!("    runs_in_its_own_vm: ok on the image ({device}, verity {verity})");
            Ok(())
        })?;
    }
    env.check_no_leaks()
}

/// The distro image: systemd boots and starts hull-agent as a service; the
/// core cases run; in the guest, `systemctl status hull-agent` says it is
/// active, and GetGuestDetails says the agent is not the init daemon.
pub(super) fn image_distro_runs_the_agent_under_systemd(env: &Env) -> Result<(), String> {
    let config = image_config(env, INSTALLED_DISTRO, "pmem", true).replace(
        "kernel_params = \"\"",
        "kernel_params = \"hull.debug_console=on\"",
    );
    with_config(env, &config, || {
        let cases: Vec<(&str, Case)> = CORE_CASES
            .iter()
            .copied()
            .filter(|(name, _)| *name != "large_binary_output_is_byte_exact")
            .collect();
        run_core_cases(env, &cases, "the distro image")?;
        let task = Detached::start(env, "distro", &["sleep", "1000"])?;
        let out = super::hostile::guest_root(
            env,
            &task.id,
            "systemctl status hull-agent --no-pager; echo init=$(cat /proc/1/comm)",
        )?;
        if !out.contains("Active: active (running)") || !out.contains("init=systemd") {
            return Err(format!("systemctl status hull-agent: {out}"));
        }
        let sock = env.state_dir.join(&task.id).join("vsock.sock");
        let o = run(Command::new("hull-agentctl")
            .arg("--vm-socket")
            .arg(&sock)
            .arg("details"))?;
        if !stdout(&o).contains("init_daemon: false") {
            return Err(format!("GetGuestDetails: {}", stdout(&o)));
        }
        println!(
            "    {}",
            out.lines()
                .find(|l| l.contains("Active:"))
                .unwrap_or("")
                .trim()
        );
        Ok(())
    })?;
    env.check_no_leaks()
}

/// The suite's image with nft (Debian's, with its libraries) beside busybox.
fn import_nft_image(env: &Env) -> Result<&'static str, String> {
    const NAME: &str = "docker.io/hull/nft:latest";
    let tar = env.path("nft.tar");
    expect_success(&run(Command::new("bash")
        .arg(env.repo.join("scripts/busybox-image.sh"))
        .arg(&tar)
        .arg(NAME)
        .env("HULL_IMAGE_EXTRA", "/usr/sbin/nft"))?)?;
    expect_success(&run(env.ctr().args(["image", "import"]).arg(&tar))?)?;
    Ok(NAME)
}

/// What the privileged container does: each step needs a module the guest
/// has not loaded (bridge; dummy; nf_tables), so the kernel asks for it.
const MODULES_SCRIPT: &str = "set -e; brctl addbr hullbr0; ip link add hulld0 type dummy; \
     nft add table ip hull; \
     nft add chain ip hull input '{ type filter hook input priority 0; }'; \
     nft add rule ip hull input tcp dport 9 drop; \
     ip -o link show hullbr0; ip -o link show hulld0; nft list ruleset; \
     echo modules: $(cut -d' ' -f1 /proc/modules)";

/// A privileged container adds a bridge, a dummy link and an nftables
/// rule; the guest loads bridge, dummy and nf_tables from the image when
/// the kernel asks (none is loaded at boot).
pub(super) fn image_loads_modules_on_demand(env: &Env) -> Result<(), String> {
    let image = import_nft_image(env)?;
    let config = image_config(env, INSTALLED_IMAGE, "pmem", true);
    with_config(env, &config, || {
        let mut c = env.ctr();
        c.args([
            "run",
            "--rm",
            "--privileged",
            "--runtime",
            crate::env::RUNTIME,
        ])
        .args([image, &env.unique("modules"), "sh", "-c", MODULES_SCRIPT]);
        let o = run(&mut c)?;
        let text = format!("{}{}", stdout(&o), stderr(&o));
        if !o.status.success() {
            return Err(format!("privileged container failed: {text}"));
        }
        for want in ["hullbr0", "hulld0", "tcp dport 9 drop"] {
            if !text.contains(want) {
                return Err(format!("{want:?} missing from: {text}"));
            }
        }
        let modules = text
            .lines()
            .find_map(|l| l.strip_prefix("modules: "))
            .ok_or(format!("no module list in: {text}"))?;
        for module in ["bridge", "dummy", "nf_tables"] {
            if !modules.split_whitespace().any(|m| m == module) {
                return Err(format!("{module} not loaded: {modules}"));
            }
        }
        println!("    bridge, dummy link and nftables rule made; guest modules: {modules}");
        Ok(())
    })?;
    env.check_no_leaks()
}

/// A copy of the installed image boots; with one byte of the agent's file
/// flipped it does not, and the error names dm-verity. hull-check finds
/// the same change.
pub(super) fn image_modified_does_not_boot(env: &Env) -> Result<(), String> {
    let dir = env.path("tampered");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let copy = dir.join("rootfs.img");
    for suffix in ["", ".verity"] {
        std::fs::copy(
            format!("{INSTALLED_IMAGE}{suffix}"),
            format!("{}{suffix}", copy.display()),
        )
        .map_err(|e| format!("copy the image: {e}"))?;
    }
    let config = image_config(env, &copy.display().to_string(), "pmem", true);
    with_config(env, &config, || {
        runs_in_its_own_vm(env).map_err(|e| format!("the unmodified copy: {e}"))
    })?;
    let at = flip_a_byte_of_the_agent(env, &copy)?;
    let result = with_config(env, &config, || {
        let o = run(&mut env.run_with(&env.unique("tampered"), &[], &["true"]))?;
        Ok((o.status.success(), stderr(&o)))
    })?;
    let (succeeded, error) = result;
    if succeeded {
        return Err(format!("an image modified at byte {at} booted"));
    }
    if !error.contains("verity") || !error.contains("corrupted") {
        return Err(format!("the error does not name dm-verity: {error}"));
    }
    println!(
        "    byte {at} flipped: {}",
        error.lines().find(|l| l.contains("verity")).unwrap_or("")
    );
    let check_config = dir.join("hull.toml");
    std::fs::write(&check_config, &config).map_err(|e| e.to_string())?;
    let o = run(Command::new("/usr/local/bin/hull-check").arg(&check_config))?;
    if o.status.success() || !stderr(&o).contains("does not hash to the root hash") {
        return Err(format!(
            "hull-check did not find the change: {}",
            stderr(&o)
        ));
    }
    env.check_no_leaks()
}

/// Flips one byte in the first block of the agent's file in `image` (the
/// block the guest reads first after the switch); its offset.
fn flip_a_byte_of_the_agent(env: &Env, image: &std::path::Path) -> Result<usize, String> {
    let agent_path = env
        .repo
        .join("target/x86_64-unknown-linux-gnu/release/hull-agent");
    let agent = std::fs::read(&agent_path).map_err(|e| format!("{}: {e}", agent_path.display()))?;
    let mut bytes = std::fs::read(image).map_err(|e| e.to_string())?;
    let head = &agent[..4096.min(agent.len())];
    let start = bytes
        .windows(head.len())
        .position(|w| w == head)
        .ok_or("the agent's first block is not in the image (was it built from this tree?)")?;
    let at = start + 100;
    bytes[at] ^= 0x01;
    std::fs::write(image, bytes).map_err(|e| e.to_string())?;
    Ok(at)
}
