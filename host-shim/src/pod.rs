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
        bundle_spec(bundle)
            .map(|s| Role::of_spec(&s))
            .unwrap_or(Role::Standalone)
    }

    /// The role `spec`'s annotations give (Standalone when they are bad:
    /// the create that follows says why).
    pub fn of_spec(spec: &Spec) -> Role {
        Role::of(&spec.annotations().clone().unwrap_or_default()).unwrap_or(Role::Standalone)
    }

    /// The pod network namespace on the host that the container's VM was
    /// wired to (`spec`'s network namespace path), for a container that
    /// boots a VM; none for a pod's other containers.
    pub fn host_netns(&self, spec: &Spec) -> Option<std::path::PathBuf> {
        if matches!(self, Role::Member { .. }) {
            return None;
        }
        spec.linux()
            .as_ref()?
            .namespaces()
            .as_ref()?
            .iter()
            .find(|n| n.typ() == LinuxNamespaceType::Network)?
            .path()
            .clone()
    }

    /// The id that groups containers into one shim (and one VM).
    pub fn grouping(&self, container_id: &str) -> String {
        match self {
            Role::Member { sandbox_id } => sandbox_id.clone(),
            _ => container_id.to_string(),
        }
    }
}

/// The spec in `bundle`, if it can be read.
pub fn bundle_spec(bundle: &Path) -> Option<Spec> {
    Spec::load(bundle.join("config.json")).ok()
}

/// The type CRI gives CreateSandbox's options (`runtime.v1.PodSandboxConfig`)
/// and the fields Hull reads: `hostname` and `dns_config` (`DNSConfig`:
/// servers, searches, options).
const POD_CONFIG: &str = "PodSandboxConfig";
const POD_HOSTNAME_FIELD: u32 = 2;
const POD_DNS_FIELD: u32 = 4;
const DNS_SERVERS: u32 = 1;
const DNS_SEARCHES: u32 = 2;
const DNS_OPTIONS: u32 = 3;

/// What a pod made through the sandbox API gets from CRI's pod config.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub hostname: String,
    /// resolv.conf's lines (`nameserver`, `search`, `options`).
    pub dns: Vec<String>,
}

/// The pod's hostname and DNS from CreateSandbox's options (CRI's pod
/// config); empty when the options are not a pod config.
pub fn pod_identity(
    options: Option<&protobuf::well_known_types::any::Any>,
) -> Result<PodIdentity, ShimError> {
    let Some(any) = options.filter(|a| a.type_url.ends_with(POD_CONFIG)) else {
        return Ok(PodIdentity::default());
    };
    let what = "pod config";
    let hostname =
        crate::options::string_field(&any.value, POD_HOSTNAME_FIELD, what)?.unwrap_or_default();
    let mut dns = Vec::new();
    if let Some(config) = crate::options::bytes_fields(&any.value, POD_DNS_FIELD, what)?.pop() {
        let list = |field| crate::options::string_fields(&config, field, what);
        dns.extend(
            list(DNS_SERVERS)?
                .into_iter()
                .map(|s| format!("nameserver {s}")),
        );
        let searches = list(DNS_SEARCHES)?;
        if !searches.is_empty() {
            dns.push(format!("search {}", searches.join(" ")));
        }
        let options = list(DNS_OPTIONS)?;
        if !options.is_empty() {
            dns.push(format!("options {}", options.join(" ")));
        }
    }
    if let Some(bad) = dns.iter().chain([&hostname]).find(|l| l.contains('\n')) {
        return Err(ShimError::Invalid {
            what,
            reason: format!("{bad:?} spans lines"),
        });
    }
    Ok(PodIdentity { hostname, dns })
}

/// The pod's files the agent wrote (`protocols::POD_FILES_DIR`) bound into
/// a container of a pod made through the sandbox API, where its spec has
/// none of its own: CRI binds a sandbox container's files only.
pub fn bind_pod_files(spec: &mut Spec) -> Result<(), ShimError> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for name in ["hosts", "hostname", "resolv.conf"] {
        let target = Path::new("/etc").join(name);
        if mounts.iter().any(|m| m.destination() == &target) {
            continue;
        }
        let mount = oci_spec::runtime::MountBuilder::default()
            .destination(target)
            .typ("bind")
            .source(Path::new(protocols::POD_FILES_DIR).join(name))
            .options(vec!["rbind".to_string(), "rw".to_string()])
            .build()
            .map_err(|e| ShimError::Invalid {
                what: "mounts",
                reason: e.to_string(),
            })?;
        mounts.push(mount);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
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
    fn identity_comes_from_a_cri_pod_config_only() {
        use protobuf::well_known_types::any::Any;
        // PodSandboxConfig { metadata (1): {..}, hostname (2): "web-0",
        //   dns_config (4): { servers: "10.0.0.53", searches: "a.test" } }
        let dns = [&[0x0a, 0x09][..], b"10.0.0.53", &[0x12, 0x06], b"a.test"].concat();
        let value = [
            &[0x0a, 0x02, 0x0a, 0x00][..],
            &[0x12, 0x05],
            b"web-0",
            &[0x22, dns.len() as u8],
            &dns,
        ]
        .concat();
        let pod = Any {
            type_url: "runtime.v1.PodSandboxConfig".into(),
            value: value.clone(),
            ..Default::default()
        };
        assert_eq!(
            pod_identity(Some(&pod)).unwrap(),
            PodIdentity {
                hostname: "web-0".into(),
                dns: vec!["nameserver 10.0.0.53".into(), "search a.test".into()],
            }
        );
        let other = Any {
            type_url: "example.Other".into(),
            value,
            ..Default::default()
        };
        assert_eq!(pod_identity(Some(&other)).unwrap(), PodIdentity::default());
        assert_eq!(pod_identity(None).unwrap(), PodIdentity::default());
        let torn = Any {
            type_url: "runtime.v1.PodSandboxConfig".into(),
            value: vec![0x12, 0x09, b'w'],
            ..Default::default()
        };
        let err = pod_identity(Some(&torn)).unwrap_err();
        assert!(err.to_string().contains("pod config"), "{err}");
    }

    #[test]
    fn a_member_without_its_sandbox_or_an_odd_type_is_named() {
        let err = Role::of(&annotations(&[(CONTAINERD_TYPE, "container")])).unwrap_err();
        assert!(err.to_string().contains(CONTAINERD_SANDBOX), "{err}");
        let err = Role::of(&annotations(&[(CONTAINERD_TYPE, "pod")])).unwrap_err();
        assert!(err.to_string().contains("\"pod\""), "{err}");
    }
}
