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

/// The bundle directory containerd made for `id` (a task's or a
/// sandbox's), found below its state directory.
fn bundle_of(env: &Env, id: &str) -> Result<std::path::PathBuf, String> {
    let state = env.path("state");
    for plugin in std::fs::read_dir(&state)
        .map_err(|e| e.to_string())?
        .flatten()
    {
        for ns in std::fs::read_dir(plugin.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let bundle = ns.path().join(id);
            if bundle.join("address").is_file() {
                return Ok(bundle);
            }
        }
    }
    Err(format!("no bundle of {id} below {}", state.display()))
}

/// What a pod sandbox's shim says through containerd's sandbox API, called
/// as containerd's controller calls it: its state, whether it answers a
/// ping, and SandboxMetrics (the metrics' id and data type).
pub fn sandbox_api_view(env: &Env, id: &str) -> Result<(String, String, String), String> {
    use containerd_shim_protos::protobuf::{CodedInputStream, Message};
    use containerd_shim_protos::sandbox_api as sb;
    use containerd_shim_protos::sandbox_sync::SandboxClient;
    let address = std::fs::read_to_string(bundle_of(env, id)?.join("address"))
        .map_err(|e| format!("shim address of {id}: {e}"))?;
    let c = Client::connect(address.trim()).map_err(|e| format!("connect {address}: {e}"))?;
    let ctx = || context::with_timeout(30_000_000_000);
    let sandbox = SandboxClient::new(c.clone());
    let status = sandbox
        .sandbox_status(
            ctx(),
            &sb::SandboxStatusRequest {
                sandbox_id: id.into(),
                ..Default::default()
            },
        )
        .map_err(|e| format!("SandboxStatus: {e}"))?;
    sandbox
        .ping_sandbox(
            ctx(),
            &sb::PingRequest {
                sandbox_id: id.into(),
                ..Default::default()
            },
        )
        .map_err(|e| format!("PingSandbox: {e}"))?;
    // SandboxMetrics is newer than these generated stubs: the request is
    // { sandbox_id (1) }, the reply { metrics (1): { id (2), data (3) } }.
    let mut req = containerd_shim_protos::ttrpc::Request::new();
    req.service = "containerd.runtime.sandbox.v1.Sandbox".into();
    req.method = "SandboxMetrics".into();
    req.timeout_nano = 30_000_000_000;
    req.payload = [&[0x0a, id.len() as u8][..], id.as_bytes()].concat();
    let res = c.request(req).map_err(|e| format!("SandboxMetrics: {e}"))?;
    let field = |bytes: &[u8], want: u32| -> Result<Vec<u8>, String> {
        let mut input = CodedInputStream::from_bytes(bytes);
        while let Some(tag) = input.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
            if tag >> 3 == want && tag & 7 == 2 {
                return input.read_bytes().map_err(|e| e.to_string());
            }
            let wire = containerd_shim_protos::protobuf::rt::WireType::new(tag & 7)
                .ok_or("bad wire type")?;
            input.skip_field(wire).map_err(|e| e.to_string())?;
        }
        Err(format!("field {want} missing"))
    };
    let metric = field(&res.payload, 1)?;
    let metric_id = String::from_utf8_lossy(&field(&metric, 2)?).to_string();
    let data = containerd_shim_protos::protobuf::well_known_types::any::Any::parse_from_bytes(
        &field(&metric, 3)?,
    )
    .map_err(|e| e.to_string())?;
    if data.value.is_empty() {
        return Err("SandboxMetrics: empty data".into());
    }
    Ok((status.state, metric_id, data.type_url))
}
