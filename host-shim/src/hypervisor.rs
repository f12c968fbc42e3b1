//! The hypervisor behind a sandbox. Hull drives one through this trait:
//! what to run for a VM with the given devices. QEMU is the implemented
//! backend (KVM or TCG); another VMM would be another implementation.

use std::path::{Path, PathBuf};

use protocols::root_image::RootDevice;

use crate::accel::Accel;
use crate::guest_root::RootImageDisk;

/// The 9p / virtio-fs tag of the shared directory.
pub const SHARED_TAG: &str = "hullfs";

/// How the guest's vsock device is backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VsockDevice {
    /// vhost-user device served by a helper on this socket (hybrid vsock).
    VhostUser { socket: PathBuf },
    /// The host kernel's vhost-vsock, with this guest CID.
    Kernel { cid: u32 },
}

/// How the shared directory reaches the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedDevice {
    /// vhost-user-fs served by virtiofsd on this socket.
    VirtioFs { socket: PathBuf },
    /// 9p served by the hypervisor itself from this directory.
    NineP { dir: PathBuf },
}

/// Everything a hypervisor needs to start one sandbox VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub accel: Accel,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The rootfs image, for a guest booted from one.
    pub root_disk: Option<RootImageDisk>,
    /// `-bios`: the firmware before the kernel; None: QEMU's default.
    pub firmware: Option<PathBuf>,
    /// A virtio-balloon device reporting the guest's free pages.
    pub free_page_reporting: bool,
    /// TCG's translated-code buffer in MiB; None: QEMU's default.
    pub tcg_code_cache_mib: Option<u32>,
    pub cmdline: String,
    /// The guest's serial console is sent to this Unix socket.
    pub console: PathBuf,
    pub vsock: VsockDevice,
    pub shared: SharedDevice,
    /// virtio-net NICs backed by taps the hypervisor gets as open fds.
    pub nics: Vec<Nic>,
    /// The monitor socket (QMP) the hypervisor listens on, if any.
    pub qmp: Option<PathBuf>,
    /// Free PCIe slots for devices hot-plugged later (`hotplug-<n>`).
    pub hotplug_slots: u32,
}

/// The id of hot-plug slot `n` (a PCIe root port).
pub fn hotplug_slot(n: u32) -> String {
    format!("hotplug-{n}")
}

/// A virtio-net NIC: the tap's descriptor number in the hypervisor process,
/// and the MAC address the guest sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub fd: i32,
    pub mac: String,
}

pub trait Hypervisor: Send + Sync {
    /// Short name, used for the process, its log file and in errors.
    fn name(&self) -> &'static str;
    /// The program to run.
    fn binary(&self) -> &Path;
    /// Its arguments for `vm`.
    fn args(&self, vm: &VmSpec) -> Vec<String>;
}

/// QEMU's q35 machine, booting the kernel directly (PVH for a vmlinux).
pub struct Qemu {
    pub path: PathBuf,
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn binary(&self) -> &Path {
        &self.path
    }

    fn args(&self, vm: &VmSpec) -> Vec<String> {
        let mem = format!("{}M", vm.memory_mib);
        // virtio-pmem's memory sits in the hot-plug area above the RAM.
        let mem_option = match &vm.root_disk {
            Some(d) if d.device == RootDevice::Pmem => format!(
                "{mem},slots=1,maxmem={}M",
                vm.memory_mib as u64 + (d.size >> 20).div_ceil(1024) * 1024
            ),
            _ => mem.clone(),
        };
        let cpu = if vm.accel == Accel::Kvm {
            "host"
        } else {
            // Without ERMS the guest's kernel copies and clears memory with
            // unrolled moves instead of `rep movsb`, which TCG runs one byte
            // per loop turn: raw vsock 68 -> 190 MB/s, boot 180 ms shorter.
            "max,-erms"
        };
        let accel = match (vm.accel, vm.tcg_code_cache_mib) {
            (Accel::Tcg, Some(mib)) => format!("tcg,tb-size={mib}"),
            (accel, _) => accel.qemu_name().to_string(),
        };
        let mut a: Vec<String> = [
            "-name",
            &vm.name,
            "-machine",
            "q35",
            "-accel",
            &accel,
            "-cpu",
            cpu,
            "-smp",
            &vm.vcpus.to_string(),
            "-m",
            &mem_option,
            // vhost-user devices need guest memory they can map: a shared memfd.
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem},share=on"),
            "-numa",
            "node,memdev=mem",
            "-kernel",
            &vm.kernel.display().to_string(),
            "-initrd",
            &vm.initrd.display().to_string(),
            "-append",
            &vm.cmdline,
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-chardev",
            &format!("socket,id=console,path={}", vm.console.display()),
            "-serial",
            "chardev:console",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(firmware) = &vm.firmware {
            a.extend(["-bios".to_string(), firmware.display().to_string()]);
        }
        if let Some(disk) = &vm.root_disk {
            a.extend(root_disk_args(disk));
        }
        if vm.free_page_reporting {
            a.extend([
                "-device".to_string(),
                "virtio-balloon-pci,free-page-reporting=on".to_string(),
            ]);
        }
        a.extend(match &vm.vsock {
            VsockDevice::VhostUser { socket } => vec![
                "-chardev".to_string(),
                format!("socket,id=vsock,path={}", socket.display()),
                "-device".to_string(),
                "vhost-user-vsock-pci,chardev=vsock".to_string(),
            ],
            VsockDevice::Kernel { cid } => vec![
                "-device".to_string(),
                format!("vhost-vsock-pci,guest-cid={cid}"),
            ],
        });
        if let Some(qmp) = &vm.qmp {
            a.extend([
                "-qmp".to_string(),
                format!("unix:{},server=on,wait=off", qmp.display()),
            ]);
        }
        for n in 0..vm.hotplug_slots {
            a.extend([
                "-device".to_string(),
                format!(
                    "pcie-root-port,id={},bus=pcie.0,chassis={}",
                    hotplug_slot(n),
                    n + 1
                ),
            ]);
        }
        for (i, nic) in vm.nics.iter().enumerate() {
            a.extend([
                "-netdev".to_string(),
                format!("tap,id=net{i},fd={}", nic.fd),
                "-device".to_string(),
                format!("virtio-net-pci,netdev=net{i},mac={}", nic.mac),
            ]);
        }
        a.extend(match &vm.shared {
            SharedDevice::VirtioFs { socket } => vec![
                "-chardev".to_string(),
                format!("socket,id=fs,path={}", socket.display()),
                "-device".to_string(),
                format!("vhost-user-fs-pci,chardev=fs,tag={SHARED_TAG},queue-size=1024"),
            ],
            SharedDevice::NineP { dir } => vec![
                "-fsdev".to_string(),
                // passthrough: QEMU 7.2's mapped-xattr cannot read the real
                // symlinks of an image rootfs (busybox's /bin/sh fails), so
                // the guest's ownership reaches the host files; QEMU runs
                // under helper_limits, so no setuid bit or device node does.
                format!(
                    "local,id=fs,path={},security_model=passthrough",
                    dir.display()
                ),
                "-device".to_string(),
                format!("virtio-9p-pci,fsdev=fs,mount_tag={SHARED_TAG}"),
            ],
        });
        a
    }
}

/// The rootfs image, read-only to the guest in both forms: on pmem the
/// file is mapped shared (one copy in the host's page cache for every VM)
/// and read-only, so no guest can change it for the others.
fn root_disk_args(disk: &RootImageDisk) -> Vec<String> {
    let path = disk.path.display();
    match disk.device {
        RootDevice::Pmem => vec![
            "-object".into(),
            format!(
                "memory-backend-file,id=rootimg,mem-path={path},size={},share=on,readonly=on",
                disk.size
            ),
            "-device".into(),
            "virtio-pmem-pci,memdev=rootimg".into(),
        ],
        RootDevice::Blk => vec![
            "-drive".into(),
            format!("file={path},if=none,id=rootimg,format=raw,readonly=on"),
            "-device".into(),
            "virtio-blk-pci,drive=rootimg".into(),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(vsock: VsockDevice, shared: SharedDevice) -> VmSpec {
        VmSpec {
            name: "hull-t".into(),
            accel: Accel::Tcg,
            vcpus: 2,
            memory_mib: 256,
            kernel: "/k".into(),
            initrd: "/i".into(),
            root_disk: None,
            firmware: Some("/fw".into()),
            free_page_reporting: true,
            tcg_code_cache_mib: Some(32),
            cmdline: "console=ttyS0".into(),
            console: "/c".into(),
            vsock,
            shared,
            nics: vec![Nic {
                fd: 3,
                mac: "0a:58:0a:f1:00:02".into(),
            }],
            qmp: Some("/s/qmp.sock".into()),
            hotplug_slots: 2,
        }
    }

    fn after<'a>(args: &'a [String], flag: &str, containing: &str) -> Option<&'a str> {
        args.windows(2)
            .find(|w| w[0] == flag && w[1].contains(containing))
            .map(|w| w[1].as_str())
    }

    #[test]
    fn kvm_and_qemus_own_code_cache_take_no_tb_size() {
        let q = Qemu { path: "/q".into() };
        let shared = || SharedDevice::NineP { dir: "/s".into() };
        let kernel = || VsockDevice::Kernel { cid: 3 };
        let mut vm = spec(kernel(), shared());
        vm.accel = Accel::Kvm;
        assert_eq!(after(&q.args(&vm), "-accel", ""), Some("kvm"));
        assert_eq!(after(&q.args(&vm), "-cpu", ""), Some("host"));
        let mut vm = spec(kernel(), shared());
        vm.tcg_code_cache_mib = None;
        vm.free_page_reporting = false;
        let a = q.args(&vm);
        assert_eq!(after(&a, "-accel", ""), Some("tcg"));
        assert!(after(&a, "-device", "balloon").is_none());
    }

    #[test]
    fn qemu_gets_the_devices_the_transports_need() {
        let q = Qemu { path: "/q".into() };
        let a = q.args(&spec(
            VsockDevice::VhostUser {
                socket: "/s/v.sock".into(),
            },
            SharedDevice::VirtioFs {
                socket: "/s/fs.sock".into(),
            },
        ));
        assert_eq!(after(&a, "-accel", "tcg"), Some("tcg,tb-size=32"));
        assert_eq!(after(&a, "-cpu", ""), Some("max,-erms"));
        assert!(after(&a, "-device", "free-page-reporting=on").is_some());
        assert_eq!(
            after(&a, "-qmp", "unix:"),
            Some("unix:/s/qmp.sock,server=on,wait=off")
        );
        assert_eq!(
            after(&a, "-device", "id=hotplug-1"),
            Some("pcie-root-port,id=hotplug-1,bus=pcie.0,chassis=2")
        );
        assert_eq!(after(&a, "-bios", "/"), Some("/fw"));
        assert_eq!(
            after(&a, "-device", "vsock"),
            Some("vhost-user-vsock-pci,chardev=vsock")
        );
        assert!(after(&a, "-chardev", "path=/s/fs.sock").is_some());
        assert!(
            after(&a, "-object", "share=on").is_some(),
            "vhost-user needs shared memory"
        );

        let a = q.args(&spec(
            VsockDevice::Kernel { cid: 42 },
            SharedDevice::NineP {
                dir: "/s/shared".into(),
            },
        ));
        assert_eq!(
            after(&a, "-device", "vsock"),
            Some("vhost-vsock-pci,guest-cid=42")
        );
        assert!(after(&a, "-fsdev", "path=/s/shared").is_some());
        assert!(after(&a, "-chardev", "id=vsock").is_none());
        assert_eq!(after(&a, "-netdev", "tap"), Some("tap,id=net0,fd=3"));
        assert_eq!(
            after(&a, "-device", "virtio-net"),
            Some("virtio-net-pci,netdev=net0,mac=0a:58:0a:f1:00:02")
        );
    }

    #[test]
    fn a_rootfs_image_reaches_the_guest_read_only() {
        let q = Qemu { path: "/q".into() };
        let mut vm = spec(
            VsockDevice::Kernel { cid: 42 },
            SharedDevice::NineP { dir: "/d".into() },
        );
        vm.root_disk = Some(RootImageDisk {
            path: "/img".into(),
            size: 72 << 20,
            device: RootDevice::Pmem,
        });
        let a = q.args(&vm);
        assert_eq!(after(&a, "-m", "M"), Some("256M,slots=1,maxmem=1280M"));
        assert_eq!(
            after(&a, "-object", "rootimg"),
            Some("memory-backend-file,id=rootimg,mem-path=/img,size=75497472,share=on,readonly=on")
        );
        assert_eq!(
            after(&a, "-device", "pmem"),
            Some("virtio-pmem-pci,memdev=rootimg")
        );
        vm.root_disk.as_mut().unwrap().device = RootDevice::Blk;
        let a = q.args(&vm);
        assert_eq!(after(&a, "-m", "M"), Some("256M"));
        assert!(after(&a, "-drive", "readonly=on").is_some());
    }
}
