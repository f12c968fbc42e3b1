//! containerd's sandbox service (`containerd.runtime.sandbox.v1.Sandbox`):
//! one thin method per RPC, mapping the request to `pod_api` and its error
//! to a ttrpc code. SandboxMetrics, newer than the generated service, is
//! added to it by hand.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::protos::protobuf::{CodedInputStream, Message};
use containerd_shim::protos::sandbox_api as api;
use containerd_shim::protos::sandbox_async::{create_sandbox, Sandbox as SandboxApi};
use containerd_shim::protos::ttrpc::r#async::{MethodHandler, Service, TtrpcContext};
use containerd_shim::protos::ttrpc::{self as server, Request, Response};
use containerd_shim::protos::types::platform::Platform;
use containerd_shim::TtrpcResult;
use protobuf::well_known_types::timestamp::Timestamp;
use protobuf::MessageField;

use super::HullShim;

#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/sandbox_metrics/mod.rs"));
}
use generated::sandbox_metrics::{Metric, SandboxMetricsRequest, SandboxMetricsResponse};

const SERVICE: &str = "containerd.runtime.sandbox.v1.Sandbox";

/// The sandbox service to register beside the task service.
pub fn services(shim: HullShim) -> HashMap<String, Service> {
    let mut services = create_sandbox(Arc::new(shim.clone()));
    if let Some(service) = services.get_mut(SERVICE) {
        service
            .methods
            .insert("SandboxMetrics".into(), Box::new(MetricsMethod(shim)));
    }
    services
}

#[async_trait]
impl SandboxApi for HullShim {
    async fn create_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::CreateSandboxRequest,
    ) -> TtrpcResult<api::CreateSandboxResponse> {
        self.rpc("CreateSandbox");
        HullShim::create_sandbox(self, &req)?;
        Ok(api::CreateSandboxResponse::new())
    }

    async fn start_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::StartSandboxRequest,
    ) -> TtrpcResult<api::StartSandboxResponse> {
        self.rpc("StartSandbox");
        Ok(HullShim::start_sandbox(self, &req).await?)
    }

    async fn platform(
        &self,
        _: &TtrpcContext,
        _: api::PlatformRequest,
    ) -> TtrpcResult<api::PlatformResponse> {
        self.rpc("Platform");
        Ok(api::PlatformResponse {
            platform: MessageField::some(Platform {
                os: "linux".into(),
                architecture: oci_architecture().into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    async fn stop_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::StopSandboxRequest,
    ) -> TtrpcResult<api::StopSandboxResponse> {
        self.rpc("StopSandbox");
        HullShim::stop_sandbox(self, &req.sandbox_id).await?;
        Ok(api::StopSandboxResponse::new())
    }

    async fn wait_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::WaitSandboxRequest,
    ) -> TtrpcResult<api::WaitSandboxResponse> {
        self.rpc("WaitSandbox");
        let (status, at) = HullShim::wait_sandbox(self, &req.sandbox_id).await?;
        Ok(api::WaitSandboxResponse {
            exit_status: status,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn sandbox_status(
        &self,
        _: &TtrpcContext,
        req: api::SandboxStatusRequest,
    ) -> TtrpcResult<api::SandboxStatusResponse> {
        self.rpc("SandboxStatus");
        Ok(HullShim::sandbox_status(self, &req).await?)
    }

    async fn ping_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::PingRequest,
    ) -> TtrpcResult<api::PingResponse> {
        self.rpc("PingSandbox");
        HullShim::ping_sandbox(self, &req.sandbox_id).await?;
        Ok(api::PingResponse::new())
    }

    async fn shutdown_sandbox(
        &self,
        _: &TtrpcContext,
        req: api::ShutdownSandboxRequest,
    ) -> TtrpcResult<api::ShutdownSandboxResponse> {
        self.rpc("ShutdownSandbox");
        HullShim::shutdown_sandbox(self, &req.sandbox_id).await?;
        Ok(api::ShutdownSandboxResponse::new())
    }
}

/// The OCI name of this machine's architecture (VMs run the host's).
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

struct MetricsMethod(HullShim);

impl MetricsMethod {
    async fn metrics(&self, req: SandboxMetricsRequest) -> TtrpcResult<SandboxMetricsResponse> {
        self.0.rpc("SandboxMetrics");
        let data = self.0.sandbox_metrics(&req.sandbox_id).await?;
        Ok(SandboxMetricsResponse {
            metrics: MessageField::some(Metric {
                timestamp: MessageField::some(Timestamp::now()),
                id: req.sandbox_id,
                data: MessageField::some(data),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

#[async_trait]
impl MethodHandler for MetricsMethod {
    async fn handler(&self, _: TtrpcContext, req: Request) -> server::Result<Response> {
        let mut parsed = SandboxMetricsRequest::new();
        parsed
            .merge_from(&mut CodedInputStream::from_bytes(&req.payload))
            .map_err(|e| server::Error::Others(format!("SandboxMetricsRequest: {e}")))?;
        let mut res = Response::new();
        match self.metrics(parsed).await {
            Ok(reply) => {
                res.set_status(server::get_status(server::Code::OK, String::new()));
                res.payload = reply
                    .write_to_bytes()
                    .map_err(|e| server::Error::Others(format!("SandboxMetricsResponse: {e}")))?;
            }
            Err(server::Error::RpcStatus(status)) => res.set_status(status),
            Err(e) => res.set_status(server::get_status(server::Code::UNKNOWN, e.to_string())),
        }
        Ok(res)
    }
}
