//! The kernel modules the VM's devices need, loaded at boot.
//!
//! hull-image writes `/etc/hull/modules`: one `<group> <path>` line per
//! module, each group (named by the module it is for) complete with its
//! dependencies, in load order. A group for one kind of virtio device is
//! loaded only when the VM has such a device: a VM with virtio-fs skips 9p,
//! one without a NIC skips virtio-net. A line without a group is always
//! loaded (the list of older images).
//!
//! Groups that nothing needs before the agent answers ([`DEFERRED`]) load
//! on a low-priority thread instead, off the boot's critical path; creating
//! a container waits for them (they are for containers).

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("load module {path}: {source}")]
    Load {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The list hull-image writes into the image.
pub const MODULE_LIST: &str = "/etc/hull/modules";
/// Where the virtio bus lists its devices, each with its device type.
const VIRTIO_DEVICES: &str = "/sys/bus/virtio/devices";

/// The virtio device type a group serves (virtio spec, "Device Types"), for
/// groups needed only when such a device exists.
fn device_type_of(group: &str) -> Option<u32> {
    match group {
        "virtio_net" => Some(1),
        "virtio_blk" => Some(2),
        "virtio_balloon" => Some(5),
        "9p" | "9pnet_virtio" => Some(9),
        "virtiofs" => Some(26),
        "virtio_pmem" | "nd_pmem" => Some(27),
        _ => None,
    }
}

/// The list's groups in order, each with its module paths.
pub fn parse_list(text: &str) -> Vec<(String, Vec<String>)> {
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (group, path) = line.split_once(' ').unwrap_or(("", line));
        match groups.last_mut() {
            Some((g, paths)) if g == group => paths.push(path.trim().to_string()),
            _ => groups.push((group.to_string(), vec![path.trim().to_string()])),
        }
    }
    groups
}

/// Parses a sysfs `device` file ("0x001a").
fn parse_device_type(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The device types on the virtio bus now (the transport loaded).
pub fn virtio_device_types_now() -> HashSet<u32> {
    virtio_device_types(Path::new(VIRTIO_DEVICES))
}

/// The device types on the virtio bus now.
fn virtio_device_types(dir: &Path) -> HashSet<u32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("device")).ok())
        .filter_map(|t| parse_device_type(&t))
        .collect()
}

/// Groups for containers, not for the VM's devices: overlay mounts and a
/// privileged container's bridge, about 70 ms of a TCG boot (`make
/// boot-timeline`); and the balloon (free page reporting), when the VM has
/// one, which nothing in the guest waits for.
const DEFERRED: &[&str] = &["overlay", "bridge", "virtio_balloon"];

/// What a boot's loading did.
#[derive(Debug, Default, PartialEq)]
pub struct Loaded {
    pub modules: usize,
    pub skipped_groups: Vec<String>,
    /// The modules of [`DEFERRED`] groups not loaded yet, in load order.
    pub deferred: Vec<String>,
}

/// Loads the groups of `text` the VM needs with `load`, each module once.
/// Device types are read (with `device_types`) when the first group that
/// depends on them comes, so after the virtio transport is loaded.
pub fn load_needed(
    text: &str,
    mut device_types: impl FnMut() -> HashSet<u32>,
    mut load: impl FnMut(&str) -> Result<(), ModulesError>,
) -> Result<Loaded, ModulesError> {
    let mut done = Loaded::default();
    let mut types: Option<HashSet<u32>> = None;
    let mut loaded = HashSet::new();
    for (group, paths) in parse_list(text) {
        if let Some(needed) = device_type_of(&group) {
            if !types
                .get_or_insert_with(&mut device_types)
                .contains(&needed)
            {
                done.skipped_groups.push(group);
                continue;
            }
        }
        if DEFERRED.contains(&group.as_str()) {
            for path in paths {
                if !loaded.contains(&path) && !done.deferred.contains(&path) {
                    done.deferred.push(path);
                }
            }
            continue;
        }
        for path in paths {
            if loaded.insert(path.clone()) {
                load(&path)?;
                done.modules += 1;
            }
        }
    }
    Ok(done)
}

/// Loads what the VM needs from the image's list (nothing if there is
/// none), and starts the background load of the deferred groups.
pub fn load_from_image(log: &slog::Logger) -> Result<(), ModulesError> {
    let Ok(text) = std::fs::read_to_string(MODULE_LIST) else {
        slog::info!(log, "no module list"; "path" => MODULE_LIST);
        return Ok(());
    };
    let done = load_needed(
        &text,
        || virtio_device_types(Path::new(VIRTIO_DEVICES)),
        finit,
    )?;
    slog::debug!(log, "modules loaded"; "count" => done.modules,
        "skipped" => done.skipped_groups.join(","), "deferred" => done.deferred.len());
    load_in_background(done.deferred, log.clone());
    Ok(())
}

/// Loads the modules of `group` from the image's list (those already in
/// are skipped by the kernel); how many the group has. For a device that
/// arrives after boot: a NIC hot-plugged into a VM booted without one.
pub fn load_group(group: &str) -> Result<usize, ModulesError> {
    let Ok(text) = std::fs::read_to_string(MODULE_LIST) else {
        return Ok(0);
    };
    let paths: Vec<String> = parse_list(&text)
        .into_iter()
        .filter(|(g, _)| g == group)
        .flat_map(|(_, paths)| paths)
        .collect();
    for path in &paths {
        finit(path)?;
    }
    Ok(paths.len())
}

/// Whether deferred modules are still loading, and its wake-up.
static PENDING: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

fn set_pending(value: bool) {
    *PENDING.0.lock().unwrap_or_else(|e| e.into_inner()) = value;
    PENDING.1.notify_all();
}

/// Loads `paths` on a thread at the lowest priority, so the agent's own
/// start goes first on a one-vCPU VM. A module that fails is logged: a
/// container that needs it fails with its own error.
fn load_in_background(paths: Vec<String>, log: slog::Logger) {
    if paths.is_empty() {
        return;
    }
    set_pending(true);
    let thread_log = log.clone();
    let spawned = std::thread::Builder::new()
        .name("modules".into())
        .spawn(move || {
            let log = thread_log;
            // SAFETY: setpriority on this thread's own id (who = 0 is the
            // calling thread under Linux's per-thread nice values).
            unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            let began = Instant::now();
            for path in &paths {
                if let Err(e) = finit(path) {
                    slog::warn!(log, "deferred module not loaded"; "error" => %e);
                }
            }
            slog::debug!(log, "deferred modules loaded"; "count" => paths.len(),
                "ms" => began.elapsed().as_millis());
            set_pending(false);
        });
    if let Err(e) = spawned {
        slog::warn!(log, "deferred modules not loaded: no thread"; "error" => %e);
        set_pending(false);
    }
}

/// Waits (at most `limit`) for the deferred modules; whether they are in.
pub fn wait_for_deferred(limit: Duration) -> bool {
    let guard = PENDING.0.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = PENDING
        .1
        .wait_timeout_while(guard, limit, |pending| *pending)
        .unwrap_or_else(|e| e.into_inner());
    !*guard
}

/// Loads the module file at `path`; one already in the kernel is left as
/// it is (without reading the file: an image boot's agent finds the boot
/// initrd's modules in).
pub fn finit(path: &str) -> Result<(), ModulesError> {
    let err = |source| ModulesError::Load {
        path: path.to_string(),
        source,
    };
    let name = protocols::modules_dep::module_name(path);
    if Path::new("/sys/module")
        .join(&name)
        .join("initstate")
        .exists()
    {
        return Ok(());
    }
    let file = std::fs::File::open(path).map_err(err)?;
    match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(err(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "virtio_pci /m/virtio.ko\n\
                        virtio_pci /m/virtio_pci.ko\n\
                        vmw_vsock_virtio_transport /m/vsock.ko\n\
                        virtiofs /m/fuse.ko\n\
                        virtiofs /m/virtiofs.ko\n\
                        9pnet_virtio /m/9pnet.ko\n\
                        9pnet_virtio /m/9pnet_virtio.ko\n\
                        9p /m/9pnet.ko\n\
                        9p /m/9p.ko\n\
                        virtio_net /m/virtio_net.ko\n\
                        virtio_balloon /m/virtio_balloon.ko\n\
                        bridge /m/bridge.ko\n";

    fn run(text: &str, types: &[u32]) -> (Vec<String>, Loaded) {
        let mut order = Vec::new();
        let loaded = load_needed(
            text,
            || types.iter().copied().collect(),
            |p| {
                order.push(p.to_string());
                Ok(())
            },
        )
        .expect("loads");
        (order, loaded)
    }

    #[test]
    fn only_the_groups_of_present_devices_are_loaded() {
        let (order, loaded) = run(LIST, &[19, 26]);
        assert_eq!(
            order,
            [
                "/m/virtio.ko",
                "/m/virtio_pci.ko",
                "/m/vsock.ko",
                "/m/fuse.ko",
                "/m/virtiofs.ko",
            ]
        );
        assert_eq!(
            loaded.skipped_groups,
            ["9pnet_virtio", "9p", "virtio_net", "virtio_balloon"]
        );
        assert_eq!(loaded.deferred, ["/m/bridge.ko"]);
        // A balloon loads after the agent serves, and only if there is one.
        let (order, loaded) = run(LIST, &[19, 26, 5]);
        assert!(!order.contains(&"/m/virtio_balloon.ko".to_string()));
        assert_eq!(loaded.deferred, ["/m/virtio_balloon.ko", "/m/bridge.ko"]);
    }

    #[test]
    fn deferred_groups_skip_what_boot_loaded_and_repeat_nothing() {
        let list = "virtio_pci /m/virtio.ko\n\
                    overlay /m/overlay.ko\n\
                    bridge /m/llc.ko\n\
                    bridge /m/bridge.ko\n\
                    bridge /m/virtio.ko\n\
                    other /m/llc.ko\n";
        let (order, loaded) = run(list, &[]);
        assert_eq!(order, ["/m/virtio.ko", "/m/llc.ko"]);
        assert_eq!(
            loaded.deferred,
            ["/m/overlay.ko", "/m/llc.ko", "/m/bridge.ko"]
        );
    }

    #[test]
    fn waiting_for_deferred_modules_ends_when_they_are_in_or_at_the_limit() {
        assert!(wait_for_deferred(Duration::ZERO), "nothing pending");
        set_pending(true);
        assert!(!wait_for_deferred(Duration::from_millis(20)));
        let done = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(50));
            set_pending(false);
        });
        assert!(wait_for_deferred(Duration::from_secs(10)));
        done.join().unwrap();
    }

    #[test]
    fn a_module_in_two_groups_is_loaded_once() {
        let (order, _) = run(LIST, &[9, 19, 1]);
        assert_eq!(order.iter().filter(|p| *p == "/m/9pnet.ko").count(), 1);
        assert!(order.contains(&"/m/9p.ko".to_string()));
        assert!(order.contains(&"/m/virtio_net.ko".to_string()));
        assert!(!order.contains(&"/m/virtiofs.ko".to_string()));
    }

    #[test]
    fn a_list_without_groups_is_loaded_whole() {
        let (order, loaded) = run("/m/a.ko\n/m/b.ko\n# note\n", &[]);
        assert_eq!(order, ["/m/a.ko", "/m/b.ko"]);
        assert!(loaded.skipped_groups.is_empty());
    }

    #[test]
    fn device_types_are_read_only_when_a_device_group_comes() {
        let mut reads = 0;
        load_needed(
            "virtio_pci /m/a.ko\nbridge /m/b.ko\n",
            || {
                reads += 1;
                HashSet::new()
            },
            |_| Ok(()),
        )
        .expect("loads");
        assert_eq!(reads, 0);
    }

    #[test]
    fn sysfs_device_types_parse() {
        assert_eq!(parse_device_type("0x001a\n"), Some(26));
        assert_eq!(parse_device_type("0x0013"), Some(19));
        assert_eq!(parse_device_type("junk"), None);
    }

    #[test]
    fn a_failed_load_names_the_module() {
        let err = load_needed("x /m/a.ko\n", HashSet::new, |p| {
            Err(ModulesError::Load {
                path: p.into(),
                source: std::io::Error::from_raw_os_error(libc::ENOEXEC),
            })
        })
        .expect_err("fails");
        assert!(err.to_string().contains("/m/a.ko"), "{err}");
    }
}
