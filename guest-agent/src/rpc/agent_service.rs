//! `grpc.AgentService`: each RPC validated, handed to the agent's
//! operations, and its error mapped to its ttrpc code.

use async_trait::async_trait;
use protobuf::well_known_types::empty::Empty;
use protocols::stream::StreamKind;
use protocols::{agent, agent_ttrpc};
use ttrpc::r#async::TtrpcContext;

use super::containers::parse_resources;
use super::{blocking, RpcResult, Service};
use crate::errors::AgentError;
use crate::storage;

#[async_trait]
impl agent_ttrpc::AgentService for Service {
    async fn create_container(
        &self,
        _: &TtrpcContext,
        req: agent::CreateContainerRequest,
    ) -> RpcResult<Empty> {
        Ok(Service::create_container(self, req)
            .await
            .map(|_| Empty::new())?)
    }

    async fn start_container(
        &self,
        _: &TtrpcContext,
        req: agent::StartContainerRequest,
    ) -> RpcResult<Empty> {
        Ok(Service::start_container(self, &req.container_id)
            .await
            .map(|_| Empty::new())?)
    }

    async fn remove_container(
        &self,
        _: &TtrpcContext,
        req: agent::RemoveContainerRequest,
    ) -> RpcResult<Empty> {
        Ok(
            Service::remove_container(self, &req.container_id, req.timeout)
                .await
                .map(|_| Empty::new())?,
        )
    }

    async fn exec_process(
        &self,
        _: &TtrpcContext,
        req: agent::ExecProcessRequest,
    ) -> RpcResult<Empty> {
        Ok(Service::exec_process(self, req)
            .await
            .map(|_| Empty::new())?)
    }

    async fn update_container(
        &self,
        _: &TtrpcContext,
        req: agent::UpdateContainerRequest,
    ) -> RpcResult<Empty> {
        let resources = parse_resources(&req)?;
        let c = self.0.registry.get(&req.container_id)?;
        c.require_alive("update")?;
        let cg = c.cgroup();
        blocking("update task", move || cg.update(&resources))
            .await?
            .map_err(|e| AgentError::Container(e.into()))?;
        slog::info!(self.0.log, "container resources updated"; "container" => &req.container_id);
        Ok(Empty::new())
    }

    async fn update_interface(
        &self,
        _: &TtrpcContext,
        req: agent::UpdateInterfaceRequest,
    ) -> RpcResult<protocols::types::Interface> {
        let want = req
            .interface
            .as_ref()
            .ok_or_else(|| AgentError::invalid("interface", "missing"))?;
        let net = self.network().await?;
        let got = net.update_interface(want).await.map_err(AgentError::from)?;
        slog::info!(self.0.log, "interface configured"; "name" => &got.name, "mac" => &got.hwAddr);
        Ok(got)
    }

    async fn update_routes(
        &self,
        _: &TtrpcContext,
        req: agent::UpdateRoutesRequest,
    ) -> RpcResult<agent::Routes> {
        let want = req
            .routes
            .as_ref()
            .map(|r| r.Routes.clone())
            .unwrap_or_default();
        let routes = self
            .network()
            .await?
            .update_routes(&want)
            .await
            .map_err(AgentError::from)?;
        Ok(agent::Routes {
            Routes: routes,
            ..Default::default()
        })
    }

    async fn list_interfaces(
        &self,
        _: &TtrpcContext,
        _: agent::ListInterfacesRequest,
    ) -> RpcResult<agent::Interfaces> {
        let interfaces = self
            .network()
            .await?
            .list_interfaces()
            .await
            .map_err(AgentError::from)?;
        Ok(agent::Interfaces {
            Interfaces: interfaces,
            ..Default::default()
        })
    }

    async fn list_routes(
        &self,
        _: &TtrpcContext,
        _: agent::ListRoutesRequest,
    ) -> RpcResult<agent::Routes> {
        let routes = self
            .network()
            .await?
            .list_routes()
            .await
            .map_err(AgentError::from)?;
        Ok(agent::Routes {
            Routes: routes,
            ..Default::default()
        })
    }

    async fn add_arp_neighbors(
        &self,
        _: &TtrpcContext,
        req: agent::AddARPNeighborsRequest,
    ) -> RpcResult<Empty> {
        let want = req
            .neighbors
            .as_ref()
            .map(|n| n.ARPNeighbors.clone())
            .unwrap_or_default();
        self.network()
            .await?
            .add_arp_neighbors(&want)
            .await
            .map_err(AgentError::from)?;
        Ok(Empty::new())
    }

    async fn get_oom_event(
        &self,
        _: &TtrpcContext,
        _: agent::GetOOMEventRequest,
    ) -> RpcResult<agent::OOMEvent> {
        let container_id = self.0.oom.next().await.ok_or_else(|| {
            AgentError::sys("OOM events")(std::io::Error::other("the watcher stopped"))
        })?;
        Ok(agent::OOMEvent {
            container_id,
            ..Default::default()
        })
    }

    async fn stats_container(
        &self,
        _: &TtrpcContext,
        req: agent::StatsContainerRequest,
    ) -> RpcResult<agent::StatsContainerResponse> {
        let c = self.0.registry.get(&req.container_id)?;
        let cg = c.cgroup();
        let net_dev = self
            .0
            .guest
            .proc_root
            .join(c.init.pid.to_string())
            .join("net/dev");
        // All of it is file reads: off the async workers, in one go.
        let (stats, pids, network_stats) = blocking("stats task", move || {
            let network = std::fs::read_to_string(net_dev)
                .map(|text| crate::stats::network_from_proc(&text))
                .unwrap_or_default();
            cg.stats().map(|s| (s, cg.pids(), network))
        })
        .await?
        .map_err(|e| AgentError::sys("container statistics")(std::io::Error::other(e)))?;
        Ok(agent::StatsContainerResponse {
            cgroup_stats: Some(crate::stats::to_proto(&stats)).into(),
            network_stats,
            hull_pids: pids,
            ..Default::default()
        })
    }

    async fn pause_container(
        &self,
        _: &TtrpcContext,
        req: agent::PauseContainerRequest,
    ) -> RpcResult<Empty> {
        Ok(self
            .set_paused(&req.container_id, true)
            .await
            .map(|_| Empty::new())?)
    }

    async fn resume_container(
        &self,
        _: &TtrpcContext,
        req: agent::ResumeContainerRequest,
    ) -> RpcResult<Empty> {
        Ok(self
            .set_paused(&req.container_id, false)
            .await
            .map(|_| Empty::new())?)
    }

    async fn signal_process(
        &self,
        _: &TtrpcContext,
        req: agent::SignalProcessRequest,
    ) -> RpcResult<Empty> {
        Ok(self.signal(&req).map(|_| Empty::new())?)
    }

    async fn wait_process(
        &self,
        _: &TtrpcContext,
        req: agent::WaitProcessRequest,
    ) -> RpcResult<agent::WaitProcessResponse> {
        let p = self.0.registry.process(&req.container_id, &req.exec_id)?;
        let status = p.wait().await;
        // An exec'd process is forgotten once its exit is collected (as in
        // Kata), so probes exec'ing every few seconds do not pile up; but
        // not before the RPC stdio path has read its output to the end.
        p.mark_collected();
        self.forget_exec_if_done(&req.container_id, &p);
        Ok(agent::WaitProcessResponse {
            status,
            ..Default::default()
        })
    }

    async fn close_stdin(
        &self,
        _: &TtrpcContext,
        req: agent::CloseStdinRequest,
    ) -> RpcResult<Empty> {
        self.0
            .registry
            .process(&req.container_id, &req.exec_id)?
            .io
            .close_stdin()
            .await;
        Ok(Empty::new())
    }

    async fn write_stdin(
        &self,
        _: &TtrpcContext,
        req: agent::WriteStreamRequest,
    ) -> RpcResult<agent::WriteStreamResponse> {
        let p = self.0.registry.process(&req.container_id, &req.exec_id)?;
        let len = crate::stdio_rpc::write(&req.container_id, &p, &req.data).await?;
        Ok(agent::WriteStreamResponse {
            len,
            ..Default::default()
        })
    }

    async fn read_stdout(
        &self,
        _: &TtrpcContext,
        req: agent::ReadStreamRequest,
    ) -> RpcResult<agent::ReadStreamResponse> {
        Ok(self.read_stream(req, StreamKind::Stdout).await?)
    }

    async fn read_stderr(
        &self,
        _: &TtrpcContext,
        req: agent::ReadStreamRequest,
    ) -> RpcResult<agent::ReadStreamResponse> {
        Ok(self.read_stream(req, StreamKind::Stderr).await?)
    }

    async fn get_metrics(
        &self,
        _: &TtrpcContext,
        _: agent::GetMetricsRequest,
    ) -> RpcResult<agent::Metrics> {
        let proc_root = self.0.guest.proc_root.clone();
        let containers = self.0.registry.ids().len();
        let metrics = blocking("metrics", move || {
            crate::metrics::gather(&proc_root, containers)
        })
        .await?;
        Ok(agent::Metrics {
            metrics,
            ..Default::default()
        })
    }

    async fn online_cpu_mem(
        &self,
        _: &TtrpcContext,
        req: agent::OnlineCPUMemRequest,
    ) -> RpcResult<Empty> {
        let (sysfs, log) = (self.0.guest.sysfs.clone(), self.0.log.clone());
        let work = blocking("online CPUs and memory", move || {
            sysfs.online_cpu_mem(req.nb_cpus, req.cpu_only)
        });
        if req.wait {
            let (cpus, memory) = work.await?.map_err(AgentError::from)?;
            slog::info!(self.0.log, "onlined"; "cpus" => cpus, "memory_blocks" => memory);
        } else {
            tokio::spawn(async move {
                match work.await {
                    Ok(Ok((cpus, memory))) => {
                        slog::info!(log, "onlined"; "cpus" => cpus, "memory_blocks" => memory)
                    }
                    Ok(Err(e)) => slog::warn!(log, "online CPUs and memory failed"; "error" => %e),
                    Err(e) => slog::warn!(log, "online CPUs and memory failed"; "error" => %e),
                }
            });
        }
        Ok(Empty::new())
    }

    async fn reseed_random_dev(
        &self,
        _: &TtrpcContext,
        req: agent::ReseedRandomDevRequest,
    ) -> RpcResult<Empty> {
        let dev = std::path::Path::new("/dev/random");
        crate::guest::reseed_random(dev, &req.data).map_err(AgentError::from)?;
        Ok(Empty::new())
    }

    async fn get_guest_details(
        &self,
        _: &TtrpcContext,
        req: agent::GuestDetailsRequest,
    ) -> RpcResult<agent::GuestDetailsResponse> {
        let g = &self.0.guest;
        let mem_block_size_bytes = if req.mem_block_size {
            g.sysfs.mem_block_size().map_err(AgentError::from)?
        } else {
            0
        };
        Ok(agent::GuestDetailsResponse {
            mem_block_size_bytes,
            support_mem_hotplug_probe: req.mem_hotplug_probe && g.sysfs.has_mem_hotplug_probe(),
            agent_details: Some(agent::AgentDetails {
                version: env!("CARGO_PKG_VERSION").into(),
                init_daemon: g.is_pid1,
                device_handlers: Vec::new(),
                storage_handlers: storage::DRIVERS.iter().map(|d| d.to_string()).collect(),
                supports_seccomp: crate::guest::supports_seccomp(&g.proc_root),
                ..Default::default()
            })
            .into(),
            ..Default::default()
        })
    }

    async fn set_guest_date_time(
        &self,
        _: &TtrpcContext,
        req: agent::SetGuestDateTimeRequest,
    ) -> RpcResult<Empty> {
        crate::guest::set_date_time(req.Sec, req.Usec).map_err(AgentError::from)?;
        Ok(Empty::new())
    }

    async fn copy_file(&self, _: &TtrpcContext, req: agent::CopyFileRequest) -> RpcResult<Empty> {
        let dir = self.0.guest.copy_dir.clone();
        blocking("copy file", move || crate::copy_file::copy(&dir, &req))
            .await?
            .map_err(AgentError::from)?;
        Ok(Empty::new())
    }

    async fn tty_win_resize(
        &self,
        _: &TtrpcContext,
        req: agent::TtyWinResizeRequest,
    ) -> RpcResult<Empty> {
        let p = self.0.registry.process(&req.container_id, &req.exec_id)?;
        p.io.resize(req.row as u16, req.column as u16)?;
        Ok(Empty::new())
    }

    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: agent::CreateSandboxRequest,
    ) -> RpcResult<Empty> {
        Ok(Service::create_sandbox(self, req)
            .await
            .map(|_| Empty::new())?)
    }

    async fn destroy_sandbox(
        &self,
        _: &TtrpcContext,
        _: agent::DestroySandboxRequest,
    ) -> RpcResult<Empty> {
        Ok(Service::destroy_sandbox(self).await.map(|_| Empty::new())?)
    }
}
