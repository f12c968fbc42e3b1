//! Linux capabilities of the container process (capctl).

use capctl::{Cap, CapSet, CapState};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

#[derive(Debug, thiserror::Error)]
pub enum CapsError {
    #[error("unknown capability {0:?}")]
    Unknown(String),
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: capctl::Error,
    },
}

fn to_capset(caps: Option<&Capabilities>) -> Result<CapSet, CapsError> {
    let mut set = CapSet::empty();
    for c in caps.into_iter().flatten() {
        let name = c.to_string();
        let name = if name.starts_with("CAP_") {
            name
        } else {
            format!("CAP_{name}")
        };
        // A capability this kernel does not know cannot be granted anyway.
        match name.parse::<Cap>() {
            Ok(cap) => set.add(cap),
            Err(_) => return Err(CapsError::Unknown(name)),
        }
    }
    Ok(set)
}

/// The spec's capability sets, resolved.
pub struct CapPlan {
    bounding: CapSet,
    state: CapState,
    ambient: CapSet,
}

impl CapPlan {
    pub fn from_spec(caps: Option<&LinuxCapabilities>) -> Result<Self, CapsError> {
        let get = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>| {
            to_capset(caps.and_then(|c| f(c).as_ref()))
        };
        Ok(CapPlan {
            bounding: get(LinuxCapabilities::bounding)?,
            state: CapState {
                effective: get(LinuxCapabilities::effective)?,
                permitted: get(LinuxCapabilities::permitted)?,
                inheritable: get(LinuxCapabilities::inheritable)?,
            },
            ambient: get(LinuxCapabilities::ambient)?,
        })
    }

    /// Before switching user: shrink the bounding set and keep capabilities
    /// across the uid change.
    pub fn before_user_switch(&self) -> Result<(), CapsError> {
        for cap in capctl::bounding::probe().iter() {
            if !self.bounding.has(cap) {
                capctl::bounding::drop(cap).map_err(|source| CapsError::Sys {
                    op: "drop bounding",
                    source,
                })?;
            }
        }
        capctl::prctl::set_keepcaps(true).map_err(|source| CapsError::Sys {
            op: "keepcaps",
            source,
        })
    }

    /// After switching user: set effective, permitted, inheritable, ambient.
    pub fn after_user_switch(&self) -> Result<(), CapsError> {
        capctl::prctl::set_keepcaps(false).map_err(|source| CapsError::Sys {
            op: "keepcaps",
            source,
        })?;
        self.state.set_current().map_err(|source| CapsError::Sys {
            op: "capset",
            source,
        })?;
        // The kernel raises an ambient capability only if it is permitted
        // and inheritable; like runc, skip the others (runc's own default
        // spec lists ambient capabilities with no inheritable set).
        let raisable = self.ambient & self.state.permitted & self.state.inheritable;
        for cap in raisable.iter() {
            capctl::ambient::raise(cap).map_err(|source| CapsError::Sys {
                op: "raise ambient",
                source,
            })?;
        }
        Ok(())
    }
}
