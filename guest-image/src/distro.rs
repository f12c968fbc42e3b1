//! The distro rootfs image: a Debian root built by `mmdebstrap` from
//! Debian's packages, with systemd as init and `hull-agent` as a systemd
//! service (`guest-image/systemd/hull-agent.service`), the same kernel
//! modules as the minimal image (indexed by `depmod`, loaded by kmod's
//! `modprobe`), and a manifest of the package versions that went in.

use std::path::Path;
use std::process::Command;

use crate::rootfs::{RootfsError, Tree};

#[derive(Debug, thiserror::Error)]
pub enum DistroError {
    #[error("cannot run {tool} ({hint}): {source}")]
    NoTool {
        tool: &'static str,
        hint: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
    #[error(transparent)]
    Stage(#[from] RootfsError),
}

/// What goes in besides Debian's required packages: the init, udev (it
/// loads the virtio drivers' modules), kmod, and tools for people in the
/// debug console.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "iproute2",
    "procps",
];

pub const UNIT: &str = include_str!("../systemd/hull-agent.service");

fn run(tool: &'static str, hint: &'static str, cmd: &mut Command) -> Result<String, DistroError> {
    let out = cmd
        .output()
        .map_err(|source| DistroError::NoTool { tool, hint, source })?;
    if !out.status.success() {
        return Err(DistroError::Failed {
            tool,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Debian `suite` (minbase and [`PACKAGES`]) as a tarball, from the
/// host's configured mirror.
pub fn bootstrap(suite: &str, tarball: &Path) -> Result<(), DistroError> {
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--quiet", "--variant=minbase", "--format=tar"])
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(suite)
        .arg(tarball);
    run("mmdebstrap", "install mmdebstrap", &mut cmd).map(drop)
}

/// Unpacks the bootstrap tarball (owners, modes, device nodes kept).
pub fn unpack(tarball: &Path, dir: &Path) -> Result<(), DistroError> {
    let mut cmd = Command::new("tar");
    cmd.args(["-x", "-p", "--numeric-owner", "-f"])
        .arg(tarball)
        .arg("-C")
        .arg(dir);
    run("tar", "install tar", &mut cmd).map(drop)
}

/// The agent and its unit (enabled), and what a read-only root needs:
/// tmpfs where systemd and the tools write, an empty machine-id (systemd
/// makes a transient one), no getty or logind (no dbus, no logins).
pub fn customize(tree: &Tree, agent: &[u8]) -> Result<(), DistroError> {
    tree.file("usr/bin/hull-agent", agent, 0o755)?;
    tree.file(
        "etc/systemd/system/hull-agent.service",
        UNIT.as_bytes(),
        0o644,
    )?;
    tree.symlink(
        "etc/systemd/system/multi-user.target.wants/hull-agent.service",
        "/etc/systemd/system/hull-agent.service",
    )?;
    tree.replace_symlink(
        "etc/systemd/system/default.target",
        "/lib/systemd/system/multi-user.target",
    )?;
    for unit in [
        "getty.target",
        "serial-getty@ttyS0.service",
        "systemd-logind.service",
        "apt-daily.timer",
        "apt-daily-upgrade.timer",
        "e2scrub_all.timer",
        "fstrim.timer",
    ] {
        tree.replace_symlink(&format!("etc/systemd/system/{unit}"), "/dev/null")?;
    }
    let fstab = "tmpfs /tmp tmpfs mode=1777 0 0\n\
                 tmpfs /var/tmp tmpfs mode=1777 0 0\n\
                 tmpfs /var/log tmpfs mode=0755 0 0\n\
                 tmpfs /var/lib/systemd tmpfs mode=0755 0 0\n";
    tree.file("etc/fstab", fstab.as_bytes(), 0o644)?;
    tree.file("etc/machine-id", b"", 0o444)?;
    tree.file("etc/hostname", b"hull\n", 0o644)?;
    Ok(())
}

/// kmod's indexes (`modules.dep.bin`, ...) for the staged modules.
pub fn depmod(root: &Path, version: &str) -> Result<(), DistroError> {
    let mut cmd = Command::new("depmod");
    cmd.arg("-b").arg(root).arg(version);
    run("depmod", "install kmod", &mut cmd).map(drop)
}

/// "package version" per installed package, sorted.
pub fn manifest(root: &Path) -> Result<String, DistroError> {
    let mut cmd = Command::new("dpkg-query");
    cmd.arg(format!(
        "--admindir={}",
        root.join("var/lib/dpkg").display()
    ))
    .args(["-W", "-f", "${Package} ${Version}\\n"]);
    let text = run("dpkg-query", "install dpkg", &mut cmd)?;
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    Ok(lines.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_is_an_enabled_service_and_the_root_can_be_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path()).unwrap();
        tree.symlink("etc/systemd/system/default.target", "graphical.target")
            .unwrap();
        customize(&tree, b"agent").unwrap();
        let root = dir.path();
        assert_eq!(
            std::fs::read(root.join("usr/bin/hull-agent")).unwrap(),
            b"agent"
        );
        let wants = root.join("etc/systemd/system/multi-user.target.wants/hull-agent.service");
        assert_eq!(
            std::fs::read_link(wants).unwrap(),
            Path::new("/etc/systemd/system/hull-agent.service")
        );
        let unit =
            std::fs::read_to_string(root.join("etc/systemd/system/hull-agent.service")).unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/hull-agent --guest-service"));
        assert_eq!(
            std::fs::read_link(root.join("etc/systemd/system/default.target")).unwrap(),
            Path::new("/lib/systemd/system/multi-user.target")
        );
        assert_eq!(
            std::fs::read_link(root.join("etc/systemd/system/systemd-logind.service")).unwrap(),
            Path::new("/dev/null")
        );
        let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
        assert!(fstab.contains("tmpfs /var/lib/systemd tmpfs"));
    }
}
