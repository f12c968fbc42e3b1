//! Storage drivers through CreateSandbox and CreateContainer: ephemeral
//! tmpfs, bind, overlay over a lower directory, a block device with ext4;
//! each mounted in the agent's mount namespace and gone after removal.

use std::process::Command;

use protocols::agent;
use ttrpc::Code;

use crate::fixture::{assert_code, ctx, Agent};

fn agent_mounts(a: &Agent) -> String {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", a.pid())).expect("mountinfo")
}

fn storage(driver: &str, source: &str, mount_point: &std::path::Path) -> agent::Storage {
    agent::Storage {
        driver: driver.into(),
        source: source.into(),
        mount_point: mount_point.display().to_string(),
        ..Default::default()
    }
}

/// A loop device holding an ext4 filesystem with one file; detached on drop.
struct LoopDisk(String);

impl LoopDisk {
    fn new(dir: &std::path::Path) -> LoopDisk {
        let img = dir.join("disk.img");
        let run = |cmd: &mut Command| {
            let out = cmd.output().expect("spawn");
            assert!(
                out.status.success(),
                "{cmd:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let content = dir.join("disk-content");
        std::fs::create_dir_all(&content).expect("mkdir");
        std::fs::write(content.join("on-disk"), "from the block device\n").expect("write");
        run(Command::new("truncate").args(["-s", "16M"]).arg(&img));
        run(Command::new("mkfs.ext4")
            .args(["-q", "-d"])
            .arg(&content)
            .arg(&img));
        LoopDisk(run(Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&img)))
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_storages_mount_and_unmount() {
    let a = Agent::start().await;
    let d = a.dir.path();
    let lower = d.join("lower");
    std::fs::create_dir_all(&lower).expect("mkdir");
    std::fs::write(lower.join("from-lower"), "lower\n").expect("write");
    let disk = LoopDisk::new(d);
    let mut overlay = storage("overlayfs", "overlay", &d.join("m/overlay"));
    overlay.options = vec![
        format!("lowerdir={}", lower.display()),
        format!("upperdir={}", d.join("ovl/upper").display()),
        format!("workdir={}", d.join("ovl/work").display()),
    ];
    let mut blk = storage("blk", &disk.0, &d.join("m/blk"));
    blk.fstype = "ext4".into();
    let mut bind = storage("bind", &lower.display().to_string(), &d.join("m/bind"));
    bind.options = vec!["ro".into()];
    let req = agent::CreateSandboxRequest {
        storages: vec![
            storage("ephemeral", "", &d.join("m/eph")),
            bind,
            overlay,
            blk,
        ],
        ..Default::default()
    };
    a.agent
        .create_sandbox(ctx(), &req)
        .await
        .expect("CreateSandbox");
    let mounts = agent_mounts(&a);
    for (point, fstype) in [
        ("m/eph", "tmpfs"),
        ("m/overlay", "overlay"),
        ("m/blk", "ext4"),
    ] {
        let p = d.join(point).display().to_string();
        assert!(
            mounts
                .lines()
                .any(|l| l.contains(&format!(" {p} ")) && l.contains(&format!(" - {fstype} "))),
            "{p} not a {fstype} mount:\n{mounts}"
        );
    }
    let bind_line = mounts
        .lines()
        .find(|l| l.contains(&format!(" {} ", d.join("m/bind").display())))
        .expect("bind mount");
    assert!(
        bind_line
            .split(' ')
            .nth(5)
            .is_some_and(|o| o.starts_with("ro")),
        "{bind_line}"
    );
    // Host mounts are private to the agent's namespace: seen through it.
    let root = format!("/proc/{}/root", a.pid());
    let read =
        |p: &str| std::fs::read_to_string(format!("{root}{}", d.join(p).display())).expect(p);
    assert_eq!(read("m/overlay/from-lower"), "lower\n");
    assert_eq!(read("m/blk/on-disk"), "from the block device\n");

    a.agent
        .destroy_sandbox(ctx(), &Default::default())
        .await
        .expect("DestroySandbox");
    let mounts = agent_mounts(&a);
    assert!(
        !mounts.contains(&d.join("m/").display().to_string()),
        "left mounted:\n{mounts}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_storage_is_its_rootfs_and_bad_storage_is_named() {
    let a = Agent::start().await;
    let mount_point = a.dir.path().join("rootfs-overlay");
    let mut rootfs = storage("overlayfs", "overlay", &mount_point);
    rootfs.options = vec![
        format!("lowerdir={}", crate::fixture::rootfs().display()),
        format!("upperdir={}", a.dir.path().join("up").display()),
        format!("workdir={}", a.dir.path().join("work").display()),
    ];
    let mut spec = a.spec(
        "r",
        &["sh", "-c", "echo written > /new-file; cat /new-file"],
    );
    let mut root = spec.root().clone().expect("root");
    root.set_path(mount_point.clone()).set_readonly(Some(false));
    spec.set_root(Some(root));
    let req = agent::CreateContainerRequest {
        container_id: "r".into(),
        storages: vec![rootfs],
        hull_oci_spec_json: serde_json::to_string(&spec).expect("json"),
        ..Default::default()
    };
    a.agent
        .create_container(ctx(), &req)
        .await
        .expect("CreateContainer with an overlay rootfs");
    a.start_container("r").await.expect("start");
    assert_eq!(
        a.read_all("r", "", protocols::stream::StreamKind::Stdout)
            .await,
        b"written\n"
    );
    assert_eq!(a.wait("r", "").await.expect("wait"), 0);
    // The write went to the upper directory, not the shared lower one.
    assert!(a.dir.path().join("up/new-file").exists());
    assert!(!crate::fixture::rootfs().join("new-file").exists());
    a.remove("r").await.expect("remove");
    assert!(!agent_mounts(&a).contains(&mount_point.display().to_string()));

    let bad = agent::CreateContainerRequest {
        container_id: "b".into(),
        storages: vec![storage("nbd", "x", &a.dir.path().join("b"))],
        ..req
    };
    assert_code(
        a.agent.create_container(ctx(), &bad).await.map(drop),
        Code::INVALID_ARGUMENT,
        "nbd",
    );
    // Nothing of the refused container remains.
    assert_code(a.start_container("b").await, Code::NOT_FOUND, "b");
}
