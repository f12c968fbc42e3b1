//! Two builds from the same inputs are byte-identical: the real Debian
//! kernel and modules (installed by scripts/install-deps.sh), any agent file.

use std::process::Command;

fn build(out: &std::path::Path, agent: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_hull-image"))
        .arg("--agent")
        .arg(agent)
        .arg("--boot")
        .arg(agent)
        .arg("--out")
        .arg(out)
        .status()
        .expect("run hull-image");
    assert!(
        status.success(),
        "hull-image failed (is linux-image-amd64 installed?)"
    );
}

#[test]
fn two_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"stand-in agent binary").unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    build(&a, &agent);
    build(&b, &agent);
    for file in [
        "vmlinux",
        "initrd.img",
        "boot-initrd.img",
        "rootfs.img",
        "rootfs.img.verity",
    ] {
        let (x, y) = (
            std::fs::read(a.join(file)).unwrap(),
            std::fs::read(b.join(file)).unwrap(),
        );
        assert!(!x.is_empty(), "{file} is empty");
        assert!(x == y, "{file} differs between two builds");
    }
    let vmlinux = std::fs::read(a.join("vmlinux")).unwrap();
    assert!(
        vmlinux.starts_with(b"\x7fELF"),
        "vmlinux is an ELF image (PVH boot)"
    );
}

/// The rootfs image's tree, made by veritysetup, is what hull-image's own
/// verifier computes from the data: each checks the other.
#[test]
fn the_rootfs_image_verifies_and_a_flipped_byte_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("agent");
    std::fs::write(&agent, b"stand-in agent binary").unwrap();
    let out = dir.path().join("out");
    build(&out, &agent);
    let image = out.join("rootfs.img");
    let verity: protocols::root_image::Verity =
        serde_json::from_slice(&std::fs::read(out.join("rootfs.img.verity")).unwrap()).unwrap();
    let result = hull_image::verity::verify(&image, &verity).unwrap();
    assert_eq!(result, Ok(()));
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[4096 * 3 + 17] ^= 1;
    std::fs::write(&image, &bytes).unwrap();
    let result = hull_image::verity::verify(&image, &verity).unwrap();
    assert!(
        matches!(result, Err(hull_image::verity::Mismatch::RootHash { .. })),
        "{result:?}"
    );
}
