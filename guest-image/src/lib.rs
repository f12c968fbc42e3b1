//! Building Hull's guest: an uncompressed kernel (`vmlinux`, booted through
//! its PVH entry) and an uncompressed initrd whose `/init` is the agent.
//! Output depends only on the inputs: two builds are byte-identical.

pub mod cpio;
pub mod distro;
pub mod kernel;
pub mod modules;
pub mod rootfs;
pub mod verity;
