//! Shim errors and the ttrpc code each maps to: the code says what kind of
//! wrong it is, the message says what exactly.

use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0} is not implemented by Hull")]
    Unimplemented(&'static str),
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    #[error(transparent)]
    Connect(#[from] crate::agent::ConnectError),
    #[error("agent {op}: {source}")]
    Agent {
        op: &'static str,
        #[source]
        source: ttrpc::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Vsock(#[from] crate::vsock::VsockError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error("{op}: {source}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("NIC hot-plug into the VM taken from hull-cache: {0}")]
    Hotplug(String),
}

impl ShimError {
    pub fn agent(op: &'static str) -> impl FnOnce(ttrpc::Error) -> Self {
        move |source| ShimError::Agent { op, source }
    }

    pub fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let op = op.into();
        move |source| ShimError::Io { op, source }
    }

    pub fn code(&self) -> Code {
        use crate::config::ConfigError as C;
        use crate::vm::VmError as V;
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::Invalid { .. } => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            // The agent already chose the code; pass it through.
            ShimError::Agent {
                source: ttrpc::Error::RpcStatus(s),
                ..
            } => s.code(),
            ShimError::Agent { .. } | ShimError::Vsock(_) | ShimError::Connect(_) => {
                Code::UNAVAILABLE
            }
            // A missing kernel, image or helper is a host set-up problem.
            ShimError::Config(C::Missing { .. } | C::Invalid { .. } | C::Parse { .. })
            | ShimError::Vm(V::Config(_) | V::Accel(_)) => Code::FAILED_PRECONDITION,
            ShimError::Config(C::Read { .. }) => Code::FAILED_PRECONDITION,
            ShimError::Vm(_) | ShimError::Io { .. } | ShimError::Hotplug(_) => Code::INTERNAL,
            // The pod's namespace is not what CNI should have left.
            ShimError::Network(_) => Code::FAILED_PRECONDITION,
        }
    }
}

/// containerd's task service runs on the shim crate's ttrpc, a different
/// release from the agent client's; codes are the same gRPC numbers.
impl From<ShimError> for containerd_shim::protos::ttrpc::Error {
    fn from(e: ShimError) -> Self {
        use containerd_shim::protos::protobuf::Enum;
        use containerd_shim::protos::ttrpc as server;
        let code = server::Code::from_i32(e.code() as i32).unwrap_or(server::Code::UNKNOWN);
        server::Error::RpcStatus(server::get_status(code, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_codes_pass_through() {
        let status = ttrpc::get_status(Code::NOT_FOUND, "container \"x\" not found");
        let e = ShimError::Agent {
            op: "wait",
            source: ttrpc::Error::RpcStatus(status),
        };
        assert_eq!(e.code(), Code::NOT_FOUND);
    }

    #[test]
    fn missing_kernel_is_failed_precondition() {
        let e = ShimError::Config(crate::config::ConfigError::Missing {
            what: "guest kernel",
            value: "/x".into(),
            key: "hypervisor.kernel",
            path: "/etc/hull/configuration.toml".into(),
        });
        assert_eq!(e.code(), Code::FAILED_PRECONDITION);
        assert!(e.to_string().contains("hypervisor.kernel"));
    }
}
