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

/// The ttrpc status code of a failed call (or "OK").
fn code<T>(r: Result<T, containerd_shim_protos::ttrpc::Error>) -> String {
    match r {
        Ok(_) => "OK".into(),
        Err(containerd_shim_protos::ttrpc::Error::RpcStatus(s)) => format!("{:?}", s.code()),
        Err(e) => format!("transport error: {e}"),
    }
}

fn ctx() -> context::Context {
    context::with_timeout(30_000_000_000)
}

fn exec_request(id: &str, exec_id: &str, spec: &str) -> api::ExecProcessRequest {
    api::ExecProcessRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        spec: MessageField::some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: spec.as_bytes().to_vec(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Wrong calls against a running task, each with the code containerd
/// acts on: (what was called, the code it got).
pub fn error_codes(env: &Env, id: &str) -> Result<Vec<(&'static str, String)>, String> {
    let c = client(env, id)?;
    let spec = r#"{"args":["sleep","1"],"cwd":"/","user":{"uid":0,"gid":0}}"#;
    let checkpoint = api::CheckpointTaskRequest {
        id: id.into(),
        ..Default::default()
    };
    let state = |exec_id: &str| api::StateRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    let start = api::StartRequest {
        id: id.into(),
        ..Default::default()
    };
    let mut got = vec![
        ("Checkpoint", code(c.checkpoint(ctx(), &checkpoint))),
        (
            "State of an unknown exec",
            code(c.state(ctx(), &state("nope"))),
        ),
        ("Start of a running task", code(c.start(ctx(), &start))),
        (
            "Exec with a malformed spec",
            code(c.exec(ctx(), &exec_request(id, "bad", "{not json"))),
        ),
        (
            "Exec",
            code(c.exec(ctx(), &exec_request(id, "twice", spec))),
        ),
        (
            "Exec with an id in use",
            code(c.exec(ctx(), &exec_request(id, "twice", spec))),
        ),
    ];
    let delete = api::DeleteRequest {
        id: id.into(),
        exec_id: "twice".into(),
        ..Default::default()
    };
    got.push((
        "Delete of an unstarted exec",
        code(c.delete(ctx(), &delete)),
    ));
    got.push((
        "State after its delete",
        code(c.state(ctx(), &state("twice"))),
    ));
    Ok(got)
}
