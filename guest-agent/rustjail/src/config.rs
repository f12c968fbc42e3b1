//! What the container init is told to build.

use std::path::PathBuf;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

/// The init process's instructions, sent as the first channel message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub container_id: String,
    pub spec: Spec,
    /// Absolute path of the root filesystem, already resolved against the bundle.
    pub rootfs: PathBuf,
}
