//! Agent errors and their ttrpc codes. Every error says what was wrong;
//! the code tells the host what kind of wrong it was.

use ttrpc::Code;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("container {0:?} not found")]
    ContainerNotFound(String),
    #[error("process {exec_id:?} of container {container_id:?} not found")]
    ProcessNotFound {
        container_id: String,
        exec_id: String,
    },
    #[error("container {0:?} already exists")]
    AlreadyExists(String),
    #[error("process {exec_id:?} already exists in container {container_id:?}")]
    ExecExists {
        container_id: String,
        exec_id: String,
    },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("container {id:?} is {state}: cannot {action}")]
    WrongState {
        id: String,
        state: &'static str,
        action: &'static str,
    },
    #[error("{stream} of {container_id:?}/{exec_id:?} is already attached")]
    StreamTaken {
        container_id: String,
        exec_id: String,
        stream: &'static str,
    },
    #[error("{stream} of process {exec_id:?}: end of stream")]
    EndOfStream {
        exec_id: String,
        stream: &'static str,
    },
    #[error(transparent)]
    Guest(#[from] crate::guest::GuestError),
    #[error(transparent)]
    CopyFile(#[from] crate::copy_file::CopyFileError),
    #[error(transparent)]
    Container(#[from] rustjail::container::ContainerError),
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
    #[error(transparent)]
    Network(#[from] crate::network::NetError),
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u32 },
    #[error("{op}: {source}")]
    Sys {
        op: String,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        AgentError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn sys(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let op = op.into();
        move |source| AgentError::Sys { op, source }
    }

    pub fn code(&self) -> Code {
        use rustjail::container::ContainerError as C;
        match self {
            AgentError::ContainerNotFound(_) | AgentError::ProcessNotFound { .. } => {
                Code::NOT_FOUND
            }
            AgentError::AlreadyExists(_)
            | AgentError::ExecExists { .. }
            | AgentError::StreamTaken { .. } => Code::ALREADY_EXISTS,
            AgentError::Invalid { .. } => Code::INVALID_ARGUMENT,
            AgentError::WrongState { .. } => Code::FAILED_PRECONDITION,
            // The spec asks for a field Hull does not implement.
            AgentError::Container(C::Unsupported(_)) => Code::INVALID_ARGUMENT,
            // The spec asked for something this guest cannot build.
            AgentError::Container(C::Init { .. } | C::Cgroup(_) | C::Hook(_) | C::Namespace(_)) => {
                Code::FAILED_PRECONDITION
            }
            AgentError::Container(_) | AgentError::Sys { .. } => Code::INTERNAL,
            AgentError::Storage(e) => e.code(),
            AgentError::Timeout { .. } => Code::DEADLINE_EXCEEDED,
            // gRPC's code for reading past the end of a file.
            AgentError::EndOfStream { .. } => Code::OUT_OF_RANGE,
            AgentError::Guest(e) => e.code(),
            AgentError::CopyFile(e) => e.code(),
            AgentError::Network(e) => e.code(),
        }
    }
}

impl From<AgentError> for ttrpc::Error {
    fn from(e: AgentError) -> Self {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_specific() {
        assert_eq!(
            AgentError::ContainerNotFound("x".into()).code(),
            Code::NOT_FOUND
        );
        assert_eq!(
            AgentError::AlreadyExists("x".into()).code(),
            Code::ALREADY_EXISTS
        );
        assert_eq!(
            AgentError::invalid("container_id", "empty").code(),
            Code::INVALID_ARGUMENT
        );
        let e = AgentError::WrongState {
            id: "x".into(),
            state: "running",
            action: "start",
        };
        assert_eq!(e.code(), Code::FAILED_PRECONDITION);
    }
}
