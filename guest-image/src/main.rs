//! hull-image: builds `vmlinux` and `initrd.img` for Hull's guest.
//!
//! usage: hull-image --agent PATH --out DIR [--kernel-version VERSION]
//!                   [--debug-shell STATIC_BUSYBOX]
//!
//! `--debug-shell` adds a static busybox as `/bin/sh`, for the agent's
//! debug console (`hull.debug_console=on`); production images carry no shell.

use std::path::{Path, PathBuf};

use hull_image::cpio::{Archive, Entry};
use hull_image::kernel;
use hull_image::modules::{ModulesDep, REQUIRED};

struct Args {
    agent: PathBuf,
    out: PathBuf,
    kernel_version: Option<String>,
    debug_shell: Option<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut agent = None;
    let mut out = None;
    let mut kernel_version = None;
    let mut debug_shell = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--agent" => agent = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--kernel-version" => kernel_version = Some(value()?),
            "--debug-shell" => debug_shell = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Args {
        agent: agent.ok_or("--agent is required")?,
        out: out.ok_or("--out is required")?,
        kernel_version,
        debug_shell,
    })
}

/// The newest kernel that has both a bzImage in /boot and modules.
fn newest_kernel() -> Result<String, String> {
    let mut versions: Vec<String> = std::fs::read_dir("/lib/modules")
        .map_err(|e| format!("/lib/modules: {e} (install linux-image-amd64)"))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|v| Path::new(&format!("/boot/vmlinuz-{v}")).exists())
        .collect();
    versions.sort();
    versions.pop().ok_or_else(|| {
        "no kernel in /boot with modules in /lib/modules (install linux-image-amd64)".into()
    })
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn build(args: &Args) -> Result<(), String> {
    let version = match &args.kernel_version {
        Some(v) => v.clone(),
        None => newest_kernel()?,
    };
    let moddir = PathBuf::from("/lib/modules").join(&version);
    std::fs::create_dir_all(&args.out).map_err(|e| format!("{}: {e}", args.out.display()))?;

    let vmlinux = kernel::extract_vmlinux(Path::new(&format!("/boot/vmlinuz-{version}")))
        .map_err(|e| e.to_string())?;
    write_if_changed(&args.out.join("vmlinux"), &vmlinux)?;

    let dep = String::from_utf8(read(&moddir.join("modules.dep"))?).map_err(|e| e.to_string())?;
    let dep = ModulesDep::parse(&dep);
    let mut archive = Archive::default();
    archive.add(
        "init",
        Entry::File {
            mode: 0o755,
            data: read(&args.agent)?,
        },
    );
    archive.add(
        "dev/console",
        Entry::CharDev {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    );
    archive.add(
        "dev/null",
        Entry::CharDev {
            mode: 0o666,
            major: 1,
            minor: 3,
        },
    );
    for dir in ["proc", "sys", "run", "tmp", "etc/hull"] {
        archive.add(dir, Entry::Dir { mode: 0o755 });
    }
    if let Some(busybox) = &args.debug_shell {
        archive.add("bin", Entry::Dir { mode: 0o755 });
        archive.add(
            "bin/busybox",
            Entry::File {
                mode: 0o755,
                data: read(busybox)?,
            },
        );
        archive.add(
            "bin/sh",
            Entry::Symlink {
                target: "busybox".into(),
            },
        );
    }
    // One group per required module, complete with its dependencies (the
    // agent loads a group only if the VM has its device; see the agent's
    // modules.rs), each file once in the image.
    let mut list = String::new();
    let mut in_image = std::collections::HashSet::new();
    for group in REQUIRED {
        for rel in dep.load_order(&[group]).map_err(|e| e.to_string())? {
            let guest_path = format!("lib/modules/{version}/{rel}");
            if in_image.insert(rel.clone()) {
                archive.add(
                    &guest_path,
                    Entry::File {
                        mode: 0o644,
                        data: read(&moddir.join(&rel))?,
                    },
                );
            }
            list.push_str(&format!("{group} /{guest_path}\n"));
        }
    }
    archive.add(
        "etc/hull/modules",
        Entry::File {
            mode: 0o644,
            data: list.into_bytes(),
        },
    );
    archive.add(
        "etc/hull/kernel-version",
        Entry::File {
            mode: 0o644,
            data: format!("{version}\n").into_bytes(),
        },
    );
    let mut initrd = Vec::new();
    archive.write_to(&mut initrd).map_err(|e| e.to_string())?;
    write_if_changed(&args.out.join("initrd.img"), &initrd)?;
    println!(
        "hull-image: kernel {version}, {} modules -> {}",
        in_image.len(),
        args.out.display()
    );
    Ok(())
}

/// Leaves an identical file untouched, so its timestamp says when it last changed.
fn write_if_changed(path: &Path, data: &[u8]) -> Result<(), String> {
    if std::fs::read(path).map(|old| old == data).unwrap_or(false) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() {
    let result = parse_args().and_then(|a| build(&a));
    if let Err(e) = result {
        eprintln!("hull-image: {e}");
        std::process::exit(1);
    }
}
