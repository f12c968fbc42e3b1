//! `start`'s two dialects. containerd 2.3 and later write a protobuf
//! `BootstrapParams` to stdin and read a `BootstrapResult` back; earlier
//! versions write the runtime options (a protobuf `Any`, or nothing) and
//! read the bare socket address.

use protobuf::Message;

#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/bootstrap/mod.rs"));
}
pub use generated::bootstrap::{BootstrapParams, BootstrapResult};

/// The task API version Hull serves (containerd.task.v2.Task).
const TASK_API_VERSION: i32 = 2;

#[derive(Debug, Clone, PartialEq)]
pub enum StartForm {
    /// containerd 2.3+: answered with a `BootstrapResult`.
    Bootstrap(Box<BootstrapParams>),
    /// containerd up to 2.2: answered with the address alone.
    Legacy,
}

impl StartForm {
    /// Which dialect `stdin` is. An `Any` of runtime options can parse as
    /// `BootstrapParams` too (its type URL lands in `instance_id`), so the
    /// parameters count only when they name the instance and namespace
    /// the command line names, as containerd's own shims decide.
    pub fn of(stdin: &[u8], id: &str, namespace: &str) -> StartForm {
        match BootstrapParams::parse_from_bytes(stdin) {
            Ok(p) if !stdin.is_empty() && p.instance_id == id && p.namespace == namespace => {
                StartForm::Bootstrap(Box::new(p))
            }
            _ => StartForm::Legacy,
        }
    }

    /// containerd's ttrpc address: the parameters' when given, else the
    /// environment's.
    pub fn ttrpc_address(&self) -> Option<String> {
        match self {
            StartForm::Bootstrap(p) if !p.containerd_ttrpc_address.is_empty() => {
                Some(p.containerd_ttrpc_address.clone())
            }
            _ => std::env::var("TTRPC_ADDRESS").ok(),
        }
    }

    /// The runtime options containerd gave `start`: the `Any` on stdin
    /// (before 2.3), or the parameters' extensions (2.3 and later).
    pub fn runtime_options(&self, stdin: &[u8]) -> Vec<protobuf::well_known_types::any::Any> {
        match self {
            StartForm::Bootstrap(p) => p
                .extensions
                .iter()
                .filter_map(|e| e.value.as_ref().cloned())
                .collect(),
            StartForm::Legacy => protobuf::well_known_types::any::Any::parse_from_bytes(stdin)
                .ok()
                .filter(|a| !a.type_url.is_empty())
                .into_iter()
                .collect(),
        }
    }

    /// What `start` writes to stdout for the daemon at `address`.
    pub fn answer(&self, address: &str) -> Result<Vec<u8>, protobuf::Error> {
        match self {
            StartForm::Legacy => Ok(address.as_bytes().to_vec()),
            StartForm::Bootstrap(_) => BootstrapResult {
                version: TASK_API_VERSION,
                address: address.into(),
                protocol: "ttrpc".into(),
                ..Default::default()
            }
            .write_to_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::well_known_types::any::Any;

    fn params(id: &str, ns: &str) -> Vec<u8> {
        BootstrapParams {
            instance_id: id.into(),
            namespace: ns.into(),
            containerd_version: "2.3.4".into(),
            containerd_ttrpc_address: "/run/c.sock.ttrpc".into(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap()
    }

    #[test]
    fn containerd_2_3_parameters_get_a_bootstrap_result() {
        let form = StartForm::of(&params("c1", "default"), "c1", "default");
        assert!(matches!(form, StartForm::Bootstrap(_)), "{form:?}");
        assert_eq!(form.ttrpc_address().as_deref(), Some("/run/c.sock.ttrpc"));
        let answer =
            BootstrapResult::parse_from_bytes(&form.answer("unix:///s/x").unwrap()).unwrap();
        assert_eq!(
            (
                answer.version,
                answer.address.as_str(),
                answer.protocol.as_str()
            ),
            (2, "unix:///s/x", "ttrpc")
        );
    }

    #[test]
    fn options_or_nothing_get_the_bare_address() {
        let options = Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: b"\x12\x05/etc/x".to_vec(),
            ..Default::default()
        }
        .write_to_bytes()
        .unwrap();
        for stdin in [&options[..], b""] {
            let form = StartForm::of(stdin, "c1", "default");
            assert_eq!(form.runtime_options(stdin).len(), stdin.len().min(1));
            assert_eq!(form, StartForm::Legacy);
            assert_eq!(form.answer("unix:///s/x").unwrap(), b"unix:///s/x");
        }
        // Parameters for another instance are not ours to answer.
        assert_eq!(
            StartForm::of(&params("other", "default"), "c1", "default"),
            StartForm::Legacy
        );
    }
}
