//! A blocking CRI client for the pod cases: containerd's CRI plugin driven
//! over its gRPC socket the way the kubelet drives it.

use std::future::Future;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::env::CMD_TIMEOUT;

pub struct Cri {
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    pub fn connect(sock: &Path) -> Result<Cri, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let sock = sock.to_path_buf();
        let channel = rt
            .block_on(async move {
                Endpoint::try_from("http://[::]")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let sock: PathBuf = sock.clone();
                        async move {
                            let s = tokio::net::UnixStream::connect(sock).await?;
                            Ok::<_, std::io::Error>(TokioIo::new(s))
                        }
                    }))
                    .await
            })
            .map_err(|e| format!("connect to CRI: {e}"))?;
        Ok(Cri {
            rt,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// Connects once the CRI plugin answers (after a containerd restart it
    /// refuses calls, "server is not initialized yet", for a while).
    pub fn connect_ready(sock: &Path) -> Result<Cri, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let mut cri = Cri::connect(sock)?;
            let status = cri.call("Status", |mut c| async move {
                c.status(StatusRequest { verbose: false }).await
            });
            match status {
                Ok(_) => return Ok(cri),
                Err(e) if std::time::Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
            }
        }
    }

    /// Runs one call with the suite's command deadline; the error names the
    /// call and carries containerd's message.
    fn call<T, F>(
        &mut self,
        what: &str,
        f: impl FnOnce(RuntimeServiceClient<Channel>) -> F,
    ) -> Result<T, String>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let fut = f(self.client.clone());
        self.rt
            .block_on(async { tokio::time::timeout(CMD_TIMEOUT, fut).await })
            .map_err(|_| format!("CRI {what}: no answer in {CMD_TIMEOUT:?}"))?
            .map(|r| r.into_inner())
            .map_err(|s| format!("CRI {what}: {:?}: {}", s.code(), s.message()))
    }

    pub fn run_pod(&mut self, config: PodSandboxConfig, handler: &str) -> Result<String, String> {
        let req = RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: handler.into(),
        };
        Ok(self
            .call("RunPodSandbox", |mut c| async move {
                c.run_pod_sandbox(req).await
            })?
            .pod_sandbox_id)
    }

    pub fn create_container(
        &mut self,
        pod_id: &str,
        pod: &PodSandboxConfig,
        config: ContainerConfig,
    ) -> Result<String, String> {
        let req = CreateContainerRequest {
            pod_sandbox_id: pod_id.into(),
            config: Some(config),
            sandbox_config: Some(pod.clone()),
        };
        Ok(self
            .call("CreateContainer", |mut c| async move {
                c.create_container(req).await
            })?
            .container_id)
    }

    pub fn start_container(&mut self, id: &str) -> Result<(), String> {
        let req = StartContainerRequest {
            container_id: id.into(),
        };
        self.call("StartContainer", |mut c| async move {
            c.start_container(req).await
        })
        .map(drop)
    }

    pub fn exec_sync(&mut self, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, String> {
        let req = ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 60,
        };
        self.call("ExecSync", |mut c| async move { c.exec_sync(req).await })
    }

    pub fn container_status(&mut self, id: &str) -> Result<ContainerStatus, String> {
        let req = ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        };
        self.call("ContainerStatus", |mut c| async move {
            c.container_status(req).await
        })?
        .status
        .ok_or_else(|| format!("CRI ContainerStatus: no status for {id}"))
    }

    pub fn pod_status(&mut self, id: &str) -> Result<PodSandboxStatus, String> {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        self.call("PodSandboxStatus", |mut c| async move {
            c.pod_sandbox_status(req).await
        })?
        .status
        .ok_or_else(|| format!("CRI PodSandboxStatus: no status for {id}"))
    }

    pub fn stop_container(&mut self, id: &str, timeout: i64) -> Result<(), String> {
        let req = StopContainerRequest {
            container_id: id.into(),
            timeout,
        };
        self.call("StopContainer", |mut c| async move {
            c.stop_container(req).await
        })
        .map(drop)
    }

    pub fn remove_container(&mut self, id: &str) -> Result<(), String> {
        let req = RemoveContainerRequest {
            container_id: id.into(),
        };
        self.call("RemoveContainer", |mut c| async move {
            c.remove_container(req).await
        })
        .map(drop)
    }

    pub fn stop_pod(&mut self, id: &str) -> Result<(), String> {
        let req = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call("StopPodSandbox", |mut c| async move {
            c.stop_pod_sandbox(req).await
        })
        .map(drop)
    }

    pub fn remove_pod(&mut self, id: &str) -> Result<(), String> {
        let req = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.call("RemovePodSandbox", |mut c| async move {
            c.remove_pod_sandbox(req).await
        })
        .map(drop)
    }
}

/// A pod's configuration: private log directory, the pod network from CNI.
pub fn pod_config(name: &str, log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "hull-e2e".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.240.77.53".into()],
            searches: vec!["pods.hull.test".into()],
            ..Default::default()
        }),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: NamespaceMode::Container as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A busybox container running `args`, logging to `<name>.log`, in the
/// pod's network and IPC namespaces and the PID namespace `pid`.
pub fn container_config(name: &str, pid: NamespaceMode, args: &[&str]) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: "docker.io/hull/busybox:latest".into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(NamespaceOption {
                    network: NamespaceMode::Pod as i32,
                    pid: pid as i32,
                    ipc: NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
