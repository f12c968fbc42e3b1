//! `hull-check`: can this host run Hull? Loads the configuration, reports
//! the accelerator Hull would choose and why, every file the
//! configuration needs, the rootfs image checked against its root hash
//! (when the guest boots one), and whether hull-cache runs and how full its
//! pool is. Exits 1, naming each problem, if Hull cannot run (a cache that does
//! not run is no such problem: sandboxes then boot their own VMs).
//!
//! usage: hull-check [CONFIG]   (default: HULL_CONFIG, else /etc/hull/configuration.toml)

use std::path::{Path, PathBuf};

use hull_shim::accel;
use hull_shim::config::{GuestRoot, HullConfig};
use hull_shim::guest_root;

fn main() {
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(HullConfig::path);
    let problems = check(&path, Path::new("/sys/module"), Path::new("/dev/kvm"));
    if problems.is_empty() {
        println!("hull-check: this host can run Hull");
        return;
    }
    for p in &problems {
        eprintln!("hull-check: {p}");
    }
    std::process::exit(1);
}

/// Prints what it finds; returns the problems that stop Hull from running.
fn check(config: &Path, modules: &Path, dev_kvm: &Path) -> Vec<String> {
    let cfg = match HullConfig::load(config) {
        Ok(c) => c,
        Err(e) => return vec![e.to_string()],
    };
    println!("configuration: {}", config.display());
    let mut problems = Vec::new();
    match accel::choose(cfg.hypervisor.accelerator, modules, dev_kvm) {
        Ok(c) => println!("accelerator: {} ({})", c.accel.qemu_name(), c.reason),
        Err(e) => problems.push(e.to_string()),
    }
    for (what, key, file) in cfg.required_files() {
        if file.exists() {
            println!("{what}: {} ({key})", file.display());
        } else {
            problems.push(format!(
                "{what} {} not found (config key {key} in {})",
                file.display(),
                config.display()
            ));
        }
    }
    if cfg.guest.root == GuestRoot::Image && cfg.guest.image.exists() {
        match image_report(&cfg) {
            Ok(line) => println!("{line}"),
            Err(problem) => problems.push(problem),
        }
    }
    println!("{}", cache_report(&cfg));
    problems
}

/// The rootfs image against its `.verity` file: the root hash the guest
/// will be given must be the data's, and the stored tree the data's tree.
fn image_report(cfg: &HullConfig) -> Result<String, String> {
    let image = &cfg.guest.image;
    let rebuild = "rebuild it: make image install, or hull-image";
    guest_root::guest_boot(cfg).map_err(|e| format!("{e}; {rebuild}"))?;
    if !cfg.guest.verity {
        return Ok(format!(
            "rootfs image: {} (guest.verity = false: not checked, mounted with DAX)",
            image.display()
        ));
    }
    let verity = guest_root::read_verity(image).map_err(|e| e.to_string())?;
    match hull_image::verity::verify(image, &verity) {
        Ok(Ok(())) => Ok(format!(
            "rootfs image: {} verified ({} blocks, root hash {})",
            image.display(),
            verity.data_blocks,
            verity.root_hash
        )),
        Ok(Err(mismatch)) => Err(format!(
            "rootfs image {}: {mismatch}; a guest would refuse it ({rebuild})",
            image.display()
        )),
        Err(e) => Err(format!("rootfs image: {e}")),
    }
}

/// hull-cache's state, in one line.
fn cache_report(cfg: &HullConfig) -> String {
    use std::os::unix::fs::MetadataExt;
    let c = &cfg.cache;
    let status = match hull_shim::cache::client::status(&c.socket) {
        Ok(s) => format!(
            "hull-cache: runs, {}/{} VMs waiting, {} booting ({}); {} taken, {} replaced",
            s.waiting, s.pool_size, s.booting, s.shape, s.taken, s.replaced
        ),
        Err(_) if c.pool_size == 0 => "hull-cache: off (cache.pool_size = 0)".to_string(),
        Err(e) => format!(
            "hull-cache: not running ({e}); sandboxes boot their own VMs. \
             Start it: systemctl start hull-cache, or scripts/cache.sh start"
        ),
    };
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    match (dev(&c.pool_dir), dev(&cfg.state_dir)) {
        (Some(a), Some(b)) if a != b => format!(
            "{status}\nwarning: cache.pool_dir {} and state_dir {} are on different \
             filesystems: no VM can be handed over",
            c.pool_dir.display(),
            cfg.state_dir.display()
        ),
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_missing_file_is_named_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("c.toml");
        let sample = include_str!("../../config/configuration.toml")
            .replace("/usr/local/share/hull/vmlinux", "/nonexistent/vmlinux")
            .replace("/usr/local/bin/virtiofsd", "/nonexistent/virtiofsd");
        std::fs::write(&config, sample).unwrap();
        let problems = check(&config, dir.path(), &dir.path().join("no-kvm"));
        let text = problems.join("\\n");
        assert!(
            text.contains("/nonexistent/vmlinux") && text.contains("hypervisor.kernel"),
            "{text}"
        );
        assert!(text.contains("shared_fs.virtiofsd"), "{text}");
    }

    #[test]
    fn a_cache_that_does_not_run_is_reported_not_a_problem() {
        let dir = tempfile::tempdir().unwrap();
        let sample = include_str!("../../config/configuration.toml").replace(
            "/run/hull-cache/cache.sock",
            &dir.path().join("none.sock").display().to_string(),
        );
        let cfg = HullConfig::parse(&sample, Path::new("c.toml")).unwrap();
        let report = cache_report(&cfg);
        assert!(report.starts_with("hull-cache: not running"), "{report}");
        assert!(report.contains("none.sock"), "{report}");
    }

    #[test]
    fn an_unreadable_configuration_is_the_one_problem() {
        let problems = check(
            Path::new("/nonexistent/hull.toml"),
            Path::new("/sys/module"),
            Path::new("/dev/kvm"),
        );
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].contains("/nonexistent/hull.toml"),
            "{problems:?}"
        );
    }

    #[test]
    fn a_modified_image_is_a_problem_naming_the_root_hash() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("rootfs.img");
        let data = vec![3u8; 2 * 4096];
        let (tree, root) = hull_image::verity::hash_tree(&data, &[0xff]);
        std::fs::write(&image, [data, tree].concat()).unwrap();
        let verity =
            format!(r#"{{"data_blocks":2,"hash_start_block":2,"root_hash":"{root}","salt":"ff"}}"#);
        std::fs::write(dir.path().join("rootfs.img.verity"), verity).unwrap();
        let sample = include_str!("../../config/configuration.toml")
            .replace("root = \"initrd\"", "root = \"image\"")
            .replace(
                "/usr/local/share/hull/rootfs.img",
                &image.display().to_string(),
            );
        let cfg = HullConfig::parse(&sample, Path::new("c.toml")).unwrap();
        let line = image_report(&cfg).unwrap();
        assert!(line.contains("verified") && line.contains(&root), "{line}");
        let mut bytes = std::fs::read(&image).unwrap();
        bytes[100] ^= 1;
        std::fs::write(&image, bytes).unwrap();
        let problem = image_report(&cfg).unwrap_err();
        assert!(
            problem.contains("does not hash to the root hash"),
            "{problem}"
        );
    }
}
