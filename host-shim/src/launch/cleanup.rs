//! `delete`: containerd's clean-up after a shim that died. Unmounts and
//! removes the task's state on the host, and answers the exit it records.

use containerd_shim::api::DeleteResponse;
use containerd_shim::Flags;
use protobuf::{Message, MessageField};

use super::LaunchError;

pub async fn run(flags: &Flags) -> Result<(), LaunchError> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(LaunchError::io("the bundle (cwd)"))?
    } else {
        flags.bundle.clone().into()
    };
    crate::service::cleanup_dead_shim(&flags.id, &bundle);
    let response = DeleteResponse {
        exit_status: 137,
        exited_at: MessageField::some(crate::task::now()),
        ..Default::default()
    };
    super::answer(&response.write_to_bytes()?, "the delete response")
}
