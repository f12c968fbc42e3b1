//! The guest kernel: Debian ships a bzImage whose payload is xz-compressed;
//! Hull boots the uncompressed ELF inside it through its PVH entry point,
//! which skips the in-guest decompression (seconds under TCG).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}: no xz-compressed payload found (expected a Debian bzImage)")]
    NoPayload(String),
    #[error("xz: {0}")]
    Xz(String),
    #[error("{0}: the decompressed payload is not an ELF image")]
    NotElf(String),
}

const XZ_MAGIC: &[u8] = &[0xFD, b'7', b'z', b'X', b'Z', 0x00];

/// Extracts `vmlinux` (ELF) from a bzImage.
pub fn extract_vmlinux(bzimage: &Path) -> Result<Vec<u8>, KernelError> {
    let name = bzimage.display().to_string();
    let data = std::fs::read(bzimage).map_err(|source| KernelError::Read {
        path: name.clone(),
        source,
    })?;
    let start = data
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .ok_or_else(|| KernelError::NoPayload(name.clone()))?;
    let mut child = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| KernelError::Xz(format!("cannot run xz: {e}")))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| KernelError::Xz("no stdin".into()))?;
    let payload = data[start..].to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let out = child
        .wait_with_output()
        .map_err(|e| KernelError::Xz(e.to_string()))?;
    // xz stops reading at the end of the stream; the rest of the bzImage
    // after it makes the writer see a broken pipe, which is expected.
    let _ = writer.join();
    if !out.status.success() && out.stdout.is_empty() {
        return Err(KernelError::Xz(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    if !out.stdout.starts_with(b"\x7fELF") {
        return Err(KernelError::NotElf(name));
    }
    Ok(out.stdout)
}
