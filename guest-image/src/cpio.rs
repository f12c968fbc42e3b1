//! A deterministic newc cpio archive writer: entries sorted by path, every
//! timestamp 0, owner root, inode numbers assigned in order.

use std::collections::BTreeMap;
use std::io::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { mode: u32, data: Vec<u8> },
    CharDev { mode: u32, major: u32, minor: u32 },
    Symlink { target: String },
}

/// An archive being assembled; paths are relative (no leading `/`).
#[derive(Default)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

impl Archive {
    /// Adds an entry and every missing parent directory (mode 0755).
    pub fn add(&mut self, path: &str, entry: Entry) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = String::new();
        for comp in path
            .split('/')
            .take(path.split('/').count().saturating_sub(1))
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(comp);
            self.entries
                .entry(parent.clone())
                .or_insert(Entry::Dir { mode: 0o755 });
        }
        self.entries.insert(path, entry);
    }

    pub fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (ino, (path, entry)) in (1u32..).zip(&self.entries) {
            let (mode, data, rdev): (u32, &[u8], (u32, u32)) = match entry {
                Entry::Dir { mode } => (0o040000 | mode, &[], (0, 0)),
                Entry::File { mode, data } => (0o100000 | mode, data, (0, 0)),
                Entry::CharDev { mode, major, minor } => (0o020000 | mode, &[], (*major, *minor)),
                Entry::Symlink { target } => (0o120777, target.as_bytes(), (0, 0)),
            };
            let nlink = if matches!(entry, Entry::Dir { .. }) {
                2
            } else {
                1
            };
            write_header(out, ino, mode, nlink, data.len() as u32, rdev, path)?;
            out.write_all(data)?;
            pad(out, data.len())?;
        }
        write_header(out, 0, 0, 1, 0, (0, 0), "TRAILER!!!")
    }
}

fn write_header(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> std::io::Result<()> {
    let namesize = name.len() + 1;
    write!(
        out,
        "070701{ino:08X}{mode:08X}{:08X}{:08X}{nlink:08X}{:08X}{size:08X}{:08X}{:08X}{:08X}{:08X}{namesize:08X}{:08X}",
        0, 0, 0, 0, 0, rdev.0, rdev.1, 0
    )?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad(out, 110 + namesize)
}

fn pad(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build() -> Vec<u8> {
        let mut a = Archive::default();
        a.add(
            "/etc/hull/modules",
            Entry::File {
                mode: 0o644,
                data: b"x\n".to_vec(),
            },
        );
        a.add(
            "/init",
            Entry::File {
                mode: 0o755,
                data: vec![1, 2, 3],
            },
        );
        a.add(
            "/dev/console",
            Entry::CharDev {
                mode: 0o600,
                major: 5,
                minor: 1,
            },
        );
        let mut out = Vec::new();
        a.write_to(&mut out).unwrap();
        out
    }

    #[test]
    fn archive_is_deterministic_and_aligned() {
        let a = build();
        assert_eq!(a, build());
        assert!(a.starts_with(b"070701"));
        assert_eq!(a.len() % 4, 0);
    }

    #[test]
    fn parents_are_added() {
        let a = String::from_utf8_lossy(&build()).to_string();
        for name in ["etc\0", "etc/hull\0", "dev\0", "TRAILER!!!\0"] {
            assert!(a.contains(name), "{name} missing");
        }
    }

    #[test]
    fn cpio_tool_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.cpio");
        std::fs::write(&archive, build()).unwrap();
        let out = std::process::Command::new("cpio")
            .args(["-it", "-F"])
            .arg(&archive)
            .output()
            .expect("cpio is installed by scripts/install-deps.sh");
        let listing = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            listing.contains("etc/hull/modules") && listing.contains("dev/console"),
            "{listing}"
        );
    }
}
