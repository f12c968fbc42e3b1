//! The OCI process between its runtime-spec form (`oci_spec`, what rustjail
//! builds from) and Kata's protobuf `oci.Process` (what ExecProcess carries
//! on the wire). Both directions go through the runtime-spec JSON field
//! names, so the spec's own validation (capability names, rlimit types)
//! applies to what arrives.

use oci_spec::runtime::Process;
use serde_json::{json, Map, Value};

use crate::oci;

#[derive(Debug, thiserror::Error)]
#[error("invalid OCI process: {0}")]
pub struct ProcessError(String);

/// The protobuf form of an OCI process.
pub fn to_proto(p: &Process) -> Result<oci::Process, ProcessError> {
    let v = serde_json::to_value(p).map_err(|e| ProcessError(e.to_string()))?;
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let u64_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let mut out = oci::Process {
        Terminal: p.terminal().unwrap_or(false),
        Args: p.args().clone().unwrap_or_default(),
        Env: p.env().clone().unwrap_or_default(),
        Cwd: p.cwd().display().to_string(),
        NoNewPrivileges: p.no_new_privileges().unwrap_or(false),
        ApparmorProfile: p.apparmor_profile().clone().unwrap_or_default(),
        SelinuxLabel: p.selinux_label().clone().unwrap_or_default(),
        OOMScoreAdj: p.oom_score_adj().unwrap_or(0).into(),
        ..Default::default()
    };
    if let Some(b) = p.console_size() {
        out.ConsoleSize = Some(oci::Box {
            Height: b.height() as u32,
            Width: b.width() as u32,
            ..Default::default()
        })
        .into();
    }
    let user = p.user();
    out.User = Some(oci::User {
        UID: user.uid(),
        GID: user.gid(),
        AdditionalGids: user.additional_gids().clone().unwrap_or_default(),
        Username: user.username().clone().unwrap_or_default(),
        ..Default::default()
    })
    .into();
    if let Some(caps) = v.get("capabilities") {
        out.Capabilities = Some(oci::LinuxCapabilities {
            Bounding: strings(&caps["bounding"]),
            Effective: strings(&caps["effective"]),
            Inheritable: strings(&caps["inheritable"]),
            Permitted: strings(&caps["permitted"]),
            Ambient: strings(&caps["ambient"]),
            ..Default::default()
        })
        .into();
    }
    for r in v
        .get("rlimits")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.Rlimits.push(oci::POSIXRlimit {
            Type: r["type"].as_str().unwrap_or_default().to_string(),
            Hard: u64_of(r, "hard"),
            Soft: u64_of(r, "soft"),
            ..Default::default()
        });
    }
    Ok(out)
}

/// The runtime-spec form of a protobuf OCI process; names what is invalid.
pub fn from_proto(p: &oci::Process) -> Result<Process, ProcessError> {
    let mut v = Map::new();
    v.insert("terminal".into(), json!(p.Terminal));
    v.insert("args".into(), json!(p.Args));
    v.insert("env".into(), json!(p.Env));
    v.insert(
        "cwd".into(),
        json!(if p.Cwd.is_empty() { "/" } else { &p.Cwd }),
    );
    v.insert("noNewPrivileges".into(), json!(p.NoNewPrivileges));
    if let Some(b) = p.ConsoleSize.as_ref() {
        v.insert(
            "consoleSize".into(),
            json!({"height": b.Height, "width": b.Width}),
        );
    }
    let user = p.User.as_ref().cloned().unwrap_or_default();
    let mut u = json!({"uid": user.UID, "gid": user.GID, "additionalGids": user.AdditionalGids});
    if !user.Username.is_empty() {
        u["username"] = json!(user.Username);
    }
    v.insert("user".into(), u);
    if let Some(c) = p.Capabilities.as_ref() {
        v.insert(
            "capabilities".into(),
            json!({
                "bounding": c.Bounding, "effective": c.Effective, "inheritable": c.Inheritable,
                "permitted": c.Permitted, "ambient": c.Ambient,
            }),
        );
    }
    let rlimits: Vec<Value> = p
        .Rlimits
        .iter()
        .map(|r| json!({"type": r.Type, "hard": r.Hard, "soft": r.Soft}))
        .collect();
    if !rlimits.is_empty() {
        v.insert("rlimits".into(), json!(rlimits));
    }
    if p.OOMScoreAdj != 0 {
        v.insert("oomScoreAdj".into(), json!(p.OOMScoreAdj));
    }
    if !p.ApparmorProfile.is_empty() {
        v.insert("apparmorProfile".into(), json!(p.ApparmorProfile));
    }
    if !p.SelinuxLabel.is_empty() {
        v.insert("selinuxLabel".into(), json!(p.SelinuxLabel));
    }
    if p.Args.is_empty() {
        return Err(ProcessError(
            "args: empty; there is no program to run".into(),
        ));
    }
    serde_json::from_value(Value::Object(v)).map_err(|e| ProcessError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROCESS: &str = r#"{
        "terminal": true, "consoleSize": {"height": 40, "width": 120},
        "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20], "username": "app"},
        "args": ["sh", "-c", "echo hi"], "env": ["PATH=/bin", "A=b c"], "cwd": "/srv",
        "capabilities": {"bounding": ["CAP_KILL", "CAP_CHOWN"], "effective": ["CAP_KILL"],
                         "permitted": ["CAP_KILL"], "inheritable": [], "ambient": []},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
        "noNewPrivileges": true, "oomScoreAdj": -500
    }"#;

    #[test]
    fn a_process_survives_the_round_trip() {
        let p: Process = serde_json::from_str(PROCESS).unwrap();
        let back = from_proto(&to_proto(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn wire_fields_carry_the_values() {
        let p: Process = serde_json::from_str(PROCESS).unwrap();
        let pb = to_proto(&p).unwrap();
        assert_eq!(pb.Args, ["sh", "-c", "echo hi"]);
        assert_eq!(pb.User.AdditionalGids, [10, 20]);
        assert_eq!(pb.Rlimits[0].Type, "RLIMIT_NOFILE");
        assert_eq!(pb.Rlimits[0].Soft, 1024);
        assert_eq!(pb.ConsoleSize.Width, 120);
        assert_eq!(pb.OOMScoreAdj, -500);
    }

    #[test]
    fn a_bad_capability_is_named() {
        let mut pb = to_proto(&serde_json::from_str(PROCESS).unwrap()).unwrap();
        pb.Capabilities
            .mut_or_insert_default()
            .Bounding
            .push("CAP_NOPE".into());
        let err = from_proto(&pb).unwrap_err().to_string();
        assert!(err.contains("CAP_NOPE"), "{err}");
    }

    #[test]
    fn no_args_is_refused() {
        let err = from_proto(&oci::Process::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("args"), "{err}");
    }
}
