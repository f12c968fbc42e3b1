//! A container's place in a pod, from the annotations containerd's CRI
//! plugin (or CRI-O) puts in its spec. The pod's sandbox container boots
//! the VM; the pod's other containers join it; without annotations (ctr,
//! nerdctl) every container gets a VM of its own.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::errors::ShimError;

const CONTAINERD_TYPE: &str = "io.kubernetes.cri.container-type";
const CONTAINERD_SANDBOX: &str = "io.kubernetes.cri.sandbox-id";
const CRIO_TYPE: &str = "io.kubernetes.cri-o.ContainerType";
const CRIO_SANDBOX: &str = "io.kubernetes.cri-o.SandboxID";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// No pod: a VM of its own.
    Standalone,
    /// The pod's sandbox ("pause") container: boots the pod's VM.
    Sandbox,
    /// Another container of the pod `sandbox_id`: joins its VM.
    Member { sandbox_id: String },
}

impl Role {
    pub fn of(annotations: &HashMap<String, String>) -> Result<Role, ShimError> {
        let get = |a: &str, b: &str| annotations.get(a).or_else(|| annotations.get(b));
        let Some(kind) = get(CONTAINERD_TYPE, CRIO_TYPE) else {
            return Ok(Role::Standalone);
        };
        match kind.as_str() {
            "sandbox" => Ok(Role::Sandbox),
            "container" => {
                let sandbox_id =
                    get(CONTAINERD_SANDBOX, CRIO_SANDBOX).ok_or_else(|| ShimError::Invalid {
                        what: "annotations",
                        reason: format!(
                            "a pod container needs {CONTAINERD_SANDBOX} (or {CRIO_SANDBOX})"
                        ),
                    })?;
                Ok(Role::Member {
                    sandbox_id: sandbox_id.clone(),
                })
            }
            other => Err(ShimError::Invalid {
                what: "annotations",
                reason: format!("container type {other:?} is neither sandbox nor container"),
            }),
        }
    }

    /// The role of the container whose bundle is `bundle` (Standalone
    /// when its spec cannot be read: the create that follows says why).
    pub fn of_bundle(bundle: &Path) -> Role {
        Spec::load(bundle.join("config.json"))
            .ok()
            .and_then(|s| Role::of(&s.annotations().clone().unwrap_or_default()).ok())
            .unwrap_or(Role::Standalone)
    }

    /// The id that groups containers into one shim (and one VM).
    pub fn grouping(&self, container_id: &str) -> String {
        match self {
            Role::Member { sandbox_id } => sandbox_id.clone(),
            _ => container_id.to_string(),
        }
    }
}

/// The guest path under which the agent finds a container's namespaces
/// (it resolves it to the container's init): how a pod container joins
/// the namespaces of the pod's sandbox container inside the VM.
pub fn guest_ns_path(container_id: &str, typ: LinuxNamespaceType) -> String {
    let name = match typ {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
    };
    format!("{}{container_id}/ns/{name}", protocols::CONTAINER_NS_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::string_map as annotations;

    #[test]
    fn roles_from_containerd_and_cri_o_annotations() {
        assert_eq!(Role::of(&annotations(&[])).unwrap(), Role::Standalone);
        assert_eq!(
            Role::of(&annotations(&[
                (CONTAINERD_TYPE, "sandbox"),
                (CONTAINERD_SANDBOX, "p")
            ]))
            .unwrap(),
            Role::Sandbox
        );
        let member = Role::of(&annotations(&[
            (CRIO_TYPE, "container"),
            (CRIO_SANDBOX, "p"),
        ]))
        .unwrap();
        assert_eq!(
            member,
            Role::Member {
                sandbox_id: "p".into()
            }
        );
        assert_eq!(member.grouping("c"), "p");
        assert_eq!(Role::Sandbox.grouping("p"), "p");
    }

    #[test]
    fn a_member_without_its_sandbox_or_an_odd_type_is_named() {
        let err = Role::of(&annotations(&[(CONTAINERD_TYPE, "container")])).unwrap_err();
        assert!(err.to_string().contains(CONTAINERD_SANDBOX), "{err}");
        let err = Role::of(&annotations(&[(CONTAINERD_TYPE, "pod")])).unwrap_err();
        assert!(err.to_string().contains("\"pod\""), "{err}");
    }
}
