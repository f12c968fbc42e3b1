//! hull-agent: PID 1 of a Hull sandbox VM (or an ordinary process on a host
//! with `--unix-dir`), serving the agent API over ttrpc.
//!
//! `hull-agent init --sync-fd N` is the container init re-exec: it must be
//! dispatched before any thread exists, so it is checked first.

// PID 1 must never panic on a path the host can reach (tests may).
#![cfg_attr(
    not(test),
    deny(clippy::expect_used, clippy::panic, clippy::unwrap_used)
)]

mod bench_source;
mod boot_steps;
mod config;
mod container;
mod copy_file;
mod debug_console;
mod direct_stream;
mod dm;
mod errors;
mod guest;
mod listener;
mod logging;
mod metrics;
mod modprobe;
mod modules;
mod network;
mod oom;
mod pid1;
mod pod_ns;
mod reaper;
mod root_image;
mod rpc;
mod server;
mod stats;
mod stdio;
mod stdio_rpc;
mod storage;
mod switch_root;
mod vsock_probe;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // The kernel runs /sbin/modprobe (a link to the agent in a rootfs
    // image) to load a module on demand.
    if args
        .first()
        .is_some_and(|a| a.rsplit('/').next() == Some("modprobe"))
    {
        std::process::exit(modprobe::run(&args[1..]));
    }
    match args.get(1).map(String::as_str) {
        Some("init") => run_container_init(&args[2..]),
        Some("bench-source") => std::process::exit(bench_source::run(&args[2..])),
        Some("vsock-connect") => std::process::exit(vsock_probe::run(&args[2..])),
        Some("pod-namespaces") => std::process::exit(pod_ns::run_holder(&args[2..])),
        _ => {}
    }
    if std::process::id() == 1 {
        boot_steps::mark("init");
        if let Err(e) = early_pid1(&args) {
            eprintln!("hull-agent: {e}");
            pid1::exit(1);
        }
    }
    let code = match config::AgentConfig::load(&args[1..]) {
        Ok(cfg) => agent_main(cfg),
        Err(e) => {
            eprintln!("hull-agent: {e}");
            2
        }
    };
    pid1::exit(code);
}

/// Before configuration can be read: /proc, and a root that is not the
/// initramfs: the rootfs image the command line names (this process is
/// replaced by the image's agent), or a bind mount of the initramfs.
fn early_pid1(args: &[String]) -> Result<(), Box<dyn std::error::Error>> {
    pid1::mount_proc()?;
    if switch_root::on_initramfs() {
        let cmdline = std::fs::read_to_string("/proc/cmdline")?;
        if let Some(image) = root_image::requested(&cmdline) {
            return Err(Box::new(root_image::boot(&image?, args)));
        }
        switch_root::leave_initramfs()?;
    }
    boot_steps::mark("initramfs_left");
    Ok(())
}

fn run_container_init(args: &[String]) -> ! {
    rustjail::init::main("hull-agent", args)
}

fn agent_main(cfg: config::AgentConfig) -> i32 {
    let host_log = logging::HostLog::default();
    let log = logging::init(&cfg, &host_log);
    pid1::install_panic_hook(log.clone(), cfg.is_pid1);
    if cfg.is_pid1 {
        if let Err(e) = pid1::setup(&log) {
            slog::crit!(log, "PID 1 setup failed"; "error" => %e);
            return 1;
        }
        boot_steps::mark("modules");
    } else if cfg.in_guest {
        // The guest's init mounted the base filesystems; the image's list
        // still names what the agent needs (vsock first).
        if let Err(e) = modules::load_from_image(&log) {
            slog::crit!(log, "cannot load the agent's modules"; "error" => %e);
            return 1;
        }
    }
    if cfg.in_guest {
        // The vsock driver is loaded now.
        if let Err(e) = host_log.serve() {
            slog::warn!(log, "agent logs stay on the console: cannot serve the log port"; "error" => %e);
        }
    }
    if cfg.debug_console && matches!(cfg.endpoint, config::Endpoint::Vsock { .. }) {
        if let Err(e) = debug_console::serve(log.clone()) {
            slog::error!(log, "cannot serve the debug console"; "error" => %e);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            slog::crit!(log, "cannot start the async runtime"; "error" => %e);
            return 1;
        }
    };
    match runtime.block_on(server::serve(cfg, log.clone())) {
        Ok(()) => 0,
        Err(e) => {
            slog::crit!(log, "agent stopped"; "error" => %e);
            1
        }
    }
}
