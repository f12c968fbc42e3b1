//! `modprobe` for the kernel's `request_module`: the kernel runs
//! `/sbin/modprobe -q -- NAME` (a link to the agent in a rootfs image) when
//! something needs a module it lacks: a privileged container adding a
//! bridge (`rtnl-link-bridge`), an nftables table (`nfnetlink-subsys-10`),
//! a filesystem (`fs-xfs`). NAME is a module or an alias; it is resolved
//! with the image's `modules.builtin`, `modules.dep` and `modules.alias`
//! and loaded with its dependencies, from the image only.

use std::path::{Path, PathBuf};

use protocols::modules_dep::{module_name, ModulesDep};

#[derive(Debug, thiserror::Error)]
pub enum ModprobeError {
    #[error("modprobe: read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("modprobe: {0:?} is neither a module nor an alias in {1}")]
    NotFound(String, String),
    #[error("modprobe: {0}")]
    Load(#[from] crate::modules::ModulesError),
    #[error("modprobe: usage: modprobe [-q] [--] NAME...")]
    Usage,
}

/// The modules directory of the running kernel.
fn modules_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

fn read(dir: &Path, name: &str) -> Result<String, ModprobeError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(|source| ModprobeError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// The modules (by name) `wanted` stands for: itself, or the modules of
/// every alias pattern it matches. Empty for a built-in module.
pub fn resolve(
    wanted: &str,
    builtin: &str,
    dep: &ModulesDep,
    aliases: &str,
) -> Option<Vec<String>> {
    let name = wanted.replace('-', "_");
    if builtin.lines().any(|path| module_name(path) == name) {
        return Some(Vec::new());
    }
    if dep.load_order(&[&name]).is_ok() {
        return Some(vec![name]);
    }
    let matches: Vec<String> = aliases
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("alias")).then_some(())?;
            let (pattern, module) = (words.next()?, words.next()?);
            let pattern = glob::Pattern::new(pattern).ok()?;
            pattern.matches(wanted).then(|| module.replace('-', "_"))
        })
        .collect();
    (!matches.is_empty()).then_some(matches)
}

fn load(wanted: &str, dir: &Path) -> Result<(), ModprobeError> {
    let dep = ModulesDep::parse(&read(dir, "modules.dep")?);
    let builtin = read(dir, "modules.builtin").unwrap_or_default();
    let aliases = read(dir, "modules.alias").unwrap_or_default();
    let names = resolve(wanted, &builtin, &dep, &aliases)
        .ok_or_else(|| ModprobeError::NotFound(wanted.into(), dir.display().to_string()))?;
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let paths = dep
        .load_order(&names)
        .map_err(|_| ModprobeError::NotFound(wanted.into(), dir.display().to_string()))?;
    for rel in paths {
        crate::modules::finit(&dir.join(rel).display().to_string())?;
    }
    Ok(())
}

/// `modprobe [-q] [--] NAME...`; the exit status.
pub fn run(args: &[String]) -> i32 {
    let quiet = args.iter().any(|a| a == "-q" || a == "--quiet");
    let names: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if names.is_empty() {
        eprintln!("{}", ModprobeError::Usage);
        return 1;
    }
    let dir = modules_dir();
    let mut status = 0;
    for name in names {
        if let Err(e) = load(name, &dir) {
            if !quiet {
                eprintln!("{e}");
            }
            status = 1;
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n\
                       kernel/net/802/stp.ko: kernel/net/llc/llc.ko\n\
                       kernel/net/llc/llc.ko:\n\
                       kernel/net/netfilter/nf_tables.ko:\n";
    const ALIASES: &str = "alias rtnl-link-bridge bridge\n\
                           alias nfnetlink-subsys-10 nf_tables\n\
                           alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n";

    #[test]
    fn names_aliases_and_builtins_resolve() {
        let dep = ModulesDep::parse(DEP);
        let builtin = "kernel/fs/ext4/ext4.ko\n";
        let r = |w| resolve(w, builtin, &dep, ALIASES);
        assert_eq!(r("bridge"), Some(vec!["bridge".to_string()]));
        assert_eq!(r("rtnl-link-bridge"), Some(vec!["bridge".to_string()]));
        assert_eq!(
            r("nfnetlink-subsys-10"),
            Some(vec!["nf_tables".to_string()])
        );
        assert_eq!(
            r("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"),
            Some(vec!["virtio_pci".to_string()])
        );
        assert_eq!(r("ext4"), Some(vec![]));
        assert_eq!(r("rtnl-link-nothing"), None);
    }

    #[test]
    fn dependencies_load_first() {
        let dep = ModulesDep::parse(DEP);
        assert_eq!(
            dep.load_order(&["bridge"]).unwrap(),
            [
                "kernel/net/llc/llc.ko",
                "kernel/net/802/stp.ko",
                "kernel/net/bridge/bridge.ko"
            ]
        );
    }

    #[test]
    fn without_a_name_it_is_a_usage_error() {
        assert_eq!(run(&["-q".to_string()]), 1);
    }
}
