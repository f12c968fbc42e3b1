//! What a task's OCI annotations may change about its VM: keys on the
//! configuration's allowlist (`io.hull.config.<key>`), and the sandbox size
//! containerd's CRI plugin announces for a pod.

use std::collections::HashMap;

use crate::config::HullConfig;
use crate::errors::ShimError;

/// Hull's own annotations: `io.hull.config.<key>=<value>`.
pub const PREFIX: &str = "io.hull.config.";
/// The configuration keys an annotation can name at all.
pub const OVERRIDABLE: [&str; 3] = [
    "hypervisor.vcpus",
    "hypervisor.memory_mib",
    "hypervisor.kernel_params",
];
/// containerd CRI's pod sizing (added to the configured VM size).
const SANDBOX_MEMORY: &str = "io.kubernetes.cri.sandbox-memory";
const SANDBOX_CPU_QUOTA: &str = "io.kubernetes.cri.sandbox-cpu-quota";
const SANDBOX_CPU_PERIOD: &str = "io.kubernetes.cri.sandbox-cpu-period";

fn invalid(reason: String) -> ShimError {
    ShimError::Invalid {
        what: "annotations",
        reason,
    }
}

fn number<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ShimError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{name}={value:?} is not a number")))
}

/// Applies the annotations to `cfg`; anything Hull's that it cannot apply
/// fails with the annotation's name. Returns what was changed, for the log.
pub fn apply(
    cfg: &mut HullConfig,
    annotations: &HashMap<String, String>,
) -> Result<Vec<String>, ShimError> {
    let mut applied = Vec::new();
    let mut names: Vec<_> = annotations
        .keys()
        .filter(|k| k.starts_with(PREFIX))
        .collect();
    names.sort();
    for name in names {
        let value = &annotations[name];
        let key = &name[PREFIX.len()..];
        if !OVERRIDABLE.contains(&key) {
            return Err(invalid(format!(
                "unknown Hull annotation {name:?} (keys that can be overridden: {})",
                OVERRIDABLE.join(", ")
            )));
        }
        if !cfg.annotation_allowlist.iter().any(|k| k == key) {
            return Err(invalid(format!(
                "annotation {name:?} overrides {key}, which annotation_allowlist in {} does not allow",
                cfg.source.display()
            )));
        }
        match key {
            "hypervisor.vcpus" => cfg.hypervisor.vcpus = number(name, value)?,
            "hypervisor.memory_mib" => cfg.hypervisor.memory_mib = number(name, value)?,
            _ => cfg.hypervisor.kernel_params = value.clone(),
        }
        applied.push(format!("{key}={value}"));
    }
    if let Some(bytes) = annotations.get(SANDBOX_MEMORY) {
        let bytes: u64 = number(SANDBOX_MEMORY, bytes)?;
        let mib = u32::try_from(bytes.div_ceil(1 << 20))
            .map_err(|_| invalid(format!("{SANDBOX_MEMORY}={bytes} is too large")))?;
        cfg.hypervisor.memory_mib = cfg.hypervisor.memory_mib.saturating_add(mib);
        applied.push(format!("pod memory +{mib} MiB"));
    }
    if let (Some(q), Some(p)) = (
        annotations.get(SANDBOX_CPU_QUOTA),
        annotations.get(SANDBOX_CPU_PERIOD),
    ) {
        let (quota, period): (i64, u64) = (
            number(SANDBOX_CPU_QUOTA, q)?,
            number(SANDBOX_CPU_PERIOD, p)?,
        );
        if quota > 0 && period > 0 {
            let cpus = (quota as u64).div_ceil(period) as u32;
            cfg.hypervisor.vcpus = cfg.hypervisor.vcpus.saturating_add(cpus);
            applied.push(format!("pod CPUs +{cpus}"));
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::string_map as annotations;

    fn config(allow: &[&str]) -> HullConfig {
        let mut cfg: HullConfig =
            toml::from_str(include_str!("../../config/configuration.toml")).unwrap();
        cfg.annotation_allowlist = allow.iter().map(|s| s.to_string()).collect();
        cfg.source = "/etc/hull/configuration.toml".into();
        cfg
    }

    #[test]
    fn allowlisted_keys_apply() {
        let mut cfg = config(&["hypervisor.memory_mib"]);
        let applied = apply(
            &mut cfg,
            &annotations(&[
                ("io.hull.config.hypervisor.memory_mib", "1024"),
                ("other", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.hypervisor.memory_mib, 1024);
        assert_eq!(applied, ["hypervisor.memory_mib=1024"]);
    }

    #[test]
    fn keys_off_the_allowlist_are_refused_with_their_names() {
        let mut cfg = config(&[]);
        let err = apply(
            &mut cfg,
            &annotations(&[("io.hull.config.hypervisor.vcpus", "4")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("io.hull.config.hypervisor.vcpus") && err.contains("annotation_allowlist"),
            "{err}"
        );
        let err = apply(
            &mut cfg,
            &annotations(&[("io.hull.config.hypervisor.path", "/bin/sh")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown Hull annotation"), "{err}");
        let mut cfg = config(&["hypervisor.vcpus"]);
        let err = apply(
            &mut cfg,
            &annotations(&[("io.hull.config.hypervisor.vcpus", "many")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("not a number"), "{err}");
    }

    #[test]
    fn pod_size_is_added_to_the_configured_vm() {
        let mut cfg = config(&[]);
        let (mem, cpus) = (cfg.hypervisor.memory_mib, cfg.hypervisor.vcpus);
        apply(
            &mut cfg,
            &annotations(&[
                (SANDBOX_MEMORY, "268435456"),
                (SANDBOX_CPU_QUOTA, "150000"),
                (SANDBOX_CPU_PERIOD, "100000"),
            ]),
        )
        .unwrap();
        assert_eq!(cfg.hypervisor.memory_mib, mem + 256);
        assert_eq!(cfg.hypervisor.vcpus, cpus + 2);
    }
}
