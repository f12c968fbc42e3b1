//! containerd's task API: one thin method per RPC, mapping the request to
//! the shim's operation and its error to a ttrpc code.

use async_trait::async_trait;
use containerd_shim::api;
use containerd_shim::protos::shim_async::Task as TaskApi;
use containerd_shim::protos::ttrpc::r#async::TtrpcContext;
use containerd_shim::TtrpcResult;
use protobuf::MessageField;

use super::HullShim;
use crate::errors::ShimError;

#[async_trait]
impl TaskApi for HullShim {
    async fn state(
        &self,
        _: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        self.rpc("state");
        Ok(HullShim::state(self, &req)?)
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        self.rpc("create");
        Ok(HullShim::create(self, req).await?)
    }

    async fn start(
        &self,
        _: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        self.rpc("start");
        Ok(HullShim::start(self, req).await?)
    }

    async fn delete(
        &self,
        _: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        self.rpc("delete");
        Ok(HullShim::delete(self, req).await?)
    }

    async fn kill(&self, _: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.rpc("kill");
        HullShim::kill(self, req).await?;
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        self.rpc("wait");
        let proc = self.task(&req.id)?.process(&req.exec_id)?;
        let exit = proc.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(exit.at),
            ..Default::default()
        })
    }

    async fn update(
        &self,
        _: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        self.rpc("update");
        HullShim::update(self, &req).await?;
        Ok(api::Empty::new())
    }

    async fn stats(
        &self,
        _: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        self.rpc("stats");
        Ok(HullShim::stats(self, &req.id).await?)
    }

    /// A VM's memory cannot be checkpointed through the task API (yet):
    /// said plainly, with UNIMPLEMENTED, rather than the generated default.
    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        _: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(ShimError::Unimplemented("checkpointing a task").into())
    }

    async fn pause(&self, _: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.rpc("pause");
        self.set_paused(&req.id, true).await?;
        Ok(api::Empty::new())
    }

    async fn resume(&self, _: &TtrpcContext, req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        self.rpc("resume");
        self.set_paused(&req.id, false).await?;
        Ok(api::Empty::new())
    }

    async fn exec(
        &self,
        _: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        self.rpc("exec");
        HullShim::exec(self, req).await?;
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        self.rpc("close_io");
        HullShim::close_io(self, req).await?;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        self.rpc("resize_pty");
        HullShim::resize_pty(self, req).await?;
        Ok(api::Empty::new())
    }

    async fn pids(
        &self,
        _: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        self.rpc("pids");
        Ok(HullShim::pids(self, &req.id).await?)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        self.rpc("connect");
        let task_pid = self.task(&req.id).map(|t| t.pid).unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        self.rpc("shutdown");
        // containerd calls Shutdown after every Delete; with a task still
        // present, or a pod made through the sandbox API, the shim stays
        // (as runc's does).
        if self.tasks().is_empty() && !self.holds_api_pod() {
            self.0.exit.signal();
        }
        Ok(api::Empty::new())
    }
}
