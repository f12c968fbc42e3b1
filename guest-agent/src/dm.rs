//! device-mapper through its ioctls (`linux/dm-ioctl.h`): one read-only
//! device with a one-line table, and its status. The `devicemapper` crate
//! links libdevmapper and generates bindings with bindgen, which a static
//! PID 1 built without clang cannot use; these are the three calls Hull
//! needs.

use std::fs::File;
use std::os::fd::AsRawFd;

#[derive(Debug, thiserror::Error)]
pub enum DmError {
    #[error("open /dev/mapper/control: {0} (is dm_mod loaded?)")]
    Control(std::io::Error),
    #[error("device-mapper {op} {name}: {source}")]
    Ioctl {
        op: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("device-mapper name {0:?} is empty or too long")]
    Name(String),
}

/// `sizeof(struct dm_ioctl)`: version[3], data_size, data_start,
/// target_count, open_count, flags, event_nr, padding, dev, name[128],
/// uuid[129], data[7].
const HEADER: usize = 312;
/// `sizeof(struct dm_target_spec)`: sector_start, length, status, next,
/// target_type[16].
const TARGET_SPEC: usize = 40;
const NAME_OFFSET: usize = 48;
const NAME_LEN: usize = 128;
const DM_READONLY_FLAG: u32 = 1 << 0;
const CONTROL: &str = "/dev/mapper/control";
/// What a status reply's buffer holds at most (one target's status line).
const STATUS_BUFFER: usize = 4096;

/// `_IOWR(0xfd, nr, struct dm_ioctl)`.
const fn request(nr: u64) -> u64 {
    (3 << 30) | ((HEADER as u64) << 16) | (0xfd << 8) | nr
}
const DEV_CREATE: u64 = request(3);
const DEV_SUSPEND: u64 = request(6);
const TABLE_LOAD: u64 = request(9);
const TABLE_STATUS: u64 = request(12);

/// A dm_ioctl buffer of `size` bytes for device `name`.
fn header(name: &str, size: usize, flags: u32) -> Result<Vec<u8>, DmError> {
    if name.is_empty() || name.len() >= NAME_LEN {
        return Err(DmError::Name(name.into()));
    }
    let mut b = vec![0u8; size];
    put_u32(&mut b, 0, 4); // version 4.0.0: the ioctl interface's major
    put_u32(&mut b, 12, size as u32); // data_size
    put_u32(&mut b, 16, HEADER as u32); // data_start
    put_u32(&mut b, 28, flags);
    b[NAME_OFFSET..NAME_OFFSET + name.len()].copy_from_slice(name.as_bytes());
    Ok(b)
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(v)
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(v)
}

/// A one-target table load: the header, the target spec and its params.
fn table_buffer(name: &str, sectors: u64, target: &str, params: &str) -> Result<Vec<u8>, DmError> {
    let params_len = (params.len() + 1).div_ceil(8) * 8;
    let size = HEADER + TARGET_SPEC + params_len;
    let mut b = header(name, size, DM_READONLY_FLAG)?;
    put_u32(&mut b, 20, 1); // target_count
    put_u64(&mut b, HEADER + 8, sectors); // length
    put_u32(&mut b, HEADER + 20, (TARGET_SPEC + params_len) as u32); // next
    let target_type = &mut b[HEADER + 24..HEADER + 40];
    let n = target.len().min(15);
    target_type[..n].copy_from_slice(&target.as_bytes()[..n]);
    let at = HEADER + TARGET_SPEC;
    b[at..at + params.len()].copy_from_slice(params.as_bytes());
    Ok(b)
}

fn ioctl(
    control: &File,
    op: &'static str,
    req: u64,
    name: &str,
    b: &mut [u8],
) -> Result<(), DmError> {
    // SAFETY: `b` is a dm_ioctl buffer whose data_size field is its length,
    // so the kernel reads and writes only within it.
    let rc = unsafe { libc::ioctl(control.as_raw_fd(), req as _, b.as_mut_ptr()) };
    if rc < 0 {
        return Err(DmError::Ioctl {
            op,
            name: name.into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The control device, opened once: the boot initrd unmounts /dev before
/// it execs the image's agent, and may still need to ask for a status.
fn control() -> Result<&'static File, DmError> {
    static CONTROL_FILE: std::sync::OnceLock<File> = std::sync::OnceLock::new();
    if let Some(file) = CONTROL_FILE.get() {
        return Ok(file);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(CONTROL)
        .map_err(DmError::Control)?;
    Ok(CONTROL_FILE.get_or_init(|| file))
}

/// Creates read-only device `name` with the one-line table `target params`
/// over `sectors` and activates it; its device number (major, minor).
pub fn create(name: &str, sectors: u64, target: &str, params: &str) -> Result<(u32, u32), DmError> {
    let control = control()?;
    let mut b = header(name, HEADER, 0)?;
    ioctl(control, "create", DEV_CREATE, name, &mut b)?;
    let mut t = table_buffer(name, sectors, target, params)?;
    ioctl(control, "load table", TABLE_LOAD, name, &mut t)?;
    // DEV_SUSPEND without DM_SUSPEND_FLAG resumes: the loaded table goes live.
    let mut r = header(name, HEADER, 0)?;
    ioctl(control, "resume", DEV_SUSPEND, name, &mut r)?;
    let dev = get_u64(&r, 40);
    // The kernel's huge_encode_dev.
    let major = ((dev & 0xfff00) >> 8) as u32;
    let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32;
    Ok((major, minor))
}

/// The status line of device `name`'s target (for verity: `V` verified so
/// far, `C` a corrupted block was found).
pub fn status(name: &str) -> Result<String, DmError> {
    let control = control()?;
    // Without DM_STATUS_TABLE_FLAG: the target's status, not its table.
    let mut b = header(name, HEADER + STATUS_BUFFER, 0)?;
    ioctl(control, "status", TABLE_STATUS, name, &mut b)?;
    if get_u32(&b, 20) == 0 {
        return Ok(String::new());
    }
    let text = &b[HEADER + TARGET_SPEC..];
    let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
    Ok(String::from_utf8_lossy(&text[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_match_the_kernel_header() {
        // DM_DEV_CREATE and DM_TABLE_LOAD as <linux/dm-ioctl.h> computes them.
        assert_eq!(DEV_CREATE, 0xc138_fd03);
        assert_eq!(TABLE_LOAD, 0xc138_fd09);
    }

    #[test]
    fn a_table_buffer_has_one_aligned_target() {
        let b = table_buffer("root", 80, "verity", "1 /dev/a").unwrap();
        assert_eq!(b.len() % 8, 0);
        assert_eq!(get_u32(&b, 12) as usize, b.len());
        assert_eq!(get_u32(&b, 20), 1);
        assert_eq!(get_u64(&b, HEADER + 8), 80);
        assert_eq!(&b[HEADER + 24..HEADER + 30], b"verity");
        assert_eq!(
            &b[HEADER + TARGET_SPEC..HEADER + TARGET_SPEC + 8],
            b"1 /dev/a"
        );
        assert_eq!(get_u32(&b, 28), DM_READONLY_FLAG);
        assert!(header(&"x".repeat(128), HEADER, 0).is_err());
    }
}
