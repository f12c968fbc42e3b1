//! Containers and processes: create, start, exec, signal, wait, stats,
//! update, pause, remove; every error with its code; concurrent use.

use std::time::{Duration, Instant};

use protocols::agent;
use protocols::stream::StreamKind;
use ttrpc::Code;

use crate::fixture::{assert_code, ctx, long_poll, Agent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_version() {
    let a = Agent::start().await;
    let r = a
        .health
        .check(ctx(), &Default::default())
        .await
        .expect("Check");
    assert_eq!(
        r.status.enum_value_or_default(),
        protocols::health::health_check_response::ServingStatus::SERVING
    );
    let v = a
        .health
        .version(ctx(), &Default::default())
        .await
        .expect("Version");
    assert_eq!(v.agent_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_runs_and_reports_its_exit_stats_and_removal() {
    let a = Agent::start().await;
    a.run(
        "c1",
        &["sh", "-c", "echo out; echo err >&2; read x; exit 3"],
    )
    .await;
    let out = a
        .raw_stream("c1", "", StreamKind::Stdout)
        .await
        .expect("stdout");
    let err = a
        .raw_stream("c1", "", StreamKind::Stderr)
        .await
        .expect("stderr");
    let stats = a
        .agent
        .stats_container(
            ctx(),
            &agent::StatsContainerRequest {
                container_id: "c1".into(),
                ..Default::default()
            },
        )
        .await
        .expect("StatsContainer");
    assert!(!stats.hull_pids.is_empty(), "no pids in {stats:?}");
    assert!(stats.cgroup_stats.memory_stats.usage.usage > 0, "{stats:?}");
    a.write_stdin("c1", "", b"go\n")
        .await
        .expect("WriteStdin to init");
    assert_eq!(crate::fixture::read_to_end(out).await, "out\n");
    assert_eq!(crate::fixture::read_to_end(err).await, "err\n");
    assert_eq!(a.wait("c1", "").await.expect("WaitProcess"), 3);
    a.remove("c1").await.expect("RemoveContainer");
    assert_code(a.wait("c1", "").await, Code::NOT_FOUND, "c1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_calls_get_specific_codes() {
    let a = Agent::start().await;
    assert_code(a.start_container("nope").await, Code::NOT_FOUND, "nope");
    assert_code(a.wait("nope", "").await, Code::NOT_FOUND, "nope");
    assert_code(a.signal("nope", "", 9).await, Code::NOT_FOUND, "nope");
    assert_code(a.remove("nope").await, Code::NOT_FOUND, "nope");
    assert_code(
        a.read_chunk("nope", "", StreamKind::Stdout).await,
        Code::NOT_FOUND,
        "nope",
    );
    assert_code(
        a.create("", &a.spec("x", &["true"])).await,
        Code::INVALID_ARGUMENT,
        "container_id",
    );
    let bad = agent::CreateContainerRequest {
        container_id: "bad".into(),
        hull_oci_spec_json: "{\"ociVersion\": 5}".into(),
        ..Default::default()
    };
    assert_code(
        a.agent.create_container(ctx(), &bad).await.map(drop),
        Code::INVALID_ARGUMENT,
        "hull_oci_spec_json",
    );

    a.create("c", &a.spec("c", &["sleep", "100"]))
        .await
        .expect("create");
    assert_code(
        a.create("c", &a.spec("c", &["true"])).await,
        Code::ALREADY_EXISTS,
        "\"c\"",
    );
    // Created, not started: exec needs a running container.
    assert_code(
        a.exec("c", "e", &Agent::process(&["true"], false)).await,
        Code::FAILED_PRECONDITION,
        "c",
    );
    a.start_container("c").await.expect("start");
    assert_code(a.start_container("c").await, Code::FAILED_PRECONDITION, "c");
    assert_code(a.wait("c", "ghost").await, Code::NOT_FOUND, "ghost");
    a.exec("c", "e", &Agent::process(&["sleep", "100"], false))
        .await
        .expect("exec");
    assert_code(
        a.exec("c", "e", &Agent::process(&["true"], false)).await,
        Code::ALREADY_EXISTS,
        "e",
    );
    assert_code(
        a.exec("c", "bad id", &Agent::process(&["true"], false))
            .await,
        Code::INVALID_ARGUMENT,
        "exec_id",
    );
    let missing = a
        .exec("c", "m", &Agent::process(&["/no/such/program"], false))
        .await;
    assert_code(missing, Code::FAILED_PRECONDITION, "/no/such/program");
    // A stream is attached once, by either path.
    let _out = a
        .raw_stream("c", "e", StreamKind::Stdout)
        .await
        .expect("raw stdout");
    let again = a
        .raw_stream("c", "e", StreamKind::Stdout)
        .await
        .expect_err("second attach");
    assert!(again.contains("already attached"), "{again}");
    assert_code(
        a.read_chunk("c", "e", StreamKind::Stdout).await,
        Code::ALREADY_EXISTS,
        "stdout",
    );
    let r = a.call_raw("grpc.AgentService", "GetIPTables").await;
    assert_code(r, Code::UNIMPLEMENTED, "GetIPTables");
    a.remove("c").await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_reach_one_process_or_all() {
    let a = Agent::start().await;
    a.run("s", &["sleep", "100"]).await;
    a.exec("s", "e1", &Agent::process(&["sleep", "100"], false))
        .await
        .expect("exec e1");
    a.exec("s", "e2", &Agent::process(&["sleep", "100"], false))
        .await
        .expect("exec e2");
    a.signal("s", "e1", libc::SIGTERM).await.expect("signal e1");
    assert_eq!(
        a.wait("s", "e1").await.expect("wait e1"),
        128 + libc::SIGTERM
    );
    // e2 is untouched by e1's signal; an empty exec id reaches every process.
    a.signal("s", "", libc::SIGKILL).await.expect("signal all");
    assert_eq!(
        a.wait("s", "e2").await.expect("wait e2"),
        128 + libc::SIGKILL
    );
    assert_eq!(
        a.wait("s", "").await.expect("wait init"),
        128 + libc::SIGKILL
    );
    a.remove("s").await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_update_and_remove_of_a_paused_container() {
    let a = Agent::start().await;
    a.run("p", &["sleep", "100"]).await;
    let id = || agent::PauseContainerRequest {
        container_id: "p".into(),
        ..Default::default()
    };
    a.agent.pause_container(ctx(), &id()).await.expect("pause");
    assert_code(
        a.exec("p", "e", &Agent::process(&["true"], false)).await,
        Code::FAILED_PRECONDITION,
        "paused",
    );
    let resume = agent::ResumeContainerRequest {
        container_id: "p".into(),
        ..Default::default()
    };
    a.agent
        .resume_container(ctx(), &resume)
        .await
        .expect("resume");
    a.exec("p", "e", &Agent::process(&["true"], false))
        .await
        .expect("exec after resume");
    assert_eq!(a.wait("p", "e").await.expect("wait"), 0);

    let update = agent::UpdateContainerRequest {
        container_id: "p".into(),
        hull_oci_resources_json: r#"{"memory": {"limit": 33554432}}"#.into(),
        ..Default::default()
    };
    a.agent
        .update_container(ctx(), &update)
        .await
        .expect("update");
    let stats = a
        .agent
        .stats_container(
            ctx(),
            &agent::StatsContainerRequest {
                container_id: "p".into(),
                ..Default::default()
            },
        )
        .await
        .expect("stats");
    assert_eq!(
        stats.cgroup_stats.memory_stats.usage.limit,
        32 << 20,
        "{stats:?}"
    );

    a.agent
        .pause_container(ctx(), &id())
        .await
        .expect("pause again");
    let started = Instant::now();
    a.remove("p").await.expect("remove paused");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "remove took {:?}",
        started.elapsed()
    );
}

/// Runs container `id` into its 16 MiB memory limit with a GetOOMEvent
/// long poll pending: the poll returns `id` once the kill (exit 137) is in.
async fn oom_kill_reaches_the_next_poll(a: &Agent, id: &str) {
    let mut spec = a.spec(id, &["sh", "-c", "sleep 1; tail /dev/zero"]);
    let resources: oci_spec::runtime::LinuxResources =
        serde_json::from_str(r#"{"memory": {"limit": 16777216, "swap": 16777216}}"#)
            .expect("resources");
    let mut linux = spec.linux().clone().expect("linux");
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    a.create(id, &spec).await.expect("create");
    let event = tokio::spawn({
        let agent = a.agent.clone();
        async move { agent.get_oom_event(long_poll(), &Default::default()).await }
    });
    a.start_container(id).await.expect("start");
    assert_eq!(a.wait(id, "").await.expect("wait"), 137);
    let event = tokio::time::timeout(Duration::from_secs(10), event)
        .await
        .expect("no OOM event reached the poll within 10 s")
        .expect("join")
        .expect("GetOOMEvent");
    assert_eq!(event.container_id, id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kill_is_reported_by_the_long_poll() {
    let a = Agent::start().await;
    oom_kill_reaches_the_next_poll(&a, "o").await;
}

/// A GetOOMEvent poll whose caller went away (a client, agentctl say,
/// that long-polled and closed its connection) ends there, so the next OOM
/// event goes to the next poll instead of being answered to nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_oom_poll_does_not_take_the_next_event() {
    let a = Agent::start().await;
    {
        let sock = a.dir.path().join("agent.sock");
        let other = ttrpc::r#async::Client::connect(&format!("unix://{}", sock.display()))
            .await
            .expect("second client");
        let agent = protocols::agent_ttrpc::AgentServiceClient::new(other);
        let req = agent::GetOOMEventRequest::default();
        let poll = agent.get_oom_event(long_poll(), &req);
        let gave_up = tokio::time::timeout(Duration::from_millis(500), poll).await;
        assert!(gave_up.is_err(), "no OOM yet, but {gave_up:?}");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    oom_kill_reaches_the_next_poll(&a, "o2").await;
}

/// A slow RPC never holds up another: with a storage mount waiting for a
/// device that never comes, long polls pending, and many health checks in
/// flight, kill and wait still answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_rpcs_do_not_block_others() {
    let a = Agent::start().await;
    a.run("k", &["sleep", "100"]).await;
    a.exec("k", "idle", &Agent::process(&["sleep", "100"], false))
        .await
        .expect("exec");
    let stuck = {
        let agent = a.agent.clone();
        let mount_point = a.dir.path().join("never").display().to_string();
        tokio::spawn(async move {
            let req = agent::CreateSandboxRequest {
                storages: vec![agent::Storage {
                    driver: "mmioblk".into(),
                    source: "/dev/hull-never-appears".into(),
                    fstype: "ext4".into(),
                    mount_point,
                    ..Default::default()
                }],
                ..Default::default()
            };
            agent.create_sandbox(long_poll(), &req).await
        })
    };
    let pending_read = {
        let agent = a.agent.clone();
        tokio::spawn(async move {
            let req = agent::ReadStreamRequest {
                container_id: "k".into(),
                exec_id: "idle".into(),
                len: 100,
                ..Default::default()
            };
            agent.read_stdout(long_poll(), &req).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let checks: Vec<_> = (0..20)
        .map(|_| {
            let h = a.health.clone();
            tokio::spawn(async move { h.check(ctx(), &Default::default()).await })
        })
        .collect();
    for c in checks {
        c.await.expect("join").expect("Check");
    }
    a.signal("k", "", libc::SIGKILL).await.expect("kill");
    assert_eq!(a.wait("k", "").await.expect("wait"), 137);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "kill and wait took {took:?} behind a stuck mount"
    );
    // The idle exec died with its container: its pending read ends.
    let r = tokio::time::timeout(Duration::from_secs(5), pending_read)
        .await
        .expect("read ends")
        .expect("join");
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|d| d.data.is_empty()),
        "{r:?}"
    );
    let stuck = stuck.await.expect("join");
    crate::fixture::assert_code(
        stuck.map(drop),
        Code::DEADLINE_EXCEEDED,
        "hull-never-appears",
    );
}

/// RemoveContainer gives up after its timeout when the processes cannot die
/// (frozen from outside the container's cgroup), says so, and keeps the
/// container so a later call can finish the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_honours_its_timeout() {
    let a = Agent::start().await;
    a.run("t", &["sleep", "100"]).await;
    a.freeze_parent(true);
    let started = Instant::now();
    let r = a.remove_within("t", 2).await;
    let took = started.elapsed();
    a.freeze_parent(false);
    assert_code(r, Code::DEADLINE_EXCEEDED, "\"t\"");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    a.remove_within("t", 10).await.expect("remove once thawed");
    assert_code(a.wait("t", "").await, Code::NOT_FOUND, "t");
}

/// A container whose init fails during creation leaves nothing: no cgroup,
/// and its id is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_creation_leaves_nothing_behind() {
    let a = Agent::start().await;
    // A cgroup for a sibling keeps the parent directory in place.
    a.run("keep", &["sleep", "100"]).await;
    let r = a
        .create("gone", &a.spec("gone", &["/no/such/program"]))
        .await;
    assert_code(r, Code::FAILED_PRECONDITION, "/no/such/program");
    assert!(
        !a.has_cgroup("gone"),
        "the failed container's cgroup stayed"
    );
    a.run("gone", &["true"]).await;
    assert_eq!(a.wait("gone", "").await.expect("wait"), 0);
}
