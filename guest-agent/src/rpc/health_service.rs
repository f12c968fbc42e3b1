//! `grpc.Health`: Check and Version.

use async_trait::async_trait;
use protocols::{health, health_ttrpc};
use ttrpc::r#async::TtrpcContext;

use super::{RpcResult, Service};

#[async_trait]
impl health_ttrpc::Health for Service {
    async fn check(
        &self,
        _: &TtrpcContext,
        _: health::CheckRequest,
    ) -> RpcResult<health::HealthCheckResponse> {
        Ok(health::HealthCheckResponse {
            status: health::health_check_response::ServingStatus::SERVING.into(),
            ..Default::default()
        })
    }

    async fn version(
        &self,
        _: &TtrpcContext,
        _: health::CheckRequest,
    ) -> RpcResult<health::VersionCheckResponse> {
        Ok(health::VersionCheckResponse {
            grpc_version: "hull-agent-api-1".into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }
}
