//! hull-agentctl: drives a Hull agent's RPCs by hand, for operators and
//! benchmarks. It reaches the agent of a running sandbox through the VM's
//! hybrid vsock socket, or an agent running on this host through its Unix
//! socket directory.
//!
//! ```text
//! hull-agentctl (--vm-socket PATH | --unix-dir DIR) COMMAND
//!   health | version | details | metrics
//!   console          (the debug console: stdin to a guest shell, its output back)
//!   bench-rpc [--count N]
//!   bench-stdio --container ID [--mib N] [--source-binary PATH]
//!   bench-containers (--container ID | --rootfs PATH) [--count N]
//! ```

mod bench;
mod target;

use std::path::PathBuf;

use target::Target;

const USAGE: &str = "usage: hull-agentctl (--vm-socket PATH | --unix-dir DIR) \
(health | version | details | metrics | console | bench-rpc [--count N] | \
bench-stdio --container ID [--mib N] [--source-binary PATH] | \
bench-containers (--container ID | --rootfs PATH) [--count N])";

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}\n{USAGE}")]
    Usage(String),
    #[error("{what}: {source}")]
    Rpc {
        what: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
}

pub fn rpc_err(what: impl Into<String>) -> impl FnOnce(ttrpc::Error) -> CtlError {
    let what = what.into();
    move |source| CtlError::Rpc { what, source }
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CtlError {
    let what = what.into();
    move |source| CtlError::Io { what, source }
}

/// Command-line options after the target and the command.
struct Options(Vec<String>);

impl Options {
    fn value(&self, flag: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == flag)?;
        self.0.get(i + 1).map(String::as_str)
    }

    fn number(&self, flag: &str, default: u64) -> Result<u64, CtlError> {
        match self.value(flag) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| CtlError::Usage(format!("{flag}: {v:?} is not a number"))),
        }
    }

    fn required(&self, flag: &str) -> Result<&str, CtlError> {
        self.value(flag)
            .ok_or_else(|| CtlError::Usage(format!("{flag} is required")))
    }
}

fn parse_target(args: &[String]) -> Result<(Target, &[String]), CtlError> {
    match args {
        [flag, path, rest @ ..] if flag == "--vm-socket" => {
            Ok((Target::Vm(PathBuf::from(path)), rest))
        }
        [flag, path, rest @ ..] if flag == "--unix-dir" => {
            Ok((Target::Unix(PathBuf::from(path)), rest))
        }
        _ => Err(CtlError::Usage("name the agent first".into())),
    }
}

async fn run(args: Vec<String>) -> Result<(), CtlError> {
    let (target, rest) = parse_target(&args)?;
    let Some((command, opts)) = rest.split_first() else {
        return Err(CtlError::Usage("no command".into()));
    };
    let opts = Options(opts.to_vec());
    if command == "console" {
        return console(&target).await;
    }
    let agent = target.client().await?;
    match command.as_str() {
        "health" | "version" | "details" | "metrics" => bench::show(&agent, command).await,
        "bench-rpc" => bench::rpc_latency(&agent, opts.number("--count", 200)? as usize).await,
        "bench-stdio" => {
            let source = opts
                .value("--source-binary")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .map(|p| p.with_file_name("hull-agent"))
                });
            let spec = bench::StdioBench {
                container: opts.required("--container")?.to_string(),
                bytes: opts.number("--mib", 64)? << 20,
                source_binary: source,
            };
            bench::stdio_throughput(&target, &agent, &spec).await
        }
        "bench-containers" => {
            // A sandbox container's root as the guest sees it, or any root.
            let root = match opts.value("--rootfs") {
                Some(r) => r.to_string(),
                None => format!(
                    "{}/{}/rootfs",
                    target::GUEST_SHARED_DIR,
                    opts.required("--container")?
                ),
            };
            bench::containers_rss(&agent, &root, opts.number("--count", 10)? as usize).await
        }
        other => Err(CtlError::Usage(format!("unknown command {other:?}"))),
    }
}

/// Copies stdin to the guest's debug console and its output to stdout,
/// until the shell ends.
async fn console(target: &Target) -> Result<(), CtlError> {
    let conn = target
        .connect(protocols::DEBUG_CONSOLE_PORT)
        .await
        .map_err(|e| {
            CtlError::Failed(format!(
                "{e} (is hull.debug_console=on in the VM's kernel_params?)"
            ))
        })?;
    let (mut from_guest, mut to_guest) = conn.into_split();
    let input = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut to_guest).await;
        // End of input ends the session. A half-close does not survive the
        // hybrid vsock bridge (the whole connection goes, and the shell's
        // last output with it), so the shell is asked to exit instead and
        // its output keeps coming until it has.
        let _ = tokio::io::AsyncWriteExt::write_all(&mut to_guest, b"\nexit\n").await;
        std::future::pending::<()>().await;
    });
    let copied = tokio::io::copy(&mut from_guest, &mut tokio::io::stdout()).await;
    input.abort();
    copied.map(drop).map_err(io_err("debug console"))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(rt) => rt.block_on(run(args)),
        Err(e) => Err(io_err("start the async runtime")(e)),
    };
    if let Err(e) = result {
        eprintln!("hull-agentctl: {e}");
        std::process::exit(if matches!(e, CtlError::Usage(_)) {
            2
        } else {
            1
        });
    }
}
