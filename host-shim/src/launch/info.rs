//! `-v` and `-info`: what containerd 2.x asks of a runtime before using it.

use containerd_shim::protos::types::introspection::{RuntimeInfo, RuntimeVersion};
use protobuf::{Message, MessageField};

use super::LaunchError;

pub fn print_version() -> Result<(), LaunchError> {
    println!(
        "{}:\n  Version: {}",
        crate::RUNTIME_ID,
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}

/// The runtime's name and version as a protobuf `RuntimeInfo` on stdout.
/// containerd writes the runtime options to stdin; Hull's options change
/// nothing here, so they are read (bounded) and not used.
pub fn write_runtime_info() -> Result<(), LaunchError> {
    super::read_stdin()?;
    let info = RuntimeInfo {
        name: crate::RUNTIME_ID.into(),
        version: MessageField::some(RuntimeVersion {
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    super::answer(&info.write_to_bytes()?, "the runtime info")
}
