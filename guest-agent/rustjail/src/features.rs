//! What rustjail supports, as the OCI runtime features document
//! (`runc features`) states it.

use serde_json::{json, Value};

/// Mount options [`crate::mounts::parse_options`] understands.
fn mount_options() -> Vec<&'static str> {
    crate::mounts::known_options().collect()
}

/// The features document.
pub fn document() -> Value {
    let caps: Vec<String> = capctl::Cap::iter()
        .map(|c| format!("CAP_{}", format!("{c:?}").to_uppercase()))
        .collect();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.2.0",
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": mount_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts"],
            "capabilities": caps,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false},
            "seccomp": {
                "enabled": true,
                "actions": [
                    "SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS",
                    "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRACE", "SCMP_ACT_TRAP"
                ],
                "operators": [
                    "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE", "SCMP_CMP_LT",
                    "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"
                ],
                "archs": [crate::seccomp::native_arch_name()],
                "knownFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
                ],
                "supportedFlags": [
                    "SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG",
                    "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
                ]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false}
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_parses_as_oci_features() {
        let doc = super::document();
        let f: oci_spec::runtime::Features = serde_json::from_value(doc).unwrap();
        let linux = f.linux().as_ref().unwrap();
        assert!(linux
            .capabilities()
            .as_ref()
            .unwrap()
            .iter()
            .any(|c| c == "CAP_SYS_ADMIN"));
        assert!(f
            .mount_options()
            .as_ref()
            .unwrap()
            .iter()
            .any(|o| o == "nosuid"));
    }
}
