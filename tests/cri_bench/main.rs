//! `make bench`'s CRI pod row: the time from RunPodSandbox to a started
//! container (RunPodSandbox + CreateContainer + StartContainer), the way the
//! kubelet starts a one-container pod, against containerd's CRI plugin.
//!
//! usage: cri_bench SOCKET HANDLER RUNS [BEFORE_EACH]
//! Prints one line per run: the milliseconds. BEFORE_EACH, a shell command,
//! runs (untimed) before each pod (the cache rows wait for a full pool).

// The e2e suite's CRI client; this uses the calls that start a pod.
#[path = "../e2e/cri.rs"]
#[allow(dead_code)]
mod cri;

mod env {
    /// Each CRI call's deadline.
    pub const CMD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(180);
}

use std::path::Path;
use std::time::Instant;

use k8s_cri::v1::NamespaceMode;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        eprintln!("cri_bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let [sock, handler, runs, rest @ ..] = args else {
        return Err("usage: cri_bench SOCKET HANDLER RUNS [BEFORE_EACH]".into());
    };
    let runs: u32 = runs.parse().map_err(|e| format!("RUNS {runs:?}: {e}"))?;
    let before = rest.first();
    let mut cri = cri::Cri::connect(Path::new(sock))?;
    let logs = std::env::temp_dir().join(format!("hull-cri-bench-{}", std::process::id()));
    for i in 0..runs {
        if let Some(cmd) = before {
            let ok = std::process::Command::new("sh")
                .args(["-c", cmd])
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err(format!("{cmd:?} failed"));
            }
        }
        let name = format!("bench-pod-{}-{i}", std::process::id());
        let pod = cri::pod_config(&name, &logs.join(&name));
        let started = Instant::now();
        let pod_id = cri.run_pod(pod.clone(), handler)?;
        let container = cri::container_config("app", NamespaceMode::Pod, &["sleep", "1000"]);
        let made = cri
            .create_container(&pod_id, &pod, container)
            .and_then(|id| cri.start_container(&id));
        let ms = started.elapsed().as_millis();
        let removed = cri.stop_pod(&pod_id).and_then(|()| cri.remove_pod(&pod_id));
        made?;
        removed?;
        println!("{ms}");
    }
    let _ = std::fs::remove_dir_all(&logs);
    Ok(())
}
