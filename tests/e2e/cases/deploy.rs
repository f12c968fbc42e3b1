//! The by-hand node installer (`hull-node`, as `scripts/node.sh` and the
//! Kubernetes DaemonSet run it) against this suite's containerd: it
//! registers a runtime through a drop-in, and upgrading or removing it
//! leaves running pods alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_cri::v1::NamespaceMode;

use super::{expect_success, stdout};
use crate::cri::{container_config, pod_config, Cri};
use crate::env::{run, Env};

const HANDLER: &str = "hull-deployed";

struct Node<'a> {
    env: &'a Env,
    root: PathBuf,
}

impl Node<'_> {
    fn hull_node(&self, args: &[&str]) -> Result<String, String> {
        match self.hull_node_code(args)? {
            (Some(0), out) => Ok(out),
            (code, out) => Err(format!("hull-node {args:?} exited {code:?}: {out}")),
        }
    }

    /// hull-node's exit code and output; containerd is restarted after.
    fn hull_node_code(&self, args: &[&str]) -> Result<(Option<i32>, String), String> {
        let mut cmd = Command::new(self.env.repo.join("target/release/hull-node"));
        cmd.args(args)
            .arg("--root")
            .arg(&self.root)
            .arg("--containerd-config")
            .arg(self.env.dir.join("config.toml"))
            .arg("--conf-d")
            .arg(self.env.dir.join("conf.d"))
            .arg("--containerd")
            .arg(self.env.containerd_binary())
            .args(["--runtime-name", HANDLER, "--restart-cmd="]);
        let o = run(&mut cmd)?;
        self.env.restart_containerd()?;
        Ok((
            o.status.code(),
            format!("{}{}", stdout(&o), super::stderr(&o)),
        ))
    }

    /// A payload whose configuration is the suite's, plus `mark`.
    fn payload(&self, name: &str, mark: &str) -> Result<PathBuf, String> {
        let dir = self.env.dir.join(name);
        let o = run(Command::new("bash")
            .arg(self.env.repo.join("scripts/payload.sh"))
            .arg(&dir))?;
        expect_success(&o)?;
        let config = format!("{}\n# {mark}\n", self.env.good_config());
        std::fs::write(dir.join("configuration.toml"), config).map_err(|e| e.to_string())?;
        Ok(dir)
    }

    fn versions(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root.join("versions"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

/// A pod with handler `hull-deployed` and one sleeping container; the
/// version its QEMU was booted from.
fn start_pod(env: &Env, cri: &mut Cri, name: &str) -> Result<(String, String, String), String> {
    let name = env.unique(name);
    let pod = pod_config(&name, &env.path(&format!("pods/{name}")));
    let pod_id = cri.run_pod(pod.clone(), HANDLER)?;
    let c = cri.create_container(
        &pod_id,
        &pod,
        container_config("app", NamespaceMode::Container, &["sleep", "1000"]),
    )?;
    cri.start_container(&c)?;
    let qemu = Env::processes_with(&format!("hull-{pod_id}"))
        .into_iter()
        .find(|p| p.contains("qemu-system"))
        .ok_or("no QEMU for the pod")?;
    let version = qemu
        .split_whitespace()
        .find_map(|a| a.split("/versions/").nth(1))
        .and_then(|rest| rest.split('/').next())
        .ok_or(format!("QEMU not booted from an installed version: {qemu}"))?
        .to_string();
    Ok((pod_id, c, version))
}

fn exec_works(cri: &mut Cri, container: &str, when: &str) -> Result<(), String> {
    let r = cri.exec_sync(container, &["echo", "alive"])?;
    if r.exit_code != 0 || r.stdout != b"alive\n" {
        return Err(format!("{when}: exec gave {} {:?}", r.exit_code, r.stdout));
    }
    Ok(())
}

/// Install, run a pod; upgrade, the pod keeps running on its version and a
/// new pod gets the new one; remove with both running: they keep working
/// (exec) and the runtime stays registered (containerd 2.x needs it to
/// exec or stop); once the pods end, a removal unregisters the runtime and
/// deletes every version, and a new pod is refused by handler name.
pub(super) fn node_install_upgrade_and_removal_spare_running_pods(env: &Env) -> Result<(), String> {
    let node = Node {
        env,
        root: env.dir.join("opt-hull"),
    };
    let mut cri = Cri::connect(&env.sock)?;
    let mut pods = Vec::new();
    let result = (|| {
        let first = node.payload("payload-1", "first")?;
        let out = node.hull_node(&["install", "--payload", first.to_str().unwrap_or_default()])?;
        cri = Cri::connect_ready(&env.sock)?;
        let (pod_a, app_a, v1) = start_pod(env, &mut cri, "deploy-a")?;
        pods.push(pod_a.clone());
        println!(
            "    installed {v1}: {}",
            out.lines().next().unwrap_or_default()
        );
        let second = node.payload("payload-2", "second")?;
        node.hull_node(&["install", "--payload", second.to_str().unwrap_or_default()])?;
        cri = Cri::connect_ready(&env.sock)?;
        exec_works(&mut cri, &app_a, "after the upgrade")?;
        let (pod_b, app_b, v2) = start_pod(env, &mut cri, "deploy-b")?;
        pods.push(pod_b.clone());
        let mut both = [v1.clone(), v2.clone()];
        both.sort();
        if v1 == v2 || node.versions() != both {
            return Err(format!(
                "versions {v1} then {v2}; installed: {:?}",
                node.versions()
            ));
        }
        let (code, out) = node.hull_node_code(&["remove"])?;
        cri = Cri::connect_ready(&env.sock)?;
        exec_works(&mut cri, &app_a, "after a removal")?;
        exec_works(&mut cri, &app_b, "after a removal")?;
        if code != Some(75) || node.versions().len() != 2 || !out.contains("stays registered") {
            return Err(format!(
                "removal with pods running: exit {code:?}: {out}; left {:?}",
                node.versions()
            ));
        }
        for id in pods.drain(..) {
            cri.stop_pod(&id)?;
            cri.remove_pod(&id)?;
        }
        let out = node.hull_node(&["remove"])?;
        cri = Cri::connect_ready(&env.sock)?;
        if !node.versions().is_empty() || !out.contains("unregistered") {
            return Err(format!(
                "after the pods ended: {out}; left {:?}",
                node.versions()
            ));
        }
        let name = env.unique("deploy-c");
        match cri.run_pod(
            pod_config(&name, &env.path(&format!("pods/{name}"))),
            HANDLER,
        ) {
            Ok(id) => {
                pods.push(id);
                return Err("a pod started with the removed handler".into());
            }
            Err(e) if e.contains(HANDLER) => {}
            Err(e) => return Err(format!("refused without naming the handler: {e}")),
        }
        println!("    upgraded to {v2}, removed; both pods ran on through both");
        Ok(())
    })();
    for id in pods {
        let _ = cri.stop_pod(&id).and_then(|()| cri.remove_pod(&id));
    }
    let _ = std::fs::remove_dir_all(Path::new(&node.root));
    result?;
    env.check_no_leaks()
}
