//! Choosing QEMU's accelerator. `auto` takes KVM only where KVM can boot a
//! stock guest kernel: a /dev/kvm served by PVM (paravirtualized nested
//! KVM, `kvm_pvm`) cannot, so there the choice is TCG.

use std::path::Path;

use crate::config::Accelerator;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Choice {
    pub accel: Accel,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
#[error("hypervisor.accelerator = \"kvm\" but {0}")]
pub struct AccelError(String);

/// Decides the accelerator. `modules` is `/sys/module`, `dev_kvm` is
/// `/dev/kvm` (parameters so the decision is testable).
pub fn choose(
    requested: Accelerator,
    modules: &Path,
    dev_kvm: &Path,
) -> Result<Choice, AccelError> {
    let kvm = probe_kvm(modules, dev_kvm);
    match (requested, kvm) {
        (Accelerator::Tcg, _) => Ok(Choice {
            accel: Accel::Tcg,
            reason: "configured (hypervisor.accelerator = \"tcg\")".into(),
        }),
        (Accelerator::Kvm, Ok(why)) | (Accelerator::Auto, Ok(why)) => Ok(Choice {
            accel: Accel::Kvm,
            reason: why,
        }),
        (Accelerator::Kvm, Err(why)) => Err(AccelError(why)),
        (Accelerator::Auto, Err(why)) => Ok(Choice {
            accel: Accel::Tcg,
            reason: why,
        }),
    }
}

/// Ok(why KVM is usable) or Err(why not).
fn probe_kvm(modules: &Path, dev_kvm: &Path) -> Result<String, String> {
    if !dev_kvm.exists() {
        return Err(format!("{} does not exist", dev_kvm.display()));
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
    {
        return Err(format!("{} cannot be opened: {e}", dev_kvm.display()));
    }
    let loaded = |m: &str| modules.join(m).exists();
    let hardware = ["kvm_intel", "kvm_amd"].into_iter().find(|m| loaded(m));
    match hardware {
        Some(m) => Ok(format!("{} is backed by {m} (hardware virtualization)", dev_kvm.display())),
        None if loaded("kvm_pvm") => Err(format!(
            "{} is served by kvm_pvm (paravirtualized nested KVM), which cannot boot a stock guest kernel",
            dev_kvm.display()
        )),
        None => Err(format!("{} is present but no kvm_intel or kvm_amd module is loaded", dev_kvm.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(modules: &[&str], kvm: bool) -> (tempfile::TempDir, std::path::PathBuf) {
        let d = tempfile::tempdir().unwrap();
        for m in modules {
            std::fs::create_dir_all(d.path().join("module").join(m)).unwrap();
        }
        let dev = d.path().join("kvm");
        if kvm {
            std::fs::write(&dev, "").unwrap();
        }
        (d, dev)
    }

    #[test]
    fn pvm_means_tcg_with_reason() {
        let (d, dev) = host(&["kvm", "kvm_pvm"], true);
        let c = choose(Accelerator::Auto, &d.path().join("module"), &dev).unwrap();
        assert_eq!(c.accel, Accel::Tcg);
        assert!(c.reason.contains("kvm_pvm"), "{}", c.reason);
    }

    #[test]
    fn hardware_kvm_is_chosen() {
        let (d, dev) = host(&["kvm", "kvm_intel"], true);
        let c = choose(Accelerator::Auto, &d.path().join("module"), &dev).unwrap();
        assert_eq!(c.accel, Accel::Kvm);
    }

    #[test]
    fn forced_kvm_without_device_is_an_error() {
        let (d, dev) = host(&[], false);
        let err = choose(Accelerator::Kvm, &d.path().join("module"), &dev).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }

    #[test]
    fn forced_tcg_is_honoured() {
        let (d, dev) = host(&["kvm_intel"], true);
        assert_eq!(
            choose(Accelerator::Tcg, &d.path().join("module"), &dev)
                .unwrap()
                .accel,
            Accel::Tcg
        );
    }
}
