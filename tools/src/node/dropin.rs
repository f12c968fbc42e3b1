//! The runtime's registration: one drop-in file in the directory
//! containerd's configuration imports, checked against containerd's own
//! merged configuration before it is kept.
//!
//! containerd 2.x merges an imported file key by key, so the drop-in holds
//! Hull's runtime only. containerd 1.6 replaces a whole plugin section with
//! an imported one (containerd issue 5837): a drop-in holding only Hull's
//! runtime would silently drop the node's other runtimes and CRI settings.
//! There the drop-in carries the node's effective CRI section plus Hull's
//! runtime. Either way the merged configuration must equal the one before,
//! plus Hull's runtime, or the drop-in is taken back and nothing changes.

use std::path::{Path, PathBuf};
use std::process::Command;

use toml::{Table, Value};

use crate::NodeArgs;

const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_V3: &str = "io.containerd.cri.v1.runtime";

pub fn path(node: &NodeArgs) -> PathBuf {
    node.conf_d.join(format!("hull-{}.toml", node.runtime_name))
}

pub fn registered(node: &NodeArgs) -> Option<PathBuf> {
    let p = path(node);
    p.exists().then_some(p)
}

/// Writes the drop-in for `version_dir`; whether its content changed.
pub fn register(node: &NodeArgs, version_dir: &Path) -> Result<bool, String> {
    let file = path(node);
    let previous = std::fs::read_to_string(&file).ok();
    let version = config_version(node)?;
    let before = without_dropin(&file, || dump(node))?;
    let runtime = runtime_table(version_dir);
    let cri = if version >= 3 { CRI_V3 } else { CRI_V2 };
    let minimal = dropin(version, cri, Table::new(), &runtime, &node.runtime_name);
    let mut attempts = vec![minimal];
    if version == 2 {
        let section = before
            .get("plugins")
            .and_then(|p| p.get(CRI_V2))
            .and_then(Value::as_table)
            .cloned()
            .unwrap_or_default();
        attempts.push(dropin(version, cri, section, &runtime, &node.runtime_name));
    }
    let mut last_error = String::new();
    for text in attempts {
        write_atomically(&file, &text)?;
        match check_merge(node, &before, &runtime) {
            Ok(()) => return Ok(previous.as_deref() != Some(text.as_str())),
            Err(e) => last_error = e,
        }
    }
    match &previous {
        Some(text) => write_atomically(&file, text)?,
        None => {
            let _ = std::fs::remove_file(&file);
        }
    }
    Err(format!("{}: not kept: {last_error}", file.display()))
}

/// Removes the drop-in; whether there was one.
pub fn unregister(node: &NodeArgs) -> Result<bool, String> {
    match std::fs::remove_file(path(node)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(format!("{}: {e}", path(node).display())),
    }
}

/// The `version` of containerd's main configuration. A missing file is
/// containerd's defaults, whose version goes with containerd's own.
fn config_version(node: &NodeArgs) -> Result<i64, String> {
    let file = &node.containerd_config;
    match std::fs::read_to_string(file) {
        Ok(text) => {
            let t: Table = text
                .parse()
                .map_err(|e| format!("{}: {e}", file.display()))?;
            match t.get("version").and_then(Value::as_integer) {
                Some(v) if v >= 2 => Ok(v),
                _ => Err(format!(
                    "{}: a version 1 configuration (no `version = 2` or later) cannot import drop-ins; \
                     migrate it with `containerd config migrate`",
                    file.display()
                )),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dumped = dump(node)?;
            Ok(dumped
                .get("version")
                .and_then(Value::as_integer)
                .unwrap_or(2)
                .min(3))
        }
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

fn runtime_table(version_dir: &Path) -> Table {
    let mut options = Table::new();
    options.insert(
        "ConfigPath".into(),
        Value::String(version_dir.join("configuration.toml").display().to_string()),
    );
    let mut rt = Table::new();
    rt.insert(
        "runtime_type".into(),
        Value::String("io.containerd.hull.v2".into()),
    );
    rt.insert(
        "runtime_path".into(),
        Value::String(
            version_dir
                .join("bin/containerd-shim-hull-v2")
                .display()
                .to_string(),
        ),
    );
    rt.insert(
        "pod_annotations".into(),
        Value::Array(vec![Value::String("io.hull.config.*".into())]),
    );
    // A privileged container in a VM gets the VM's devices, never the host's.
    rt.insert(
        "privileged_without_host_devices".into(),
        Value::Boolean(true),
    );
    rt.insert("options".into(), Value::Table(options));
    rt
}

/// A drop-in: `section` (the CRI plugin's tables to carry) with Hull's
/// runtime added.
fn dropin(version: i64, cri: &str, mut section: Table, runtime: &Table, name: &str) -> String {
    let containerd = section
        .entry("containerd")
        .or_insert_with(|| Value::Table(Table::new()));
    if let Some(containerd) = containerd.as_table_mut() {
        let runtimes = containerd
            .entry("runtimes")
            .or_insert_with(|| Value::Table(Table::new()));
        if let Some(runtimes) = runtimes.as_table_mut() {
            runtimes.insert(name.into(), Value::Table(runtime.clone()));
        }
    }
    let mut plugins = Table::new();
    plugins.insert(cri.into(), Value::Table(section));
    let mut top = Table::new();
    top.insert("version".into(), Value::Integer(version));
    top.insert("plugins".into(), Value::Table(plugins));
    format!(
        "# Written by hull-node: registers the Hull runtime. Removed by `hull-node remove`.\n{}",
        toml::to_string(&top).unwrap_or_default()
    )
}

/// The merged configuration must hold Hull's runtime and, without it, be
/// the configuration from before.
fn check_merge(node: &NodeArgs, before: &Table, runtime: &Table) -> Result<(), String> {
    let after = dump(node)?;
    // containerd 2.x dumps its configuration migrated to its own version.
    let cri = if after.get("version").and_then(Value::as_integer) >= Some(3) {
        CRI_V3
    } else {
        CRI_V2
    };
    let got = runtimes(&after, cri)
        .and_then(|r| r.get(&node.runtime_name))
        .cloned();
    let path = runtime.get("runtime_path");
    if got.as_ref().and_then(|r| r.get("runtime_path")) != path {
        return Err(format!(
            "containerd does not import it; add `imports = [\"{}/*.toml\"]` to {}",
            node.conf_d.display(),
            node.containerd_config.display()
        ));
    }
    let (mut a, mut b) = (after, before.clone());
    for t in [&mut a, &mut b] {
        t.remove("imports");
        if let Some(r) = runtimes_mut(t, cri) {
            r.remove(&node.runtime_name);
        }
    }
    match first_difference(&Value::Table(b), &Value::Table(a), "") {
        None => Ok(()),
        Some(key) => Err(format!(
            "it would change containerd's configuration at {key}"
        )),
    }
}

fn runtimes<'a>(t: &'a Table, cri: &str) -> Option<&'a Table> {
    t.get("plugins")?
        .get(cri)?
        .get("containerd")?
        .get("runtimes")?
        .as_table()
}

fn runtimes_mut<'a>(t: &'a mut Table, cri: &str) -> Option<&'a mut Table> {
    t.get_mut("plugins")?
        .get_mut(cri)?
        .get_mut("containerd")?
        .get_mut("runtimes")?
        .as_table_mut()
}

/// The first key (dotted) where `a` and `b` differ.
fn first_difference(a: &Value, b: &Value, at: &str) -> Option<String> {
    match (a, b) {
        (Value::Table(x), Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let here = if at.is_empty() {
                    k.to_string()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(v), Some(w)) => first_difference(v, w, &here),
                    _ => Some(here),
                }
            })
        }
        _ => (a != b).then(|| at.to_string()),
    }
}

/// containerd's merged configuration (`containerd --config FILE config dump`).
fn dump(node: &NodeArgs) -> Result<Table, String> {
    let out = Command::new(&node.containerd)
        .arg("--config")
        .arg(&node.containerd_config)
        .args(["config", "dump"])
        .output()
        .map_err(|e| format!("{}: {e}", node.containerd.display()))?;
    if !out.status.success() {
        return Err(format!(
            "containerd config dump: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .parse()
        .map_err(|e| format!("containerd config dump: {e}"))
}

/// Runs `f` with `file` moved out of containerd's sight (an upgrade
/// compares against the configuration without the old drop-in).
fn without_dropin<T>(file: &Path, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let aside = file.with_extension("toml.hull-aside");
    let moved = std::fs::rename(file, &aside).is_ok();
    let result = f();
    if moved {
        std::fs::rename(&aside, file).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    result
}

fn write_atomically(file: &Path, text: &str) -> Result<(), String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = file.with_extension("toml.hull-new");
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, file).map_err(|e| format!("{}: {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_named_by_their_key() {
        let a: Table = "x = 1\n[p.cri]\nsandbox_image = \"a\"\n".parse().unwrap();
        let b: Table = "x = 1\n[p.cri]\nsandbox_image = \"b\"\n".parse().unwrap();
        let c: Table = "x = 1\n[p]\n".parse().unwrap();
        let (a, b, c) = (Value::Table(a), Value::Table(b), Value::Table(c));
        assert_eq!(first_difference(&a, &a, ""), None);
        assert_eq!(
            first_difference(&a, &b, "").as_deref(),
            Some("p.cri.sandbox_image")
        );
        assert_eq!(first_difference(&a, &c, "").as_deref(), Some("p.cri"));
    }

    #[test]
    fn a_dropin_adds_the_runtime_to_the_section_it_carries() {
        let section: Table =
            "sandbox_image = \"pause\"\n[containerd.runtimes.runc]\nruntime_type = \"r\"\n"
                .parse()
                .unwrap();
        let text = dropin(
            2,
            CRI_V2,
            section,
            &runtime_table(Path::new("/opt/hull/versions/v")),
            "hull",
        );
        let t: Table = text.parse().unwrap();
        let rts = runtimes(&t, CRI_V2).unwrap();
        assert!(rts.contains_key("runc") && rts.contains_key("hull"));
        assert_eq!(
            rts["hull"]["runtime_path"].as_str(),
            Some("/opt/hull/versions/v/bin/containerd-shim-hull-v2")
        );
        assert_eq!(t["version"].as_integer(), Some(2));
    }
}
