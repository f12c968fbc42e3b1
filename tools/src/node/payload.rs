//! The payload (what `scripts/payload.sh` gathers: `bin/`, `share/`,
//! `configuration.toml`, `VERSION`) and the version directories it is
//! installed into.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The files a payload must have, relative to it.
const FILES: &[&str] = &[
    "bin/containerd-shim-hull-v2",
    "bin/hull-check",
    "bin/hull-node",
    "bin/virtiofsd",
    "bin/vhost-device-vsock",
    "share/vmlinux",
    "share/initrd.img",
    "configuration.toml",
];

pub struct Version {
    pub name: String,
    pub dir: PathBuf,
}

/// Copies the payload into `ROOT/versions/NAME` (unless that version is
/// there already), its configuration pointing into that directory.
pub fn install(payload: &Path, root: &Path) -> Result<Version, String> {
    let name = version_name(payload)?;
    let versions = root.join("versions");
    let dir = versions.join(&name);
    if dir.is_dir() {
        return Ok(Version { name, dir });
    }
    let staging = versions.join(format!(".staging-{name}"));
    let _ = std::fs::remove_dir_all(&staging);
    for rel in FILES {
        let to = staging.join(rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::copy(payload.join(rel), &to).map_err(|e| format!("copy {rel}: {e}"))?;
    }
    let config = staging.join("configuration.toml");
    let text =
        std::fs::read_to_string(&config).map_err(|e| format!("{}: {e}", config.display()))?;
    std::fs::write(&config, point_into(&text, &dir)?)
        .map_err(|e| format!("{}: {e}", config.display()))?;
    std::fs::rename(&staging, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(Version { name, dir })
}

/// `VERSION-HASH`: the payload's declared version and the first 12 hex
/// digits of the SHA-256 of its files, so installing the same payload
/// twice is one version and any change is another.
fn version_name(payload: &Path) -> Result<String, String> {
    let mut hash = Sha256::new();
    for rel in FILES {
        let bytes = std::fs::read(payload.join(rel))
            .map_err(|e| format!("payload {}: {rel}: {e}", payload.display()))?;
        hash.update(rel.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    let declared =
        std::fs::read_to_string(payload.join("VERSION")).unwrap_or_else(|_| "hull".into());
    let declared: String = declared
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = hash.finalize();
    let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
    Ok(format!("{declared}-{hex}"))
}

/// The configuration with the shim's files taken from `dir`.
fn point_into(config: &str, dir: &Path) -> Result<String, String> {
    let mut value: toml::Table = config
        .parse()
        .map_err(|e| format!("payload configuration.toml: {e}"))?;
    let at = |rel: &str| toml::Value::String(dir.join(rel).display().to_string());
    for (table, key, rel) in [
        ("hypervisor", "kernel", "share/vmlinux"),
        ("hypervisor", "initrd", "share/initrd.img"),
        ("shared_fs", "virtiofsd", "bin/virtiofsd"),
        ("vsock", "vhost_device_vsock", "bin/vhost-device-vsock"),
    ] {
        let t = value
            .entry(table)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let t = t.as_table_mut().ok_or(format!(
            "payload configuration.toml: [{table}] is not a table"
        ))?;
        t.insert(key.to_string(), at(rel));
    }
    toml::to_string(&value).map_err(|e| e.to_string())
}

pub fn versions(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("versions"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

pub fn delete_version(root: &Path, name: &str) -> Result<(), String> {
    let dir = root.join("versions").join(name);
    std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// `ROOT/current` -> `versions/NAME`, replaced in one rename.
pub fn set_current(root: &Path, name: &str) -> Result<(), String> {
    let tmp = root.join(".current.new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(Path::new("versions").join(name), &tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, root.join("current")).map_err(|e| format!("{}: {e}", root.display()))
}

pub fn clear_current(root: &Path) -> Result<(), String> {
    match std::fs::remove_file(root.join("current")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("{}/current: {e}", root.display()))
        }
        _ => Ok(()),
    }
}

pub fn current(root: &Path) -> Option<String> {
    let target = std::fs::read_link(root.join("current")).ok()?;
    target.file_name()?.to_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_points_into_the_version() {
        let text = "log_level = \"info\"\n[hypervisor]\nkernel = \"/usr/local/share/hull/vmlinux\"\nvcpus = 1\n";
        let out = point_into(text, Path::new("/opt/hull/versions/v-1")).unwrap();
        let t: toml::Table = out.parse().unwrap();
        assert_eq!(
            t["hypervisor"]["kernel"].as_str(),
            Some("/opt/hull/versions/v-1/share/vmlinux")
        );
        assert_eq!(t["hypervisor"]["vcpus"].as_integer(), Some(1));
        assert_eq!(
            t["vsock"]["vhost_device_vsock"].as_str(),
            Some("/opt/hull/versions/v-1/bin/vhost-device-vsock")
        );
        assert!(point_into("hypervisor = 3", Path::new("/x"))
            .unwrap_err()
            .contains("[hypervisor]"));
    }
}
