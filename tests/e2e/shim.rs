//! Calls a task's shim directly over its ttrpc socket, as containerd does,
//! for the task RPCs `ctr` 1.6 has no command for.

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::ttrpc::context;
use containerd_shim_protos::{api, Client, TaskClient};

use crate::env::Env;

fn client(env: &Env, id: &str) -> Result<TaskClient, String> {
    let bundle = env
        .path("state/io.containerd.runtime.v2.task/hull-e2e")
        .join(id);
    let address = std::fs::read_to_string(bundle.join("address"))
        .map_err(|e| format!("shim address of {id}: {e}"))?;
    let c = Client::connect(address.trim()).map_err(|e| format!("connect {address}: {e}"))?;
    Ok(TaskClient::new(c))
}

/// Task Update with OCI `LinuxResources` JSON, as containerd sends it.
pub fn update(env: &Env, id: &str, resources_json: &str) -> Result<(), String> {
    let req = api::UpdateTaskRequest {
        id: id.into(),
        resources: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: resources_json.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    };
    client(env, id)?
        .update(context::with_timeout(30_000_000_000), &req)
        .map(|_| ())
        .map_err(|e| format!("Update: {e}"))
}
