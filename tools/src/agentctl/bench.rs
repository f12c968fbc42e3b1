//! The commands: showing what the agent reports, and the agent benchmarks
//! that `make bench` prints (RPC latency, stdio throughput by path, agent
//! memory with N containers).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use protocols::agent;
use protocols::stream::{StreamHeader, StreamKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::target::{ctx, Agent, Target};
use crate::{io_err, rpc_err, CtlError};

pub async fn show(a: &Agent, what: &str) -> Result<(), CtlError> {
    match what {
        "health" => {
            let r = a
                .health
                .check(ctx(), &Default::default())
                .await
                .map_err(rpc_err("Check"))?;
            println!("{:?}", r.status.enum_value_or_default());
        }
        "version" => {
            let r = a
                .health
                .version(ctx(), &Default::default())
                .await
                .map_err(rpc_err("Version"))?;
            println!("agent {} (API {})", r.agent_version, r.grpc_version);
        }
        "details" => {
            let req = agent::GuestDetailsRequest {
                mem_block_size: true,
                mem_hotplug_probe: true,
                ..Default::default()
            };
            let r = a
                .agent
                .get_guest_details(ctx(), &req)
                .await
                .map_err(rpc_err("GetGuestDetails"))?;
            let d = r.agent_details.clone().unwrap_or_default();
            println!("version: {}\ninit_daemon: {}\nstorage_handlers: {}\nsupports_seccomp: {}\nmem_block_size_bytes: {}\nmem_hotplug_probe: {}",
                d.version, d.init_daemon, d.storage_handlers.join(","), d.supports_seccomp, r.mem_block_size_bytes, r.support_mem_hotplug_probe);
        }
        _ => print!("{}", metrics(a).await?),
    }
    Ok(())
}

async fn metrics(a: &Agent) -> Result<String, CtlError> {
    let r = a
        .agent
        .get_metrics(ctx(), &Default::default())
        .await
        .map_err(rpc_err("GetMetrics"))?;
    Ok(r.metrics)
}

fn sample(text: &str, name: &str) -> Result<f64, CtlError> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| CtlError::Failed(format!("{name} missing from GetMetrics")))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

/// Round trips of Health.Check, one at a time.
pub async fn rpc_latency(a: &Agent, count: usize) -> Result<(), CtlError> {
    let mut times = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let t = Instant::now();
        a.health
            .check(ctx(), &Default::default())
            .await
            .map_err(rpc_err("Check"))?;
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "rpc_round_trip_us median={} p99={} count={}",
        percentile(&times, 0.5).as_micros(),
        percentile(&times, 0.99).as_micros(),
        times.len()
    );
    Ok(())
}

pub struct StdioBench {
    pub container: String,
    pub bytes: u64,
    /// The static hull-agent, copied into the container for the raw vsock
    /// figure; without it that figure is skipped.
    pub source_binary: Option<PathBuf>,
}

fn process(args: &[String]) -> Result<String, CtlError> {
    let mut p = oci_spec::runtime::Process::default();
    p.set_args(Some(args.to_vec())).set_terminal(Some(false));
    serde_json::to_string(&p).map_err(|e| CtlError::Failed(e.to_string()))
}

async fn exec(a: &Agent, container: &str, exec_id: &str, args: &[String]) -> Result<(), CtlError> {
    let req = agent::ExecProcessRequest {
        container_id: container.into(),
        exec_id: exec_id.into(),
        hull_oci_process_json: process(args)?,
        ..Default::default()
    };
    a.agent
        .exec_process(ctx(), &req)
        .await
        .map_err(rpc_err(format!("ExecProcess {args:?}")))?;
    Ok(())
}

async fn wait(a: &Agent, container: &str, exec_id: &str) -> Result<i32, CtlError> {
    let req = agent::WaitProcessRequest {
        container_id: container.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    let r = a
        .agent
        .wait_process(Default::default(), &req)
        .await
        .map_err(rpc_err("WaitProcess"))?;
    Ok(r.status)
}

/// Reads everything from `r`, returning the byte count.
async fn drain(mut r: impl AsyncReadExt + Unpin) -> Result<u64, CtlError> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await.map_err(io_err("read stream"))?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Size of each write of the producers: `dd` in the stdio paths, the
/// helper on raw vsock, so the paths differ only in how bytes leave the VM.
pub const BLOCK: u64 = 256 * 1024;

fn zeros_command(bytes: u64) -> Vec<String> {
    let count = bytes.div_ceil(BLOCK);
    [
        "dd",
        "if=/dev/zero",
        &format!("bs={BLOCK}"),
        &format!("count={count}"),
    ]
    .map(String::from)
    .to_vec()
}

/// How a raw stream meets its process.
#[derive(Clone, Copy)]
enum Attach {
    /// Announced before the process exists, to be its own stdout (what
    /// the shim does).
    Direct,
    /// Attached after the process started: the agent copies its pipe.
    Copied,
}

async fn raw_path(
    t: &Target,
    a: &Agent,
    b: &StdioBench,
    exec_id: &str,
    producer: &[String],
    attach: Attach,
) -> Result<u64, CtlError> {
    let s = match attach {
        Attach::Direct => {
            let s = stream(t, b, exec_id, true).await?;
            exec(a, &b.container, exec_id, producer).await?;
            s
        }
        Attach::Copied => {
            exec(a, &b.container, exec_id, producer).await?;
            stream(t, b, exec_id, false).await?
        }
    };
    let n = drain(s).await?;
    wait(a, &b.container, exec_id).await?;
    Ok(n)
}

/// A stdout stream of `exec_id`, past the header handshake.
async fn stream(
    t: &Target,
    b: &StdioBench,
    exec_id: &str,
    direct: bool,
) -> Result<tokio::net::UnixStream, CtlError> {
    let mut s = t.connect(protocols::STDIO_PORT).await?;
    let header = StreamHeader {
        container_id: b.container.clone(),
        exec_id: exec_id.into(),
        kind: StreamKind::Stdout,
        direct,
    };
    s.write_all(header.encode().as_bytes())
        .await
        .map_err(io_err("stream header"))?;
    let mut ok = [0u8; 3];
    s.read_exact(&mut ok)
        .await
        .map_err(io_err("stream reply"))?;
    if &ok != b"OK\n" {
        return Err(CtlError::Failed(format!(
            "stream refused: {}",
            String::from_utf8_lossy(&ok)
        )));
    }
    Ok(s)
}

async fn rpc_path(
    a: &Agent,
    b: &StdioBench,
    exec_id: &str,
    producer: &[String],
) -> Result<u64, CtlError> {
    exec(a, &b.container, exec_id, producer).await?;
    let req = agent::ReadStreamRequest {
        container_id: b.container.clone(),
        exec_id: exec_id.into(),
        len: 1 << 20,
        ..Default::default()
    };
    let mut total = 0u64;
    loop {
        match a.agent.read_stdout(Default::default(), &req).await {
            Ok(r) => total += r.data.len() as u64,
            Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::OUT_OF_RANGE => break,
            Err(e) => return Err(rpc_err("ReadStdout")(e)),
        }
    }
    wait(a, &b.container, exec_id).await?;
    Ok(total)
}

/// Copies the helper into the container's root in the guest with CopyFile,
/// in 1 MiB chunks; returns its path inside the container.
async fn copy_source(a: &Agent, b: &StdioBench, binary: &PathBuf) -> Result<String, CtlError> {
    let data = std::fs::read(binary).map_err(io_err(binary.display().to_string()))?;
    let name = ".hull-bench-source";
    let path = format!(
        "{}/{}/rootfs/{name}",
        crate::target::GUEST_SHARED_DIR,
        b.container
    );
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        let req = agent::CopyFileRequest {
            path: path.clone(),
            file_size: data.len() as i64,
            file_mode: 0o100755,
            dir_mode: 0o755,
            uid: 0,
            gid: 0,
            offset: (i << 20) as i64,
            data: chunk.to_vec(),
            ..Default::default()
        };
        a.agent
            .copy_file(ctx(), &req)
            .await
            .map_err(rpc_err(format!("CopyFile {path}")))?;
    }
    Ok(format!("/{name}"))
}

async fn vsock_path(
    t: &Target,
    a: &Agent,
    b: &StdioBench,
    exec_id: &str,
    helper: &str,
) -> Result<u64, CtlError> {
    const PORT: u32 = 5099;
    let args = [
        helper,
        "bench-source",
        &format!("vsock:{PORT}"),
        &b.bytes.to_string(),
    ]
    .map(String::from)
    .to_vec();
    exec(a, &b.container, exec_id, &args).await?;
    let start = Instant::now();
    let s = loop {
        match t.connect(PORT).await {
            Ok(s) => break s,
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e),
        }
    };
    let n = drain(s).await?;
    wait(a, &b.container, exec_id).await?;
    Ok(n)
}

fn report(path: &str, bytes: u64, expected: u64, took: Duration) -> Result<f64, CtlError> {
    if bytes != expected {
        return Err(CtlError::Failed(format!(
            "{path}: got {bytes} of {expected} bytes"
        )));
    }
    let mbps = bytes as f64 / took.as_secs_f64() / 1e6;
    println!(
        "stdio_throughput path={path} bytes={bytes} seconds={:.3} mb_per_s={mbps:.1}",
        took.as_secs_f64()
    );
    Ok(mbps)
}

/// Each path is measured this many times, the paths taking turns, and its
/// median reported: the first run of each path in a VM also pays for
/// translating its code under TCG, and the paths must not differ by their
/// place in the order.
const ROUNDS: usize = 3;

/// Stdout throughput of `head -c N /dev/zero` in the container through
/// Hull's raw stream and through ReadStdout, and the raw vsock figure of the
/// same VM.
pub async fn stdio_throughput(t: &Target, a: &Agent, b: &StdioBench) -> Result<(), CtlError> {
    if !b.bytes.is_multiple_of(BLOCK) {
        return Err(CtlError::Usage(format!(
            "--mib must give a multiple of {BLOCK} bytes"
        )));
    }
    let tag = std::process::id();
    let dd = zeros_command(b.bytes);
    let helper = match (t, &b.source_binary) {
        (Target::Vm(_), Some(binary)) => Some(copy_source(a, b, binary).await?),
        _ => None,
    };
    // The helper writes the same 256 KiB blocks from memory to its stdout
    // as to vsock: the paths then differ only in how bytes leave the VM.
    let producer = match &helper {
        Some(h) => [h.as_str(), "bench-source", "stdout", &b.bytes.to_string()]
            .map(String::from)
            .to_vec(),
        None => dd.clone(),
    };
    let mut took: Vec<(&str, Vec<Duration>)> = Vec::new();
    let mut record = |path: &'static str, n: u64, elapsed: Duration| -> Result<(), CtlError> {
        if n != b.bytes {
            return Err(CtlError::Failed(format!(
                "{path}: got {n} of {} bytes",
                b.bytes
            )));
        }
        match took.iter_mut().find(|(p, _)| *p == path) {
            Some((_, times)) => times.push(elapsed),
            None => took.push((path, vec![elapsed])),
        }
        Ok(())
    };
    for round in 0..ROUNDS {
        let timed = Instant::now();
        let id = format!("bench-raw-{tag}-{round}");
        let n = raw_path(t, a, b, &id, &producer, Attach::Direct).await?;
        record("raw-stream", n, timed.elapsed())?;
        let timed = Instant::now();
        let id = format!("bench-copied-{tag}-{round}");
        let n = raw_path(t, a, b, &id, &producer, Attach::Copied).await?;
        record("copied-raw-stream", n, timed.elapsed())?;
        let timed = Instant::now();
        let n = rpc_path(a, b, &format!("bench-rpc-{tag}-{round}"), &producer).await?;
        record("read-stdout-rpc", n, timed.elapsed())?;
        if let Some(helper) = &helper {
            let timed = Instant::now();
            let n = vsock_path(t, a, b, &format!("bench-vsock-{tag}-{round}"), helper).await?;
            record("raw-vsock", n, timed.elapsed())?;
            // A real program's output (dd reading /dev/zero) on the raw stream.
            let timed = Instant::now();
            let id = format!("bench-dd-{tag}-{round}");
            let n = raw_path(t, a, b, &id, &dd, Attach::Direct).await?;
            record("dd-raw-stream", n, timed.elapsed())?;
        }
    }
    for (path, mut times) in took {
        times.sort();
        report(path, b.bytes, b.bytes, times[times.len() / 2])?;
    }
    if helper.is_none() {
        println!("stdio_throughput path=raw-vsock skipped (needs a VM and --source-binary)");
    }
    Ok(())
}

/// The agent's resident memory before and after `count` more containers,
/// each a `sleep` in the read-only root `root` (a guest path).
pub async fn containers_rss(a: &Agent, root: &str, count: usize) -> Result<(), CtlError> {
    let before = metrics(a).await?;
    let rss_before = sample(&before, "hull_agent_resident_memory_bytes")?;
    let held = sample(&before, "hull_agent_containers")?;
    let ids: Vec<String> = (0..count)
        .map(|i| format!("bench-rss-{}-{i}", std::process::id()))
        .collect();
    let mut result = Ok(());
    for id in &ids {
        if let Err(e) = create_sleeper(a, id, root).await {
            result = Err(e);
            break;
        }
    }
    let after = metrics(a).await?;
    for id in &ids {
        let req = agent::RemoveContainerRequest {
            container_id: id.clone(),
            timeout: 10,
            ..Default::default()
        };
        let _ = a.agent.remove_container(ctx(), &req).await;
    }
    result?;
    let rss_after = sample(&after, "hull_agent_resident_memory_bytes")?;
    println!(
        "agent_rss_kb containers={} rss_kb={:.0}\nagent_rss_kb containers={} rss_kb={:.0}",
        held,
        rss_before / 1024.0,
        held as usize + count,
        rss_after / 1024.0
    );
    Ok(())
}

async fn create_sleeper(a: &Agent, id: &str, root: &str) -> Result<(), CtlError> {
    let mut spec = oci_spec::runtime::Spec::default();
    let mut r = spec.root().clone().unwrap_or_default();
    r.set_path(PathBuf::from(root)).set_readonly(Some(true));
    spec.set_root(Some(r));
    let mut p = spec.process().clone().unwrap_or_default();
    p.set_args(Some(vec!["sleep".into(), "1000".into()]));
    spec.set_process(Some(p));
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_cgroups_path(Some(PathBuf::from(format!("/hull-bench/{id}"))));
    spec.set_linux(Some(linux));
    let req = agent::CreateContainerRequest {
        container_id: id.into(),
        hull_oci_spec_json: serde_json::to_string(&spec)
            .map_err(|e| CtlError::Failed(e.to_string()))?,
        ..Default::default()
    };
    a.agent
        .create_container(ctx(), &req)
        .await
        .map_err(rpc_err(format!("CreateContainer {id}")))?;
    let req = agent::StartContainerRequest {
        container_id: id.into(),
        ..Default::default()
    };
    a.agent
        .start_container(ctx(), &req)
        .await
        .map_err(rpc_err(format!("StartContainer {id}")))?;
    Ok(())
}
