//! Two builds from the same inputs are byte-identical: the real Debian
//! kernel and modules (installed by scripts/install-deps.sh), any agent file.

use std::process::Command;

fn build(out: &std::path::Path, agent: &std::path::Path) {
    let status = Command::new(env!("CARGO_BIN_EXE_hull-image"))
        .arg("--agent")
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
    for file in ["vmlinux", "initrd.img"] {
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
