//! A Kata client driving the agent: every request is built from Kata's
//! messages and field numbers only (the protobuf `OCI` spec and `Process`,
//! none of Hull's extension fields), through create, start, exec, wait,
//! ReadStdout and remove.

use protobuf::Message;
use protocols::agent;
use protocols::oci;
use protocols::stream::StreamKind;

use crate::fixture::{ctx, rootfs, Agent};

/// The field numbers a message carries on the wire, at its top level.
fn wire_fields(m: &impl Message) -> Vec<u32> {
    let bytes = m.write_to_bytes().expect("encode");
    let any = protobuf::well_known_types::empty::Empty::parse_from_bytes(&bytes).expect("decode");
    any.special_fields
        .unknown_fields()
        .iter()
        .map(|(n, _)| n)
        .collect()
}

/// Kata's highest agent.proto field numbers are far below Hull's (1000+).
fn assert_kata_only(m: &impl Message) {
    let fields = wire_fields(m);
    assert!(
        !fields.is_empty() && fields.iter().all(|&n| n < 1000),
        "{fields:?}"
    );
}

fn mount(destination: &str, typ: &str, options: &[&str]) -> oci::Mount {
    oci::Mount {
        destination: destination.into(),
        source: typ.into(),
        type_: typ.into(),
        options: options.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// The spec a Kata runtime sends for `sh -c ...` in the busybox root.
fn kata_spec(a: &Agent, id: &str, args: &[&str]) -> oci::Spec {
    let caps: Vec<String> = ["CAP_CHOWN", "CAP_KILL", "CAP_SETUID", "CAP_SETGID"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let process = oci::Process {
        Args: args.iter().map(|s| s.to_string()).collect(),
        Env: vec!["PATH=/bin:/usr/bin".into(), "FROM=kata".into()],
        Cwd: "/".into(),
        User: Some(oci::User::default()).into(),
        Capabilities: Some(oci::LinuxCapabilities {
            Bounding: caps.clone(),
            Effective: caps.clone(),
            Permitted: caps,
            ..Default::default()
        })
        .into(),
        NoNewPrivileges: true,
        ..Default::default()
    };
    let namespaces = ["pid", "ipc", "uts", "mount"]
        .iter()
        .map(|t| oci::LinuxNamespace {
            Type: t.to_string(),
            ..Default::default()
        })
        .collect();
    let linux = oci::Linux {
        CgroupsPath: a.cgroups_path(id),
        Namespaces: namespaces,
        MaskedPaths: vec!["/proc/kcore".into()],
        ReadonlyPaths: vec!["/proc/sys".into()],
        ..Default::default()
    };
    oci::Spec {
        Version: "1.0.2-dev".into(),
        Process: Some(process).into(),
        Root: Some(oci::Root {
            Path: rootfs().display().to_string(),
            Readonly: true,
            ..Default::default()
        })
        .into(),
        Hostname: "kata-shaped".into(),
        Mounts: vec![
            mount("/proc", "proc", &["nosuid", "noexec", "nodev"]),
            mount(
                "/dev",
                "tmpfs",
                &["nosuid", "strictatime", "mode=755", "size=65536k"],
            ),
            mount("/sys", "sysfs", &["nosuid", "noexec", "nodev", "ro"]),
            mount("/tmp", "tmpfs", &["nosuid", "nodev"]),
        ],
        Linux: Some(linux).into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kata_client_drives_a_container_with_kata_messages_only() {
    let a = Agent::start().await;
    let create = agent::CreateContainerRequest {
        container_id: "k".into(),
        exec_id: "k".into(),
        OCI: Some(kata_spec(
            &a,
            "k",
            &["sh", "-c", "hostname; echo $FROM; sleep 100"],
        ))
        .into(),
        ..Default::default()
    };
    assert_kata_only(&create);
    a.agent
        .create_container(ctx(), &create)
        .await
        .expect("CreateContainer (Kata form)");
    let start = agent::StartContainerRequest {
        container_id: "k".into(),
        ..Default::default()
    };
    assert_kata_only(&start);
    a.agent
        .start_container(ctx(), &start)
        .await
        .expect("StartContainer");
    let exec = agent::ExecProcessRequest {
        container_id: "k".into(),
        exec_id: "e".into(),
        process: Some(oci::Process {
            Args: vec!["sh".into(), "-c".into(), "cat /proc/1/comm; exit 5".into()],
            Env: vec!["PATH=/bin".into()],
            Cwd: "/tmp".into(),
            User: Some(oci::User::default()).into(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    assert_kata_only(&exec);
    a.agent
        .exec_process(ctx(), &exec)
        .await
        .expect("ExecProcess (Kata form)");
    assert_eq!(a.read_all("k", "e", StreamKind::Stdout).await, b"sleep\n");
    assert_eq!(a.wait("k", "e").await.expect("WaitProcess"), 5);
    let mut init_out = Vec::new();
    while init_out.len() < b"kata-shaped\nkata\n".len() {
        init_out.extend(
            a.read_chunk("k", "", StreamKind::Stdout)
                .await
                .expect("ReadStdout"),
        );
    }
    assert_eq!(init_out, b"kata-shaped\nkata\n");
    let remove = agent::RemoveContainerRequest {
        container_id: "k".into(),
        timeout: 10,
        ..Default::default()
    };
    assert_kata_only(&remove);
    a.agent
        .remove_container(ctx(), &remove)
        .await
        .expect("RemoveContainer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_with_neither_spec_is_refused_by_name() {
    let a = Agent::start().await;
    let create = agent::CreateContainerRequest {
        container_id: "none".into(),
        ..Default::default()
    };
    let err = a
        .agent
        .create_container(ctx(), &create)
        .await
        .expect_err("no spec");
    assert!(format!("{err:?}").contains("OCI"), "{err:?}");
}
