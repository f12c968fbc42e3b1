//! A guest booted from a rootfs image: which device carries it, and the
//! dm-verity parameters its small initrd checks it with. hull-image writes
//! [`Verity`] next to the image (`<image>.verity`, JSON); the shim reads it
//! and passes it on the kernel command line; the agent in the initrd
//! parses it from there.

use serde::{Deserialize, Serialize};

/// Kernel command-line key naming the root device (`pmem` or `blk`).
pub const ROOT_PARAM: &str = "hull.root";
/// Kernel command-line key with the verity parameters ([`Verity::to_param`]).
pub const VERITY_PARAM: &str = "hull.verity";
/// The sidecar file hull-image writes next to an image.
pub const VERITY_SUFFIX: &str = "verity";
/// Data and hash block size of every Hull image.
pub const BLOCK_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RootImageError {
    #[error(
        "{VERITY_PARAM}: expected <data blocks>,<hash start block>,<root hash>,<salt>, got {0:?}"
    )]
    Malformed(String),
    #[error("{VERITY_PARAM}: {field} {value:?} is not {what}")]
    Field {
        field: &'static str,
        value: String,
        what: &'static str,
    },
}

/// The device the image reaches the guest as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootDevice {
    /// virtio-pmem: the image file mapped into the guest (DAX-capable).
    Pmem,
    /// virtio-blk, read-only.
    Blk,
}

impl RootDevice {
    pub fn name(self) -> &'static str {
        match self {
            RootDevice::Pmem => "pmem",
            RootDevice::Blk => "blk",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pmem" => Some(RootDevice::Pmem),
            "blk" => Some(RootDevice::Blk),
            _ => None,
        }
    }
}

/// dm-verity (format 1, sha256, 4 KiB blocks) over an image whose hash
/// tree follows its data in the same file, without a verity superblock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verity {
    pub data_blocks: u64,
    pub hash_start_block: u64,
    pub root_hash: String,
    pub salt: String,
}

fn is_hex(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Verity {
    /// The value of [`VERITY_PARAM`].
    pub fn to_param(&self) -> String {
        format!(
            "{},{},{},{}",
            self.data_blocks, self.hash_start_block, self.root_hash, self.salt
        )
    }

    pub fn from_param(value: &str) -> Result<Self, RootImageError> {
        let parts: Vec<&str> = value.split(',').collect();
        let [blocks, start, root, salt] = parts[..] else {
            return Err(RootImageError::Malformed(value.into()));
        };
        let number = |field, v: &str| {
            v.parse::<u64>().map_err(|_| RootImageError::Field {
                field,
                value: v.into(),
                what: "a block count",
            })
        };
        let v = Verity {
            data_blocks: number("data blocks", blocks)?,
            hash_start_block: number("hash start block", start)?,
            root_hash: root.into(),
            salt: salt.into(),
        };
        v.check()?;
        Ok(v)
    }

    /// Hex of the right lengths, and the hash tree after the data.
    pub fn check(&self) -> Result<(), RootImageError> {
        let field = |field, value: &str, what| RootImageError::Field {
            field,
            value: value.into(),
            what,
        };
        if !is_hex(&self.root_hash, 64..=64) {
            return Err(field("root hash", &self.root_hash, "64 hex digits"));
        }
        if !is_hex(&self.salt, 0..=512) || !self.salt.len().is_multiple_of(2) {
            return Err(field("salt", &self.salt, "hex bytes"));
        }
        if self.data_blocks == 0 || self.hash_start_block < self.data_blocks {
            return Err(field(
                "hash start block",
                &self.hash_start_block.to_string(),
                "after the data",
            ));
        }
        Ok(())
    }

    /// The dm-verity table line for `device` (both data and hashes on it).
    pub fn table(&self, device: &str) -> String {
        format!(
            "verity 1 {device} {device} {BLOCK_SIZE} {BLOCK_SIZE} {} {} sha256 {} {}",
            self.data_blocks, self.hash_start_block, self.root_hash, self.salt
        )
    }

    /// Sectors (512 bytes) of the verified device.
    pub fn sectors(&self) -> u64 {
        self.data_blocks * (BLOCK_SIZE / 512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Verity {
        Verity {
            data_blocks: 10,
            hash_start_block: 10,
            root_hash: "ab".repeat(32),
            salt: "00ff".into(),
        }
    }

    #[test]
    fn the_param_round_trips() {
        let v = sample();
        assert_eq!(Verity::from_param(&v.to_param()), Ok(v));
    }

    #[test]
    fn bad_params_name_what_is_wrong() {
        let e = Verity::from_param("10,10,xyz,00").unwrap_err();
        assert!(e.to_string().contains("root hash"), "{e}");
        let e = Verity::from_param(&format!("10,2,{},00", "ab".repeat(32))).unwrap_err();
        assert!(e.to_string().contains("after the data"), "{e}");
        let e = Verity::from_param("10,10").unwrap_err();
        assert!(matches!(e, RootImageError::Malformed(_)));
    }

    #[test]
    fn the_table_names_the_device_twice() {
        let t = sample().table("/dev/pmem0");
        assert!(t.starts_with("verity 1 /dev/pmem0 /dev/pmem0 4096 4096 10 10 sha256 "));
        assert_eq!(sample().sectors(), 80);
    }
}
