//! The whole OCI runtime spec from Kata's protobuf `oci.Spec` (what a Kata
//! runtime's CreateContainer carries) to the runtime-spec form. Hull's own
//! shim sends the runtime-spec JSON instead (`hull_oci_spec_json`), which
//! has the OCI 1.1 fields Kata's message lacks.
//!
//! Like [`crate::process`], this goes through the runtime-spec JSON field
//! names, so the spec's own validation applies to what arrives, and what
//! Hull cannot honour is refused by name rather than dropped.

use oci_spec::runtime::Spec;
use serde_json::{json, Map, Value};

use crate::oci;

#[derive(Debug, thiserror::Error)]
#[error("invalid OCI spec: {0}")]
pub struct SpecError(String);

/// The runtime-spec form of a protobuf OCI spec; names what is invalid.
pub fn from_proto(s: &oci::Spec) -> Result<Spec, SpecError> {
    if s.Linux.as_ref().and_then(|l| l.IntelRdt.as_ref()).is_some() {
        return Err(SpecError("Linux.IntelRdt: not available in a VM".into()));
    }
    let mut v = Map::new();
    let version = if s.Version.is_empty() {
        "1.0.2"
    } else {
        &s.Version
    };
    v.insert("ociVersion".into(), json!(version));
    if let Some(p) = s.Process.as_ref() {
        let p = crate::process::from_proto(p).map_err(|e| SpecError(e.to_string()))?;
        v.insert("process".into(), to_value(&p)?);
    }
    if let Some(r) = s.Root.as_ref() {
        v.insert(
            "root".into(),
            json!({"path": r.Path, "readonly": r.Readonly}),
        );
    }
    if !s.Hostname.is_empty() {
        v.insert("hostname".into(), json!(s.Hostname));
    }
    let mounts: Vec<Value> = s.Mounts.iter().map(mount).collect();
    v.insert("mounts".into(), Value::Array(mounts));
    if let Some(h) = s.Hooks.as_ref() {
        v.insert("hooks".into(), hooks(h));
    }
    if !s.Annotations.is_empty() {
        v.insert("annotations".into(), json!(s.Annotations));
    }
    if let Some(l) = s.Linux.as_ref() {
        v.insert("linux".into(), linux(l)?);
    }
    serde_json::from_value(Value::Object(v)).map_err(|e| SpecError(e.to_string()))
}

fn to_value<T: serde::Serialize>(t: &T) -> Result<Value, SpecError> {
    serde_json::to_value(t).map_err(|e| SpecError(e.to_string()))
}

/// Inserts `value` under `key` unless it is protobuf's "not set".
fn put(o: &mut Map<String, Value>, key: &str, value: Value, set: bool) {
    if set {
        o.insert(key.into(), value);
    }
}

fn mount(m: &oci::Mount) -> Value {
    let mut o = Map::new();
    o.insert("destination".into(), json!(m.destination));
    put(&mut o, "source", json!(m.source), !m.source.is_empty());
    put(&mut o, "type", json!(m.type_), !m.type_.is_empty());
    put(&mut o, "options", json!(m.options), !m.options.is_empty());
    Value::Object(o)
}

fn hooks(h: &oci::Hooks) -> Value {
    let list = |hooks: &[oci::Hook]| -> Value {
        hooks
            .iter()
            .map(|k| {
                let mut o = Map::new();
                o.insert("path".into(), json!(k.Path));
                put(&mut o, "args", json!(k.Args), !k.Args.is_empty());
                put(&mut o, "env", json!(k.Env), !k.Env.is_empty());
                put(&mut o, "timeout", json!(k.Timeout), k.Timeout != 0);
                Value::Object(o)
            })
            .collect()
    };
    let mut o = Map::new();
    for (key, hooks) in [
        ("prestart", &h.Prestart),
        ("poststart", &h.Poststart),
        ("poststop", &h.Poststop),
    ] {
        put(&mut o, key, list(hooks), !hooks.is_empty());
    }
    Value::Object(o)
}

fn linux(l: &oci::Linux) -> Result<Value, SpecError> {
    let ids = |maps: &[oci::LinuxIDMapping]| -> Value {
        maps.iter()
            .map(|m| json!({"containerID": m.ContainerID, "hostID": m.HostID, "size": m.Size}))
            .collect()
    };
    let mut o = Map::new();
    put(
        &mut o,
        "uidMappings",
        ids(&l.UIDMappings),
        !l.UIDMappings.is_empty(),
    );
    put(
        &mut o,
        "gidMappings",
        ids(&l.GIDMappings),
        !l.GIDMappings.is_empty(),
    );
    put(&mut o, "sysctl", json!(l.Sysctl), !l.Sysctl.is_empty());
    if let Some(r) = l.Resources.as_ref() {
        let r = crate::resources::from_proto(r).map_err(|e| SpecError(e.to_string()))?;
        o.insert("resources".into(), to_value(&r)?);
    }
    put(
        &mut o,
        "cgroupsPath",
        json!(l.CgroupsPath),
        !l.CgroupsPath.is_empty(),
    );
    let namespaces: Vec<Value> = l
        .Namespaces
        .iter()
        .map(|n| {
            let mut ns = Map::new();
            ns.insert("type".into(), json!(n.Type));
            put(&mut ns, "path", json!(n.Path), !n.Path.is_empty());
            Value::Object(ns)
        })
        .collect();
    put(
        &mut o,
        "namespaces",
        Value::Array(namespaces),
        !l.Namespaces.is_empty(),
    );
    let devices: Vec<Value> = l.Devices.iter().map(device).collect();
    put(
        &mut o,
        "devices",
        Value::Array(devices),
        !l.Devices.is_empty(),
    );
    if let Some(s) = l.Seccomp.as_ref() {
        o.insert("seccomp".into(), seccomp(s));
    }
    let propagation = &l.RootfsPropagation;
    put(
        &mut o,
        "rootfsPropagation",
        json!(propagation),
        !propagation.is_empty(),
    );
    put(
        &mut o,
        "maskedPaths",
        json!(l.MaskedPaths),
        !l.MaskedPaths.is_empty(),
    );
    put(
        &mut o,
        "readonlyPaths",
        json!(l.ReadonlyPaths),
        !l.ReadonlyPaths.is_empty(),
    );
    put(
        &mut o,
        "mountLabel",
        json!(l.MountLabel),
        !l.MountLabel.is_empty(),
    );
    Ok(Value::Object(o))
}

fn device(d: &oci::LinuxDevice) -> Value {
    let mut o = Map::new();
    o.insert("path".into(), json!(d.Path));
    o.insert("type".into(), json!(d.Type));
    o.insert("major".into(), json!(d.Major));
    o.insert("minor".into(), json!(d.Minor));
    put(&mut o, "fileMode", json!(d.FileMode), d.FileMode != 0);
    o.insert("uid".into(), json!(d.UID));
    o.insert("gid".into(), json!(d.GID));
    Value::Object(o)
}

fn seccomp(s: &oci::LinuxSeccomp) -> Value {
    let syscalls: Vec<Value> = s
        .Syscalls
        .iter()
        .map(|c| {
            let mut o = Map::new();
            o.insert("names".into(), json!(c.Names));
            o.insert("action".into(), json!(c.Action));
            if let Some(oci::linux_syscall::ErrnoRet::Errnoret(e)) = &c.ErrnoRet {
                o.insert("errnoRet".into(), json!(e));
            }
            let args: Vec<Value> = c
                .Args
                .iter()
                .map(|a| json!({"index": a.Index, "value": a.Value, "valueTwo": a.ValueTwo, "op": a.Op}))
                .collect();
            put(&mut o, "args", Value::Array(args), !c.Args.is_empty());
            Value::Object(o)
        })
        .collect();
    let mut o = Map::new();
    o.insert("defaultAction".into(), json!(s.DefaultAction));
    put(
        &mut o,
        "architectures",
        json!(s.Architectures),
        !s.Architectures.is_empty(),
    );
    put(&mut o, "flags", json!(s.Flags), !s.Flags.is_empty());
    put(
        &mut o,
        "syscalls",
        Value::Array(syscalls),
        !s.Syscalls.is_empty(),
    );
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kata_spec() -> oci::Spec {
        let mut s = oci::Spec {
            Version: "1.0.2".into(),
            Hostname: "kata".into(),
            ..Default::default()
        };
        s.Process = Some(oci::Process {
            Args: vec!["sh".into(), "-c".into(), "true".into()],
            Env: vec!["PATH=/bin".into()],
            Cwd: "/".into(),
            User: Some(oci::User::default()).into(),
            ..Default::default()
        })
        .into();
        s.Root = Some(oci::Root {
            Path: "/run/rootfs".into(),
            Readonly: true,
            ..Default::default()
        })
        .into();
        s.Mounts.push(oci::Mount {
            destination: "/proc".into(),
            source: "proc".into(),
            type_: "proc".into(),
            ..Default::default()
        });
        let mut linux = oci::Linux {
            CgroupsPath: "/kata/c".into(),
            MaskedPaths: vec!["/proc/kcore".into()],
            ..Default::default()
        };
        linux.Namespaces.push(oci::LinuxNamespace {
            Type: "pid".into(),
            ..Default::default()
        });
        linux.Seccomp = Some(oci::LinuxSeccomp {
            DefaultAction: "SCMP_ACT_ALLOW".into(),
            Syscalls: vec![oci::LinuxSyscall {
                Names: vec!["mkdir".into()],
                Action: "SCMP_ACT_ERRNO".into(),
                ErrnoRet: Some(oci::linux_syscall::ErrnoRet::Errnoret(1)),
                ..Default::default()
            }],
            ..Default::default()
        })
        .into();
        s.Linux = Some(linux).into();
        s
    }

    #[test]
    fn a_kata_spec_becomes_the_runtime_spec() {
        let spec = from_proto(&kata_spec()).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(v["root"], json!({"path": "/run/rootfs", "readonly": true}));
        assert_eq!(v["hostname"], "kata");
        assert_eq!(v["process"]["args"], json!(["sh", "-c", "true"]));
        assert_eq!(v["mounts"][0]["type"], "proc");
        assert_eq!(v["linux"]["cgroupsPath"], "/kata/c");
        assert_eq!(v["linux"]["namespaces"], json!([{"type": "pid"}]));
        assert_eq!(v["linux"]["seccomp"]["syscalls"][0]["errnoRet"], 1);
        assert_eq!(v["linux"]["maskedPaths"], json!(["/proc/kcore"]));
    }

    #[test]
    fn what_cannot_be_honoured_is_named() {
        let mut s = kata_spec();
        if let Some(l) = s.Linux.as_mut() {
            l.IntelRdt = Some(oci::LinuxIntelRdt::default()).into();
        }
        assert!(from_proto(&s).unwrap_err().to_string().contains("IntelRdt"));
        let mut s = kata_spec();
        if let Some(l) = s.Linux.as_mut() {
            l.Namespaces[0].Type = "nonsense".into();
        }
        assert!(from_proto(&s).is_err(), "an unknown namespace type");
    }
}
