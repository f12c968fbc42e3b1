//! Spec fields rustjail does not implement. A container asking for one is
//! refused with the field's name rather than created without it.

use oci_spec::runtime::Spec;

#[derive(Debug, thiserror::Error)]
#[error("{} not supported by this runtime; remove {} from the spec", .0.join(", "), if .0.len() == 1 { "it" } else { "them" })]
pub struct Unsupported(pub Vec<String>);

/// Every field of `spec` set to something rustjail cannot do.
pub fn check(spec: &Spec) -> Result<(), Unsupported> {
    let mut found = Vec::new();
    let mut note = |set: bool, field: &str| {
        if set {
            found.push(field.to_string());
        }
    };
    if let Some(l) = spec.linux() {
        note(l.intel_rdt().is_some(), "linux.intelRdt");
        note(
            l.net_devices().as_ref().is_some_and(|d| !d.is_empty()),
            "linux.netDevices",
        );
        note(l.memory_policy().is_some(), "linux.memoryPolicy");
        let label = l.mount_label().as_deref().is_some_and(|s| !s.is_empty());
        note(label, "linux.mountLabel (SELinux is not enabled)");
        let rdma = l.resources().as_ref().and_then(|r| r.rdma().as_ref());
        note(rdma.is_some_and(|r| !r.is_empty()), "linux.resources.rdma");
    }
    if let Some(p) = spec.process() {
        note(p.exec_cpu_affinity().is_some(), "process.execCPUAffinity");
    }
    for m in spec.mounts().iter().flatten() {
        let idmapped = m.uid_mappings().is_some() || m.gid_mappings().is_some();
        note(
            idmapped,
            &format!("idmapped mount {}", m.destination().display()),
        );
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(Unsupported(found))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unsupported_field_is_named() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion": "1.2.0",
                "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": ["true"],
                            "execCPUAffinity": {"initial": "0"}},
                "mounts": [{"destination": "/m", "type": "bind", "source": "/x",
                            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}],
                "linux": {"intelRdt": {"closID": "c"}, "mountLabel": "system_u:x",
                          "resources": {"rdma": {"mlx5_1": {"hcaHandles": 3}}}}}"#,
        )
        .unwrap();
        let err = check(&spec).unwrap_err().to_string();
        for field in [
            "linux.intelRdt",
            "linux.mountLabel",
            "linux.resources.rdma",
            "process.execCPUAffinity",
            "idmapped mount /m",
        ] {
            assert!(err.contains(field), "{field} missing from: {err}");
        }
        assert!(err.ends_with("remove them from the spec"), "{err}");
    }

    #[test]
    fn a_plain_spec_passes() {
        check(&Spec::default()).unwrap();
    }
}
