//! `hull-check`: can this host run Hull? Loads the configuration, reports
//! the accelerator Hull would choose and why, and every file the
//! configuration needs. Exits 1, naming each problem, if Hull cannot run.
//!
//! usage: hull-check [CONFIG]   (default: HULL_CONFIG, else /etc/hull/configuration.toml)

use std::path::{Path, PathBuf};

use hull_shim::accel;
use hull_shim::config::HullConfig;

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
    problems
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
}
