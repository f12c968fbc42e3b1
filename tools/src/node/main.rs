//! `hull-node`: installs Hull on one containerd host, upgrades it, removes
//! it, without rewriting containerd's `config.toml` and without disturbing
//! running Hull pods. The by-hand scripts and the Kubernetes DaemonSet
//! (`deploy/`) both run it.
//!
//! Each install lands in a version directory of its own
//! (`ROOT/versions/NAME-HASH`, named by its content) that the runtime's
//! drop-in names directly, so pods started from one version keep its shim,
//! helpers and guest image; a version is deleted only once no process uses
//! it.

mod dropin;
mod in_use;
mod payload;

use std::collections::HashMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hull-node",
    about = "Install, upgrade or remove Hull on this containerd host"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Installs (or upgrades to) the payload in DIR and registers the runtime.
    Install {
        #[arg(long)]
        payload: PathBuf,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Deletes every version no process uses; unregisters the runtime once
    /// none is used (exit 75 until then).
    Remove {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Prints the installed versions, which are in use, and the drop-in.
    Status {
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Args, Clone)]
pub struct NodeArgs {
    /// Where versions live.
    #[arg(long, default_value = "/opt/hull")]
    pub root: PathBuf,
    /// containerd's main configuration (read, never written).
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    pub containerd_config: PathBuf,
    /// The drop-in directory containerd's configuration imports.
    #[arg(long, default_value = "/etc/containerd/conf.d")]
    pub conf_d: PathBuf,
    /// The CRI runtime handler name (the RuntimeClass's handler).
    #[arg(long, default_value = "hull")]
    pub runtime_name: String,
    /// The containerd binary, asked for its merged configuration.
    #[arg(long, default_value = "containerd")]
    pub containerd: PathBuf,
    /// How containerd is restarted to take the drop-in ("" for not at all).
    #[arg(long, default_value = "systemctl restart containerd")]
    pub restart_cmd: String,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Install { payload, node } => install(&payload, &node).map(|()| Done::Complete),
        Command::Remove { node } => remove(&node),
        Command::Status { node } => status(&node).map(|()| Done::Complete),
    };
    match result {
        Ok(Done::Complete) => {}
        Ok(Done::Deferred) => std::process::exit(EX_TEMPFAIL),
        Err(e) => {
            eprintln!("hull-node: {e}");
            std::process::exit(1);
        }
    }
}

/// sysexits' "try again later": a removal waits for running pods.
const EX_TEMPFAIL: i32 = 75;

enum Done {
    Complete,
    /// The runtime stays registered while pods use it.
    Deferred,
}

fn install(payload: &std::path::Path, node: &NodeArgs) -> Result<(), String> {
    let version = payload::install(payload, &node.root)?;
    println!(
        "hull-node: version {} in {}",
        version.name,
        version.dir.display()
    );
    let changed = dropin::register(node, &version.dir)?;
    if changed {
        restart(node)?;
    }
    payload::set_current(&node.root, &version.name)?;
    collect(node, Some(&version.name)).map(drop)
}

/// Unregisters the runtime once no process uses an installed version:
/// containerd 2.x needs a pod's runtime handler registered to exec into
/// it or stop it, so while Hull pods run the registration stays (new pods
/// are kept off the node by Kubernetes: the RuntimeClass, the node label).
fn remove(node: &NodeArgs) -> Result<Done, String> {
    payload::clear_current(&node.root)?;
    let used = collect(node, None)?;
    if !used.is_empty() {
        let pids: usize = used.values().map(Vec::len).sum();
        println!(
            "hull-node: {} stays registered while {pids} processes use Hull; run remove again once they end",
            node.runtime_name
        );
        return Ok(Done::Deferred);
    }
    if dropin::unregister(node)? {
        restart(node)?;
    }
    println!("hull-node: unregistered {}", node.runtime_name);
    Ok(Done::Complete)
}

fn status(node: &NodeArgs) -> Result<(), String> {
    let current = payload::current(&node.root);
    let used = in_use::versions_in_use(&node.root);
    for v in payload::versions(&node.root) {
        let mark = if current.as_deref() == Some(v.as_str()) {
            " (current)"
        } else {
            ""
        };
        let users = used
            .get(&v)
            .map(|p| format!(", in use by {} processes", p.len()));
        println!("{v}{mark}{}", users.unwrap_or_default());
    }
    match dropin::registered(node) {
        Some(path) => println!("registered: {} in {}", node.runtime_name, path.display()),
        None => println!("registered: no"),
    }
    Ok(())
}

/// Deletes the versions that are neither `keep` nor used by a process;
/// the versions in use, with their pids.
fn collect(node: &NodeArgs, keep: Option<&str>) -> Result<HashMap<String, Vec<u32>>, String> {
    let used = in_use::versions_in_use(&node.root);
    for v in payload::versions(&node.root) {
        if Some(v.as_str()) == keep {
            continue;
        }
        match used.get(&v) {
            Some(pids) => println!("hull-node: keeping {v}: in use by pids {pids:?}"),
            None => {
                payload::delete_version(&node.root, &v)?;
                println!("hull-node: deleted {v}");
            }
        }
    }
    Ok(used)
}

fn restart(node: &NodeArgs) -> Result<(), String> {
    if node.restart_cmd.trim().is_empty() {
        println!("hull-node: restart containerd to apply the change");
        return Ok(());
    }
    let status = std::process::Command::new("sh")
        .args(["-c", &node.restart_cmd])
        .status()
        .map_err(|e| format!("restart containerd ({}): {e}", node.restart_cmd))?;
    if !status.success() {
        return Err(format!(
            "restart containerd ({}): {status}",
            node.restart_cmd
        ));
    }
    Ok(())
}
