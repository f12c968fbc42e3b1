//! `start`: finds the running daemon of this container's group (a pod's
//! containers share their sandbox's) or starts one, and answers containerd
//! with its address. A daemon that does not come up is killed and its
//! socket removed, so a failed `start` leaves nothing behind.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use containerd_shim::Flags;
use tokio::io::AsyncReadExt;

use super::{LaunchError, StartForm};
use crate::pod::Role;

/// How long a new daemon may take to listen.
const DAEMON_READY_WAIT: Duration = Duration::from_secs(10);

pub async fn run(flags: &Flags) -> Result<(), LaunchError> {
    let stdin = super::read_stdin()?;
    let form = StartForm::of(&stdin, &flags.id, &flags.namespace);
    let ttrpc_address = form
        .ttrpc_address()
        .ok_or(LaunchError::MissingEnv("TTRPC_ADDRESS"))?;
    let grpc_address = match &form {
        StartForm::Bootstrap(p) if flags.address.is_empty() => p.containerd_grpc_address.clone(),
        _ => flags.address.clone(),
    };
    let bundle = std::env::current_dir().map_err(LaunchError::io("the bundle (cwd)"))?;
    // A sandbox made through the sandbox API gets no options later: its
    // configuration is the one named now.
    for options in form.runtime_options(&stdin) {
        if let Ok(Some(path)) = crate::options::config_path(Some(&options)) {
            crate::options::record_config_path(&bundle, &path)
                .map_err(|e| LaunchError::Args(e.to_string()))?;
        }
    }
    let grouping = Role::of_bundle(&bundle).grouping(&flags.id);
    let address = containerd_shim::socket_address(&grpc_address, &flags.namespace, &grouping);
    let socket = socket_path(&address);
    let mut handoff = None;
    if !serving(socket).await {
        remove_socket(socket);
        let daemon = Daemon {
            flags,
            grpc_address: &grpc_address,
            ttrpc_address: &ttrpc_address,
            address: &address,
        };
        handoff = daemon.start().await?;
    }
    // As runc's shim does: containerd 1.6 reads it to reconnect after a
    // restart.
    std::fs::write(bundle.join("address"), &address)
        .map_err(LaunchError::io("write the shim address into the bundle"))?;
    super::answer(&form.answer(&address)?, "the address")?;
    // The daemon is containerd's now; a `start` that dies before this line
    // leaves its daemon to end itself (see `daemon::abandoned`).
    if let Some(mut stdin) = handoff {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(HANDED_OFF).await;
    }
    Ok(())
}

/// What `start` writes to a new daemon's stdin once containerd has its
/// address.
pub const HANDED_OFF: &[u8] = b"handed-off\n";

/// The socket's path in a `unix://` address.
pub fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// Whether a daemon answers at `socket`.
async fn serving(socket: &Path) -> bool {
    let connect = tokio::net::UnixStream::connect(socket);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// Removes a socket file (a dead daemon's); anything else is left alone.
pub fn remove_socket(socket: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(socket).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(socket);
    }
}

struct Daemon<'a> {
    flags: &'a Flags,
    grpc_address: &'a str,
    ttrpc_address: &'a str,
    address: &'a str,
}

impl Daemon<'_> {
    /// Starts the daemon in its own process group and waits until it
    /// listens: it closes its stdout then. On failure it is killed. Its
    /// stdin, for the hand-off.
    async fn start(&self) -> Result<Option<tokio::process::ChildStdin>, LaunchError> {
        let exe = std::env::current_exe().map_err(LaunchError::io("find the shim binary"))?;
        let f = self.flags;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(["-namespace", &f.namespace, "-id", &f.id])
            .args(["-address", self.grpc_address, "-socket", self.address])
            .env("TTRPC_ADDRESS", self.ttrpc_address)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0);
        if f.debug {
            cmd.arg("-debug");
        }
        let mut child = cmd
            .spawn()
            .map_err(LaunchError::io("start the shim daemon"))?;
        if let Some(pid) = child.id() {
            // containerd's own shims: the daemon is killed by the OOM
            // killer before containerd is.
            let _ = containerd_shim::cgroup::adjust_oom_score(pid);
        }
        let mut stdout = child.stdout.take();
        let ready = async {
            let mut sink = Vec::new();
            if let Some(out) = stdout.as_mut() {
                let _ = out.take(4096).read_to_end(&mut sink).await;
            }
        };
        let why = match tokio::time::timeout(DAEMON_READY_WAIT, ready).await {
            Err(_) => format!("not listening after {DAEMON_READY_WAIT:?}"),
            Ok(()) if serving(socket_path(self.address)).await => return Ok(child.stdin.take()),
            Ok(()) => match child.try_wait() {
                Ok(Some(status)) => format!("it exited ({status}); see the shim log"),
                _ => format!("nothing answers at {}", self.address),
            },
        };
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        remove_socket(socket_path(self.address));
        Err(LaunchError::DaemonFailed(why))
    }
}
