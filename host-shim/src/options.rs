//! containerd's per-runtime options (`CreateTaskRequest.options`): the
//! `ConfigPath` of `runtimeoptions.v1.Options`, which CRI fills from the
//! runtime's `options` table and `ctr run --runtime-config-path` sets.

use std::path::{Path, PathBuf};

use protobuf::rt::WireType;
use protobuf::well_known_types::any::Any;
use protobuf::CodedInputStream;

use crate::config::HullConfig;
use crate::errors::ShimError;

/// The options type Hull accepts (by its full protobuf name).
const RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";
/// runc's options, which containerd 2.x's CRI sends by default (with the
/// sandbox API, whatever the runtime's own options): nothing in them
/// applies to a VM, so they mean "no Hull options".
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
/// `Options.config_path` (field 2; 1 is type_url, 3 config_body).
const CONFIG_PATH_FIELD: u32 = 2;
/// Where the chosen configuration's path is kept in the bundle, for the
/// later `delete` invocation of the shim, which gets no options.
const BUNDLE_RECORD: &str = "hull-config-path";

/// The ConfigPath in the options, if any; other option types are refused
/// by name.
pub fn config_path(options: Option<&Any>) -> Result<Option<PathBuf>, ShimError> {
    let Some(any) = options.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
        return Ok(None);
    };
    if any.type_url.ends_with(RUNC_OPTIONS) {
        return Ok(None);
    }
    if !any.type_url.ends_with(RUNTIME_OPTIONS) {
        return Err(ShimError::Invalid {
            what: "runtime options",
            reason: format!(
                "type {:?} is not {RUNTIME_OPTIONS} (the only options Hull takes: ConfigPath)",
                any.type_url
            ),
        });
    }
    let path = string_field(&any.value, CONFIG_PATH_FIELD, "runtime options")?;
    Ok(path.filter(|p| !p.is_empty()).map(PathBuf::from))
}

/// The last value of the string field `field` in the encoded message
/// `bytes` (other fields skipped); `what` names the message in errors.
pub fn string_field(
    bytes: &[u8],
    field: u32,
    what: &'static str,
) -> Result<Option<String>, ShimError> {
    Ok(string_fields(bytes, field, what)?.pop())
}

/// Every value of the (repeated) string field `field`.
pub fn string_fields(
    bytes: &[u8],
    field: u32,
    what: &'static str,
) -> Result<Vec<String>, ShimError> {
    bytes_fields(bytes, field, what)?
        .into_iter()
        .map(|b| {
            String::from_utf8(b).map_err(|_| ShimError::Invalid {
                what,
                reason: format!("field {field} is not UTF-8"),
            })
        })
        .collect()
}

/// Every value of the length-delimited field `field` (strings, bytes or
/// embedded messages), in order.
pub fn bytes_fields(
    bytes: &[u8],
    field: u32,
    what: &'static str,
) -> Result<Vec<Vec<u8>>, ShimError> {
    let bad = |e: protobuf::Error| ShimError::Invalid {
        what,
        reason: e.to_string(),
    };
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut found = Vec::new();
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(bad)? {
        let wire = WireType::new(tag & 7).ok_or_else(|| ShimError::Invalid {
            what,
            reason: format!("bad wire type in tag {tag}"),
        })?;
        if tag >> 3 == field && wire == WireType::LengthDelimited {
            found.push(input.read_bytes().map_err(bad)?);
        } else {
            input.skip_field(wire).map_err(bad)?;
        }
    }
    Ok(found)
}

/// The configuration for a task: its options' ConfigPath, else
/// `HULL_CONFIG`, else the default. The choice is recorded in the bundle.
pub fn config_for_task(options: Option<&Any>, bundle: &Path) -> Result<HullConfig, ShimError> {
    let path = config_path(options)?.unwrap_or_else(HullConfig::path);
    let cfg = HullConfig::load(&path)?;
    record_config_path(bundle, &path)?;
    Ok(cfg)
}

/// The configuration for a sandbox made through the sandbox API: the one
/// `start` recorded from the runtime's options, else as for a task.
pub fn config_for_sandbox(bundle: &Path) -> Result<HullConfig, ShimError> {
    let path = recorded_config_path(bundle);
    let cfg = HullConfig::load(&path)?;
    record_config_path(bundle, &path)?;
    Ok(cfg)
}

/// Records the configuration path in the bundle (for `delete`, and for a
/// sandbox's CreateSandbox).
pub fn record_config_path(bundle: &Path, path: &Path) -> Result<(), ShimError> {
    std::fs::write(
        bundle.join(BUNDLE_RECORD),
        path.as_os_str().as_encoded_bytes(),
    )
    .map_err(ShimError::io(format!(
        "record the configuration path in {}",
        bundle.display()
    )))
}

/// The configuration a task was created with (run from its bundle).
pub fn recorded_config_path(bundle: &Path) -> PathBuf {
    std::fs::read_to_string(bundle.join(BUNDLE_RECORD))
        .map(PathBuf::from)
        .unwrap_or_else(|_| HullConfig::path())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// runtimeoptions.v1.Options { type_url: "x", config_path: path }
    fn options(path: &str) -> Any {
        let mut value = vec![0x0a, 1, b'x', 0x12, path.len() as u8];
        value.extend_from_slice(path.as_bytes());
        Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        }
    }

    #[test]
    fn config_path_is_read_from_runtime_options() {
        let got = config_path(Some(&options("/etc/hull/fast.toml"))).unwrap();
        assert_eq!(got, Some(PathBuf::from("/etc/hull/fast.toml")));
        assert_eq!(config_path(None).unwrap(), None);
        assert_eq!(config_path(Some(&Any::default())).unwrap(), None);
    }

    #[test]
    fn runc_options_mean_none_and_other_types_are_refused_by_name() {
        let runc = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0x08, 0x01],
            ..Default::default()
        };
        assert_eq!(config_path(Some(&runc)).unwrap(), None);
        let other = Any {
            type_url: "example.com/gvisor.Options".into(),
            ..Default::default()
        };
        let err = config_path(Some(&other)).unwrap_err().to_string();
        assert!(err.contains("example.com/gvisor.Options"), "{err}");
    }

    #[test]
    fn the_choice_is_recorded_for_delete_once_it_loads() {
        let bundle = tempfile::tempdir().unwrap();
        let cfg = bundle.path().join("hull.toml");
        std::fs::write(&cfg, "garbage").unwrap();
        let err = config_for_task(Some(&options(cfg.to_str().unwrap())), bundle.path());
        assert!(err.is_err(), "a broken configuration loads");
        assert_eq!(recorded_config_path(bundle.path()), HullConfig::path());

        std::fs::write(&cfg, include_str!("../../config/configuration.toml")).unwrap();
        config_for_task(Some(&options(cfg.to_str().unwrap())), bundle.path()).unwrap();
        assert_eq!(recorded_config_path(bundle.path()), cfg);
    }
}
