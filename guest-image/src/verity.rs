//! The image's dm-verity hash tree, appended to the image by `veritysetup`
//! (no superblock: the parameters go to the guest on the kernel command
//! line from the `.verity` file), and the file padded for the pmem device.

use std::path::Path;
use std::process::Command;

use protocols::root_image::{Verity, BLOCK_SIZE};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum VerityError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: size is not a whole number of 4 KiB blocks")]
    Unaligned(String),
    #[error("cannot run veritysetup (install cryptsetup-bin): {0}")]
    NoVeritysetup(std::io::Error),
    #[error("veritysetup format failed: {0}")]
    Format(String),
    #[error("veritysetup printed no root hash: {0:?}")]
    NoRootHash(String),
    #[error(transparent)]
    Params(#[from] protocols::root_image::RootImageError),
}

/// virtio-pmem maps the file in whole 2 MiB pages.
pub const PMEM_ALIGN: u64 = 2 << 20;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VerityError {
    let path = path.display().to_string();
    move |source| VerityError::Io { path, source }
}

/// Appends the hash tree to `image` (whole blocks of data) and pads it to
/// [`PMEM_ALIGN`]. The salt is the data's sha256, so it is fixed by the
/// content and differs between images.
pub fn append_hash_tree(image: &Path) -> Result<Verity, VerityError> {
    let data = std::fs::read(image).map_err(io_err(image))?;
    let size = data.len() as u64;
    if size == 0 || !size.is_multiple_of(BLOCK_SIZE) {
        return Err(VerityError::Unaligned(image.display().to_string()));
    }
    let salt = hex(&Sha256::digest(&data));
    let data_blocks = size / BLOCK_SIZE;
    let output = Command::new("veritysetup")
        .args(["format", "--no-superblock", "--hash=sha256"])
        .arg(format!("--data-block-size={BLOCK_SIZE}"))
        .arg(format!("--hash-block-size={BLOCK_SIZE}"))
        .arg(format!("--data-blocks={data_blocks}"))
        .arg(format!("--hash-offset={size}"))
        .arg(format!("--salt={salt}"))
        .arg(image)
        .arg(image)
        .output()
        .map_err(VerityError::NoVeritysetup)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(VerityError::Format(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ));
    }
    let root_hash = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Root hash:"))
        .map(|h| h.trim().to_string())
        .ok_or_else(|| VerityError::NoRootHash(stdout.to_string()))?;
    pad(image, PMEM_ALIGN)?;
    let verity = Verity {
        data_blocks,
        hash_start_block: data_blocks,
        root_hash,
        salt,
    };
    verity.check()?;
    Ok(verity)
}

fn pad(path: &Path, align: u64) -> Result<(), VerityError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err(path))?;
    let len = file.metadata().map_err(io_err(path))?.len();
    file.set_len(len.div_ceil(align) * align)
        .map_err(io_err(path))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What [`verify`] found wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Mismatch {
    #[error("the data does not hash to the root hash {expected} (it gives {actual})")]
    RootHash { expected: String, actual: String },
    #[error("the hash tree stored after the data differs from the data's")]
    Tree,
    #[error("the file ends inside the data or the hash tree")]
    Short,
}

/// The hash tree of `data` (whole blocks) by dm-verity's format 1, as
/// stored: the level nearest the root first. Also its root hash.
pub fn hash_tree(data: &[u8], salt: &[u8]) -> (Vec<u8>, String) {
    let block = BLOCK_SIZE as usize;
    let digest = |bytes: &[u8]| {
        let mut h = Sha256::new();
        h.update(salt);
        h.update(bytes);
        h.finalize()
    };
    // Each hash block holds the digests of 128 blocks below, zero-padded.
    let level_above = |below: &[u8]| -> Vec<u8> {
        let mut level = Vec::new();
        for group in below.chunks(block * (block / 32)) {
            let start = level.len();
            group.chunks(block).for_each(|b| level.extend(digest(b)));
            level.resize(start + block, 0);
        }
        level
    };
    let mut levels: Vec<Vec<u8>> = Vec::new();
    while levels.last().map_or(data, Vec::as_slice).len() > block {
        let next = level_above(levels.last().map_or(data, Vec::as_slice));
        levels.push(next);
    }
    let root = hex(&digest(levels.last().map_or(data, Vec::as_slice)));
    (levels.into_iter().rev().flatten().collect(), root)
}

/// Checks `image` against `verity`: the data gives the root hash, and the
/// stored tree is the data's.
pub fn verify(image: &Path, verity: &Verity) -> Result<Result<(), Mismatch>, VerityError> {
    let file = std::fs::read(image).map_err(io_err(image))?;
    let data_end = (verity.data_blocks * BLOCK_SIZE) as usize;
    let salt = unhex(&verity.salt);
    let Some(data) = file.get(..data_end) else {
        return Ok(Err(Mismatch::Short));
    };
    let (tree, root) = hash_tree(data, &salt);
    if root != verity.root_hash {
        return Ok(Err(Mismatch::RootHash {
            expected: verity.root_hash.clone(),
            actual: root,
        }));
    }
    let start = (verity.hash_start_block * BLOCK_SIZE) as usize;
    match file.get(start..start + tree.len()) {
        None => Ok(Err(Mismatch::Short)),
        Some(stored) if stored != tree.as_slice() => Ok(Err(Mismatch::Tree)),
        Some(_) => Ok(Ok(())),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_hashes_to_itself_and_more_build_levels() {
        let one = vec![7u8; 4096];
        let (tree, root) = hash_tree(&one, b"s");
        assert!(tree.is_empty());
        let mut h = Sha256::new();
        h.update(b"s");
        h.update(&one);
        assert_eq!(root, hex(&h.finalize()));
        // 129 blocks: two hash blocks, then one above them.
        let (tree, _) = hash_tree(&vec![1u8; 129 * 4096], b"s");
        assert_eq!(tree.len(), 3 * 4096);
    }
}
