//! OCI Linux resources from Kata's protobuf `oci.LinuxResources` (what a
//! Kata client's UpdateContainer carries) to the runtime-spec form. Hull's
//! own shim sends the runtime-spec JSON instead, which carries everything.

use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use crate::oci;

#[derive(Debug, thiserror::Error)]
#[error("invalid OCI resources: {0}")]
pub struct ResourcesError(String);

/// Memory, CPU and pids limits; zero means "not set", as protobuf cannot
/// tell them apart. Devices, block I/O, hugepages and network priorities
/// are refused by name rather than dropped.
pub fn from_proto(r: &oci::LinuxResources) -> Result<LinuxResources, ResourcesError> {
    let unsupported = [
        ("Devices", !r.Devices.is_empty()),
        ("BlockIO", r.BlockIO.is_some()),
        ("HugepageLimits", !r.HugepageLimits.is_empty()),
        ("Network", r.Network.is_some()),
    ];
    if let Some((name, _)) = unsupported.iter().find(|(_, set)| *set) {
        return Err(ResourcesError(format!(
            "{name}: not accepted in protobuf form; send hull_oci_resources_json"
        )));
    }
    let mut v = Map::new();
    let put = |obj: &mut Map<String, Value>, key: &str, value: Value, set: bool| {
        if set {
            obj.insert(key.into(), value);
        }
    };
    if let Some(m) = r.Memory.as_ref() {
        let mut o = Map::new();
        put(&mut o, "limit", json!(m.Limit), m.Limit != 0);
        put(
            &mut o,
            "reservation",
            json!(m.Reservation),
            m.Reservation != 0,
        );
        put(&mut o, "swap", json!(m.Swap), m.Swap != 0);
        put(&mut o, "swappiness", json!(m.Swappiness), m.Swappiness != 0);
        put(&mut o, "disableOOMKiller", json!(true), m.DisableOOMKiller);
        v.insert("memory".into(), Value::Object(o));
    }
    if let Some(c) = r.CPU.as_ref() {
        let mut o = Map::new();
        put(&mut o, "shares", json!(c.Shares), c.Shares != 0);
        put(&mut o, "quota", json!(c.Quota), c.Quota != 0);
        put(&mut o, "period", json!(c.Period), c.Period != 0);
        put(&mut o, "cpus", json!(c.Cpus), !c.Cpus.is_empty());
        put(&mut o, "mems", json!(c.Mems), !c.Mems.is_empty());
        v.insert("cpu".into(), Value::Object(o));
    }
    if let Some(p) = r.Pids.as_ref() {
        v.insert("pids".into(), json!({ "limit": p.Limit }));
    }
    serde_json::from_value(Value::Object(v)).map_err(|e| ResourcesError(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_arrive_and_unset_stays_unset() {
        let r = oci::LinuxResources {
            Memory: Some(oci::LinuxMemory {
                Limit: 64 << 20,
                ..Default::default()
            })
            .into(),
            CPU: Some(oci::LinuxCPU {
                Quota: 50_000,
                Period: 100_000,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        let out = from_proto(&r).unwrap();
        let mem = out.memory().as_ref().unwrap();
        assert_eq!(mem.limit(), Some(64 << 20));
        assert_eq!(mem.reservation(), None);
        let cpu = out.cpu().as_ref().unwrap();
        assert_eq!((cpu.quota(), cpu.period()), (Some(50_000), Some(100_000)));
        assert_eq!(cpu.shares(), None);
        assert!(out.pids().is_none());
    }

    #[test]
    fn what_cannot_be_converted_is_named() {
        let r = oci::LinuxResources {
            BlockIO: Some(oci::LinuxBlockIO::default()).into(),
            ..Default::default()
        };
        let err = from_proto(&r).unwrap_err().to_string();
        assert!(err.contains("BlockIO"), "{err}");
    }
}
