//! Stdio through Kata's RPCs (WriteStdin, ReadStdout, ReadStderr,
//! CloseStdin, TtyWinResize) and through Hull's raw streams: complete
//! output, no hang on a background child, no timeout when idle.

use std::time::{Duration, Instant};

use protocols::agent;
use protocols::stream::StreamKind;
use tokio::io::AsyncWriteExt;
use ttrpc::Code;

use crate::fixture::{assert_code, ctx, read_to_end, Agent};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_stdio_round_trip_and_end_of_stream() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    a.exec("c", "cat", &Agent::process(&["cat"], false))
        .await
        .expect("exec cat");
    assert_eq!(
        a.write_stdin("c", "cat", b"hello ").await.expect("write"),
        6
    );
    assert_eq!(a.write_stdin("c", "cat", b"world").await.expect("write"), 5);
    a.close_stdin("c", "cat").await.expect("CloseStdin");
    assert_code(
        a.write_stdin("c", "cat", b"late").await,
        Code::FAILED_PRECONDITION,
        "closed",
    );
    assert_eq!(
        a.read_all("c", "cat", StreamKind::Stdout).await,
        b"hello world"
    );
    assert_eq!(a.read_all("c", "cat", StreamKind::Stderr).await, b"");
    // Ended streams stay ended.
    assert_code(
        a.read_chunk("c", "cat", StreamKind::Stdout).await,
        Code::OUT_OF_RANGE,
        "end of stream",
    );
    assert_eq!(a.wait("c", "cat").await.expect("wait"), 0);
    // Once its exit is collected and its output read, the exec is forgotten.
    assert_code(a.wait("c", "cat").await, Code::NOT_FOUND, "cat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_written_just_before_exit_is_all_delivered() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    // Less than a pipe holds, so the process exits before anything reads.
    let small = Agent::process(
        &[
            "sh",
            "-c",
            "head -c 60000 /dev/zero | tr '\\0' x; echo -n tail >&2",
        ],
        false,
    );
    a.exec("c", "small", &small).await.expect("exec");
    // Collect the exit first: the RPC path must keep the output readable.
    assert_eq!(a.wait("c", "small").await.expect("wait"), 0);
    let out = a.read_all("c", "small", StreamKind::Stdout).await;
    assert_eq!(out.len(), 60000);
    assert!(out.iter().all(|b| *b == b'x'));
    assert_eq!(a.read_all("c", "small", StreamKind::Stderr).await, b"tail");

    // Megabytes, read while the process runs and exits.
    let big = Agent::process(
        &["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x"],
        false,
    );
    a.exec("c", "big", &big).await.expect("exec");
    let out = a.read_all("c", "big", StreamKind::Stdout).await;
    assert_eq!(out.len(), 3_000_000);
    assert_eq!(a.wait("c", "big").await.expect("wait"), 0);

    // The same through the raw path.
    a.exec(
        "c",
        "raw",
        &Agent::process(&["sh", "-c", "head -c 3000000 /dev/zero | wc -c"], false),
    )
    .await
    .expect("exec");
    let out = a
        .raw_stream("c", "raw", StreamKind::Stdout)
        .await
        .expect("raw");
    assert_eq!(a.wait("c", "raw").await.expect("wait"), 0);
    assert_eq!(read_to_end(out).await.trim(), "3000000");
}

/// Kata #4747: a background child keeping stdout open must not hang the
/// exec's output once the exec has exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_child_does_not_hang_either_path() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    let p = Agent::process(&["sh", "-c", "sleep 60 & echo started"], false);
    a.exec("c", "rpc", &p).await.expect("exec");
    a.exec("c", "raw", &p).await.expect("exec");
    let raw = a
        .raw_stream("c", "raw", StreamKind::Stdout)
        .await
        .expect("raw");
    let started = Instant::now();
    assert_eq!(
        a.read_all("c", "rpc", StreamKind::Stdout).await,
        b"started\n"
    );
    assert_eq!(read_to_end(raw).await, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(a.wait("c", "rpc").await.expect("wait"), 0);
}

/// Output streams announced `direct` before the process exists become its
/// own stdout and stderr (no copy in the agent): all output arrives, and
/// each stream ends at the exit, for an exec and for a container's init.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_streams_are_the_process_own_output() {
    let a = Agent::start().await;
    let init_out = a
        .direct_stream("d", "", StreamKind::Stdout)
        .await
        .expect("init stdout");
    a.run("d", &["sh", "-c", "readlink /proc/self/fd/1; sleep 100"])
        .await;
    let first = tokio::io::BufReader::new(init_out);
    let mut lines = tokio::io::AsyncBufReadExt::lines(first);
    let link = lines.next_line().await.expect("read").unwrap_or_default();
    assert!(link.starts_with("socket:["), "init stdout is {link:?}");

    let out = a
        .direct_stream("d", "big", StreamKind::Stdout)
        .await
        .expect("stdout");
    let err = a
        .direct_stream("d", "big", StreamKind::Stderr)
        .await
        .expect("stderr");
    let big = Agent::process(
        &[
            "sh",
            "-c",
            "readlink /proc/self/fd/2 >&2; head -c 3000000 /dev/zero | tr '\\0' x",
        ],
        false,
    );
    a.exec("d", "big", &big).await.expect("exec");
    let (out, err) = tokio::join!(read_to_end(out), read_to_end(err));
    assert_eq!(out.len(), 3_000_000);
    assert!(out.bytes().all(|b| b == b'x'));
    assert!(err.starts_with("socket:["), "stderr is {err:?}");
    assert_eq!(a.wait("d", "big").await.expect("wait"), 0);
    // The stream the agent copies is not there to attach to as well.
    assert!(a.raw_stream("d", "big", StreamKind::Stdout).await.is_err());
}

/// A direct stream for a process that already runs is refused (it could
/// never become that process's output), and a background child holding a
/// direct stream does not hang it after the exit (Kata #4747).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_streams_refuse_a_running_process_and_end_under_a_child() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    let refused = a.direct_stream("c", "", StreamKind::Stdout).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("already exists")),
        "{:?}",
        refused.map(drop)
    );
    let out = a
        .direct_stream("c", "bg", StreamKind::Stdout)
        .await
        .expect("stdout");
    let p = Agent::process(&["sh", "-c", "sleep 60 & echo started"], false);
    a.exec("c", "bg", &p).await.expect("exec");
    let started = Instant::now();
    assert_eq!(read_to_end(out).await, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(a.wait("c", "bg").await.expect("wait"), 0);
}

/// Kata #5249: an exec that prints nothing for a while is not timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_exec_is_not_timed_out() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    a.exec(
        "c",
        "idle",
        &Agent::process(&["sh", "-c", "sleep 4; echo late"], false),
    )
    .await
    .expect("exec");
    assert_eq!(a.read_all("c", "idle", StreamKind::Stdout).await, b"late\n");
    assert_eq!(a.wait("c", "idle").await.expect("wait"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_resize_and_end_of_file() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    let p = Agent::process(&["sh", "-c", "read x; stty size; echo got $x"], true);
    a.exec("c", "t", &p).await.expect("exec -t");
    let resize = agent::TtyWinResizeRequest {
        container_id: "c".into(),
        exec_id: "t".into(),
        row: 33,
        column: 101,
        ..Default::default()
    };
    a.agent
        .tty_win_resize(ctx(), &resize)
        .await
        .expect("TtyWinResize");
    let mut input = a
        .raw_stream("c", "t", StreamKind::Stdin)
        .await
        .expect("stdin");
    input.write_all(b"ping\n").await.expect("write");
    let out = a
        .raw_stream("c", "t", StreamKind::Stdout)
        .await
        .expect("stdout");
    let out = read_to_end(out).await;
    assert!(out.contains("33 101"), "{out:?}");
    assert!(out.contains("got ping"), "{out:?}");
    assert_eq!(a.wait("c", "t").await.expect("wait"), 0);
    // No terminal, no resize.
    a.exec("c", "plain", &Agent::process(&["sleep", "100"], false))
        .await
        .expect("exec");
    let resize = agent::TtyWinResizeRequest {
        exec_id: "plain".into(),
        ..resize
    };
    assert_code(
        a.agent.tty_win_resize(ctx(), &resize).await.map(drop),
        Code::INVALID_ARGUMENT,
        "terminal",
    );
}

/// The Kata protobuf form of ExecProcess (no Hull JSON) works too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kata_protobuf_exec_runs() {
    let a = Agent::start().await;
    a.run("c", &["sleep", "100"]).await;
    let mut p = Agent::process(&["sh", "-c", "echo $HULL_X"], false);
    p.set_env(Some(vec!["HULL_X=kata".into(), "PATH=/bin".into()]));
    let req = agent::ExecProcessRequest {
        container_id: "c".into(),
        exec_id: "k".into(),
        process: Some(protocols::process::to_proto(&p).expect("to proto")).into(),
        ..Default::default()
    };
    a.agent
        .exec_process(ctx(), &req)
        .await
        .expect("ExecProcess");
    assert_eq!(a.read_all("c", "k", StreamKind::Stdout).await, b"kata\n");
    assert_eq!(a.wait("c", "k").await.expect("wait"), 0);
}
