//! hull-image: builds Hull's guest: `vmlinux`; `initrd.img`, the whole
//! guest in one initrd; and the minimal rootfs image `rootfs.img` (erofs,
//! dm-verity tree appended, parameters in `rootfs.img.verity`) with
//! `boot-initrd.img`, the small initrd that checks and mounts it.
//!
//! `--distro` adds the distro rootfs image `rootfs-distro.img` (Debian by
//! mmdebstrap, systemd starting the agent as a service; its `.verity`, and
//! `rootfs-distro.manifest`, the package versions in it). The bootstrap is
//! kept in `DIR/distro-base.tar`; delete it to take newer packages.
//!
//! usage: hull-image --agent PATH --boot PATH --out DIR [--kernel-version VERSION]
//!                   [--debug-shell STATIC_BUSYBOX] [--initrd-only] [--distro]
//!
//! `--boot` is `hull-boot`, the boot initrd's `/init` (not needed with
//! `--initrd-only`).
//!
//! `--debug-shell` adds a static busybox as `/bin/sh`, for the agent's
//! debug console (`hull.debug_console=on`); production images carry no shell.

use std::path::{Path, PathBuf};

use std::collections::HashSet;

use hull_image::cpio::{Archive, Entry};
use hull_image::distro;
use hull_image::kernel;
use hull_image::modules::{
    aliases_for, module_name, ModulesDep, BOOT_REQUIRED, INITRD_EXTRA, REQUIRED, ROOTFS_PREFIXES,
};
use hull_image::rootfs::{Owners, Tree};
use hull_image::verity;
use protocols::root_image::{Verity, VERITY_SUFFIX};

#[derive(Clone)]
struct Args {
    agent: PathBuf,
    boot: Option<PathBuf>,
    out: PathBuf,
    kernel_version: Option<String>,
    debug_shell: Option<PathBuf>,
    initrd_only: bool,
    distro: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut agent = None;
    let mut boot = None;
    let mut out = None;
    let mut kernel_version = None;
    let mut debug_shell = None;
    let mut initrd_only = false;
    let mut distro = false;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--agent" => agent = Some(PathBuf::from(value()?)),
            "--boot" => boot = Some(PathBuf::from(value()?)),
            "--out" => out = Some(PathBuf::from(value()?)),
            "--kernel-version" => kernel_version = Some(value()?),
            "--debug-shell" => debug_shell = Some(PathBuf::from(value()?)),
            "--initrd-only" => initrd_only = true,
            "--distro" => distro = true,
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(Args {
        agent: agent.ok_or("--agent is required")?,
        boot,
        out: out.ok_or("--out is required")?,
        kernel_version,
        debug_shell,
        initrd_only,
        distro,
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

/// The kernel and its modules directory, read once.
struct Kernel {
    version: String,
    moddir: PathBuf,
    dep: ModulesDep,
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
    let k = Kernel {
        dep: ModulesDep::parse(&dep),
        version,
        moddir,
    };
    let agent = read(&args.agent)?;
    let groups: Vec<&str> = REQUIRED.iter().chain(INITRD_EXTRA).copied().collect();
    let modules = write_initrd(&k, &agent, args, &groups, "initrd.img")?;
    let boot = match (&args.boot, args.initrd_only) {
        (_, true) => None,
        (Some(path), false) => Some(read(path)?),
        (None, false) => {
            return Err("--boot is required (hull-boot, the boot initrd's /init)".into())
        }
    };
    println!(
        "hull-image: kernel {}, {modules} modules -> {}",
        k.version,
        args.out.join("initrd.img").display()
    );
    let Some(boot) = boot else {
        return Ok(());
    };
    let no_shell = Args {
        debug_shell: None,
        ..args.clone()
    };
    write_initrd(&k, &boot, &no_shell, BOOT_REQUIRED, "boot-initrd.img")?;
    let (modules, verity) = write_rootfs(&k, &agent, &args.out)?;
    println!(
        "hull-image: rootfs image, {modules} modules, root hash {} -> {}",
        verity.root_hash,
        args.out.join("rootfs.img").display()
    );
    if args.distro {
        let (packages, verity) = write_distro(&k, &agent, &args.out)?;
        println!(
            "hull-image: distro rootfs image, {packages} packages, root hash {} -> {}",
            verity.root_hash,
            args.out.join("rootfs-distro.img").display()
        );
    }
    Ok(())
}

/// The Debian release the distro image is built from: the host's own.
const DISTRO_SUITE: &str = "bookworm";

/// The distro rootfs image, its `.verity` and its package manifest; how
/// many packages it holds.
fn write_distro(k: &Kernel, agent: &[u8], out: &Path) -> Result<(usize, Verity), String> {
    let e = |e: distro::DistroError| e.to_string();
    let base = out.join("distro-base.tar");
    if !base.exists() {
        // mmdebstrap picks its output format by the name's extension.
        let tmp = out.join("distro-base.tmp.tar");
        distro::bootstrap(DISTRO_SUITE, &tmp).map_err(e)?;
        std::fs::rename(&tmp, &base).map_err(|e| format!("{}: {e}", base.display()))?;
    }
    let stage = out.join("distro.stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    let tree = Tree::new(&stage).map_err(|e| e.to_string())?;
    distro::unpack(&base, &stage).map_err(e)?;
    distro::customize(&tree, agent).map_err(e)?;
    let (_, list) = module_groups(k, REQUIRED)?;
    tree.file("etc/hull/modules", list.as_bytes(), 0o644)
        .map_err(|e| e.to_string())?;
    stage_module_tree(k, &tree)?;
    let dir = format!("lib/modules/{}", k.version);
    for name in ["modules.order", "modules.builtin.modinfo"] {
        tree.file(
            &format!("{dir}/{name}"),
            &read(&k.moddir.join(name))?,
            0o644,
        )
        .map_err(|e| e.to_string())?;
    }
    distro::depmod(&stage, &k.version).map_err(e)?;
    let manifest = distro::manifest(&stage).map_err(e)?;
    let image = out.join("rootfs-distro.img");
    let tmp = out.join("rootfs-distro.img.tmp");
    tree.make_erofs(&tmp, Owners::AsStaged)
        .map_err(|e| e.to_string())?;
    let verity = verity::append_hash_tree(&tmp).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, &image).map_err(|e| format!("{}: {e}", image.display()))?;
    std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    let json = serde_json::to_vec_pretty(&verity).map_err(|e| e.to_string())?;
    write_if_changed(
        &out.join(format!("rootfs-distro.img.{VERITY_SUFFIX}")),
        &json,
    )?;
    write_if_changed(&out.join("rootfs-distro.manifest"), manifest.as_bytes())?;
    Ok((manifest.lines().count(), verity))
}

/// The modules of `groups` (each complete with its dependencies, each file
/// once) as (path relative to the modules directory, list line); the list
/// line is what the agent's `/etc/hull/modules` holds.
fn module_groups(k: &Kernel, groups: &[&str]) -> Result<(Vec<String>, String), String> {
    let mut list = String::new();
    let mut files = Vec::new();
    for group in groups {
        for rel in k.dep.load_order(&[group]).map_err(|e| e.to_string())? {
            list.push_str(&format!("{group} /lib/modules/{}/{rel}\n", k.version));
            if !files.contains(&rel) {
                files.push(rel);
            }
        }
    }
    Ok((files, list))
}

/// An initrd with `init` (the agent, or hull-boot) as `/init` and the
/// modules of `groups`; how many modules it holds.
fn write_initrd(
    k: &Kernel,
    init: &[u8],
    args: &Args,
    groups: &[&str],
    name: &str,
) -> Result<usize, String> {
    let mut archive = Archive::default();
    let file = |mode, data| Entry::File { mode, data };
    archive.add("init", file(0o755, init.to_vec()));
    for (path, minor) in [("dev/console", 1), ("dev/null", 3)] {
        let (mode, major) = if minor == 1 { (0o600, 5) } else { (0o666, 1) };
        archive.add(path, Entry::CharDev { mode, major, minor });
    }
    for dir in ["proc", "sys", "run", "tmp", "etc/hull"] {
        archive.add(dir, Entry::Dir { mode: 0o755 });
    }
    if let Some(busybox) = &args.debug_shell {
        archive.add("bin/busybox", file(0o755, read(busybox)?));
        archive.add(
            "bin/sh",
            Entry::Symlink {
                target: "busybox".into(),
            },
        );
    }
    // The agent loads a group only if the VM has its device (see the
    // agent's modules.rs).
    let (files, list) = module_groups(k, groups)?;
    for rel in &files {
        let data = read(&k.moddir.join(rel))?;
        archive.add(
            &format!("lib/modules/{}/{rel}", k.version),
            file(0o644, data),
        );
    }
    archive.add("etc/hull/modules", file(0o644, list.into_bytes()));
    let version_line = format!("{}\n", k.version).into_bytes();
    archive.add("etc/hull/kernel-version", file(0o644, version_line));
    let mut initrd = Vec::new();
    archive.write_to(&mut initrd).map_err(|e| e.to_string())?;
    write_if_changed(&args.out.join(name), &initrd)?;
    Ok(files.len())
}

/// The minimal rootfs image (erofs with its verity tree appended) and its
/// `.verity` file; how many modules it holds.
fn write_rootfs(k: &Kernel, agent: &[u8], out: &Path) -> Result<(usize, Verity), String> {
    let stage = out.join("rootfs.stage");
    if stage.exists() {
        std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    }
    let tree = Tree::new(&stage).map_err(|e| e.to_string())?;
    stage_rootfs(k, agent, &tree).map_err(|e| e.to_string())?;
    let (_, list) = module_groups(k, REQUIRED)?;
    tree.file("etc/hull/modules", list.as_bytes(), 0o644)
        .map_err(|e| e.to_string())?;
    let modules = stage_module_tree(k, &tree)?;
    let tmp = out.join("rootfs.img.tmp");
    tree.make_erofs(&tmp, Owners::Normalized)
        .map_err(|e| e.to_string())?;
    let verity = verity::append_hash_tree(&tmp).map_err(|e| e.to_string())?;
    let image = std::fs::read(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::remove_file(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::remove_dir_all(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
    write_if_changed(&out.join("rootfs.img"), &image)?;
    let json = serde_json::to_vec_pretty(&verity).map_err(|e| e.to_string())?;
    write_if_changed(&out.join(format!("rootfs.img.{VERITY_SUFFIX}")), &json)?;
    Ok((modules, verity))
}

/// The image's own files: the agent (also as `/sbin/init`, and as
/// `/sbin/modprobe`, the kernel's helper for loading a module on demand)
/// and the directories the agent mounts on.
fn stage_rootfs(
    k: &Kernel,
    agent: &[u8],
    tree: &Tree,
) -> Result<(), hull_image::rootfs::RootfsError> {
    tree.file("usr/bin/hull-agent", agent, 0o755)?;
    tree.symlink("sbin/init", "../usr/bin/hull-agent")?;
    tree.symlink("sbin/modprobe", "../usr/bin/hull-agent")?;
    for dir in [
        "dev", "proc", "sys", "run", "tmp", "mnt", "root", "etc/hull",
    ] {
        tree.dir(dir)?;
    }
    tree.file(
        "etc/hull/kernel-version",
        format!("{}\n", k.version).as_bytes(),
        0o644,
    )
}

/// The modules of [`REQUIRED`] and [`ROOTFS_PREFIXES`] with everything they
/// depend on, and the `modules.dep`, `modules.alias` and `modules.builtin`
/// for them (what `request_module` resolves names with).
fn stage_module_tree(k: &Kernel, tree: &Tree) -> Result<usize, String> {
    let mut wanted: Vec<String> = REQUIRED.iter().map(|s| s.to_string()).collect();
    wanted.extend(BOOT_REQUIRED.iter().map(|s| s.to_string()));
    wanted.extend(k.dep.names_under(ROOTFS_PREFIXES));
    let wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
    let paths = k.dep.load_order(&wanted).map_err(|e| e.to_string())?;
    let dir = format!("lib/modules/{}", k.version);
    for rel in &paths {
        let data = read(&k.moddir.join(rel))?;
        tree.file(&format!("{dir}/{rel}"), &data, 0o644)
            .map_err(|e| e.to_string())?;
    }
    let paths: HashSet<String> = paths.into_iter().collect();
    let names: HashSet<String> = paths.iter().map(|p| module_name(p)).collect();
    let alias = String::from_utf8_lossy(&read(&k.moddir.join("modules.alias"))?).into_owned();
    let files = [
        ("modules.dep", k.dep.subset_text(&paths).into_bytes()),
        ("modules.alias", aliases_for(&alias, &names).into_bytes()),
        ("modules.builtin", read(&k.moddir.join("modules.builtin"))?),
    ];
    for (name, data) in files {
        tree.file(&format!("{dir}/{name}"), &data, 0o644)
            .map_err(|e| e.to_string())?;
    }
    Ok(paths.len())
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
