//! Which of the kernel's modules each guest carries: the initrd, the small
//! initrd of an image boot, and the minimal rootfs image.

use std::collections::HashSet;

pub use protocols::modules_dep::{module_name, ModuleError, ModulesDep};

/// The drivers Hull's guest uses: virtio PCI transport, vsock, virtio-fs,
/// 9p, overlay, virtio-blk, virtio-net, and virtio-balloon (free page
/// reporting hands the pages the guest frees back to the host).
pub const REQUIRED: &[&str] = &[
    "virtio_pci",
    "vmw_vsock_virtio_transport",
    "virtiofs",
    "9pnet_virtio",
    "9p",
    "overlay",
    "virtio_blk",
    "virtio_net",
    "virtio_balloon",
];

/// What the initrd adds to [`REQUIRED`]: with no modules loading on demand
/// there, a privileged container managing a bridge (`brctl addbr`, `ip
/// link add type bridge`) needs it loaded already. A rootfs image loads it
/// when asked.
pub const INITRD_EXTRA: &[&str] = &["bridge"];

/// What the minimal rootfs image carries for containers besides
/// [`REQUIRED`], as path prefixes under the modules directory (a directory
/// with a trailing `/`); their dependencies come along. The kernel loads
/// from these on demand (`request_module`), as a host would: networking
/// (bridge, veth, vxlan, tun, netfilter with nf_tables and iptables, ipvs,
/// traffic control, wireguard), filesystems containers mount, device-mapper
/// and loop devices. Kata's guest kernel config enables the same families.
pub const ROOTFS_PREFIXES: &[&str] = &[
    "kernel/net/",
    "kernel/fs/overlayfs/",
    "kernel/fs/ext4/",
    "kernel/fs/xfs/",
    "kernel/fs/btrfs/",
    "kernel/fs/fuse/",
    "kernel/fs/squashfs/",
    "kernel/fs/erofs/",
    "kernel/fs/fat/",
    "kernel/fs/isofs/",
    "kernel/fs/nls/",
    "kernel/fs/9p/",
    "kernel/fs/autofs/",
    "kernel/fs/binfmt_misc.ko",
    "kernel/drivers/md/",
    "kernel/drivers/nvdimm/",
    "kernel/drivers/virtio/",
    "kernel/drivers/block/virtio_blk.ko",
    "kernel/drivers/block/loop.ko",
    "kernel/drivers/block/nbd.ko",
    "kernel/drivers/char/hw_random/virtio-rng.ko",
    "kernel/drivers/net/veth.ko",
    "kernel/drivers/net/vxlan/",
    "kernel/drivers/net/tun.ko",
    "kernel/drivers/net/tap.ko",
    "kernel/drivers/net/macvlan.ko",
    "kernel/drivers/net/macvtap.ko",
    "kernel/drivers/net/ipvlan/",
    "kernel/drivers/net/dummy.ko",
    "kernel/drivers/net/bonding/",
    "kernel/drivers/net/team/",
    "kernel/drivers/net/geneve.ko",
    "kernel/drivers/net/wireguard/",
    "kernel/drivers/net/ifb.ko",
    "kernel/drivers/net/nlmon.ko",
    "kernel/drivers/net/vrf.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/crypto/",
    "kernel/arch/x86/crypto/",
];

/// What the small initrd of an image boot loads to reach the image: the
/// pmem or blk device, device-mapper's verity target and erofs.
pub const BOOT_REQUIRED: &[&str] = &[
    "virtio_pci",
    "virtio_pmem",
    "nd_pmem",
    "virtio_blk",
    "dm_verity",
    // erofs needs libcrc32c, whose start asks the crypto API for crc32c;
    // with no modprobe in the initrd, it must be in already.
    "crc32c_generic",
    "erofs",
];

/// The lines of `modules.alias` whose module is in `names`.
pub fn aliases_for(alias_text: &str, names: &HashSet<String>) -> String {
    alias_text
        .lines()
        .filter(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some("alias")
                && words
                    .nth(1)
                    .is_some_and(|m| names.contains(&m.replace('-', "_")))
        })
        .map(|l| format!("{l}\n"))
        .collect()
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
    fn a_subset_keeps_its_lines_and_aliases() {
        let d = ModulesDep::parse(DEP);
        assert_eq!(d.names_under(&["kernel/fs/"]), ["fuse", "virtiofs"]);
        let paths: HashSet<String> = d.load_order(&["virtiofs"]).unwrap().into_iter().collect();
        assert_eq!(
            d.subset_text(&paths),
            "kernel/drivers/virtio/virtio.ko:\n\
             kernel/fs/fuse/fuse.ko:\n\
             kernel/fs/fuse/virtiofs.ko: kernel/fs/fuse/fuse.ko kernel/drivers/virtio/virtio.ko\n"
        );
        let names: HashSet<String> = ["virtiofs".to_string()].into();
        let aliases = "alias fs-virtiofs virtiofs\nalias char-major-10-229 fuse\n";
        assert_eq!(aliases_for(aliases, &names), "alias fs-virtiofs virtiofs\n");
    }
}
