//! `modules.dep` of a kernel's modules: the dependency closure of modules,
//! in an order where every module follows its dependencies. hull-image
//! picks the guest's modules with it; the agent's `modprobe` loads with it.

use std::collections::{BTreeMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(
        "module {0:?} is not in modules.dep (neither built as a module nor known to this kernel)"
    )]
    Unknown(String),
}

/// Parsed `modules.dep`: module name -> (path, dependency paths).
pub struct ModulesDep {
    by_name: BTreeMap<String, String>,
    deps: BTreeMap<String, Vec<String>>,
}

/// `kernel/fs/fuse/virtiofs.ko` -> `virtiofs` (dashes count as underscores).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

impl ModulesDep {
    pub fn parse(text: &str) -> Self {
        let mut by_name = BTreeMap::new();
        let mut deps = BTreeMap::new();
        for line in text.lines() {
            let Some((path, rest)) = line.split_once(':') else {
                continue;
            };
            by_name.insert(module_name(path), path.to_string());
            deps.insert(
                path.to_string(),
                rest.split_whitespace().map(str::to_string).collect(),
            );
        }
        ModulesDep { by_name, deps }
    }

    /// Names of the modules whose path starts with one of `prefixes`.
    pub fn names_under(&self, prefixes: &[&str]) -> Vec<String> {
        self.by_name
            .iter()
            .filter(|(_, path)| prefixes.iter().any(|p| path.starts_with(p)))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// `modules.dep` for only `paths` (each listed with its dependencies,
    /// which must be among them), sorted.
    pub fn subset_text(&self, paths: &HashSet<String>) -> String {
        let mut text = String::new();
        for (path, deps) in &self.deps {
            if paths.contains(path) {
                text.push_str(&format!("{path}: {}\n", deps.join(" ")));
            }
        }
        text.replace(": \n", ":\n")
    }

    /// Paths (relative to the modules directory) of `wanted` and all they
    /// depend on, dependencies first.
    pub fn load_order(&self, wanted: &[&str]) -> Result<Vec<String>, ModuleError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        for name in wanted {
            let path = self
                .by_name
                .get(&name.replace('-', "_"))
                .ok_or_else(|| ModuleError::Unknown(name.to_string()))?;
            self.visit(path, &mut seen, &mut order);
        }
        Ok(order)
    }

    fn visit(&self, path: &str, seen: &mut HashSet<String>, order: &mut Vec<String>) {
        if !seen.insert(path.to_string()) {
            return;
        }
        for dep in self.deps.get(path).into_iter().flatten() {
            self.visit(dep, seen, order);
        }
        order.push(path.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str =
        "kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio.ko\n\
                       kernel/fs/fuse/fuse.ko:\n\
                       kernel/drivers/virtio/virtio.ko:\n\
                       kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio.ko\n";

    #[test]
    fn dependencies_come_first_and_once() {
        let d = ModulesDep::parse(DEP);
        let order = d.load_order(&["virtiofs", "virtio_pci"]).unwrap();
        assert_eq!(
            order,
            [
                "kernel/fs/fuse/fuse.ko",
                "kernel/drivers/virtio/virtio.ko",
                "kernel/fs/fuse/virtiofs.ko",
                "kernel/drivers/virtio/virtio_pci.ko"
            ]
        );
    }

    #[test]
    fn unknown_module_is_named() {
        let err = ModulesDep::parse(DEP).load_order(&["nbd"]).unwrap_err();
        assert!(err.to_string().contains("nbd"));
    }
}
