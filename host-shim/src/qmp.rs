//! NICs hot-plugged into a running VM through QEMU's monitor (QMP): how a
//! pod gets its interfaces in a VM taken from hull-cache. Each tap's
//! descriptor goes over the monitor socket (SCM_RIGHTS, then `getfd`),
//! becomes a netdev (`netdev_add`), and a virtio-net device in one of the
//! VM's free PCIe root ports (`device_add`). The guest agent finds it by
//! its MAC address, as a NIC the VM booted with.
//!
//! QEMU runs next to the guest, so what it answers is bounded: the whole
//! session reads at most [`MAX_REPLY_BYTES`], and every read and write
//! has a deadline.

use std::io::BufReader;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags};
use qapi::qmp;

use crate::hypervisor::hotplug_slot;

/// The most a hot-plug session reads from QEMU (greeting, replies, events).
const MAX_REPLY_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP {path}: {source}")]
    Connect {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP {step} for NIC {mac}: {message}")]
    Command {
        step: &'static str,
        mac: String,
        message: String,
    },
    #[error("QMP handshake: {0}")]
    Handshake(String),
}

/// A NIC to hot-plug: the tap's descriptor and the MAC the guest sees.
pub struct HotplugNic<'a> {
    pub tap: BorrowedFd<'a>,
    pub mac: &'a str,
}

/// Hot-plugs `nics` into the VM whose monitor is at `socket`, the n-th
/// into slot `hotplug-<n>`; each step may take `limit`. Blocking.
pub fn hotplug_nics(socket: &Path, nics: &[HotplugNic], limit: Duration) -> Result<(), QmpError> {
    let connect = |source| QmpError::Connect {
        path: socket.display().to_string(),
        source,
    };
    let stream = UnixStream::connect(socket).map_err(connect)?;
    stream.set_read_timeout(Some(limit)).map_err(connect)?;
    stream.set_write_timeout(Some(limit)).map_err(connect)?;
    let reader = std::io::Read::take(stream.try_clone().map_err(connect)?, MAX_REPLY_BYTES);
    let writer = stream.try_clone().map_err(connect)?;
    let mut monitor = qapi::Qmp::new(qapi::Stream::new(BufReader::new(reader), writer));
    // qapi panics on a monitor that closes before its greeting; that is
    // an error here, not the shim's end.
    let greeted = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| monitor.handshake()));
    match greeted {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(QmpError::Handshake(e.to_string())),
        Err(_) => return Err(QmpError::Handshake("the monitor closed".into())),
    }
    for (n, nic) in nics.iter().enumerate() {
        plug(&mut monitor, &stream, n as u32, nic)?;
    }
    Ok(())
}

fn plug<S: std::io::BufRead + std::io::Write>(
    monitor: &mut qapi::Qmp<S>,
    stream: &UnixStream,
    n: u32,
    nic: &HotplugNic,
) -> Result<(), QmpError> {
    let err = |step: &'static str| {
        let mac = nic.mac.to_string();
        move |e: &dyn std::fmt::Display| QmpError::Command {
            step,
            mac,
            message: e.to_string(),
        }
    };
    let fdname = format!("hull-tap{n}");
    let netdev = format!("hull-net{n}");
    // QEMU keeps a descriptor that arrives with any bytes on the monitor
    // for the next getfd; a space is nothing to its JSON parser.
    let fds = [nic.tap.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(b" ")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(|e| err("pass the tap")(&e))?;
    monitor
        .execute(&qmp::getfd {
            fdname: fdname.clone(),
        })
        .map_err(|e| err("getfd")(&e))?;
    let tap = qmp::NetdevTapOptions {
        fd: Some(fdname),
        ..Default::default()
    };
    monitor
        .execute(&qmp::netdev_add(qmp::Netdev::tap {
            id: netdev.clone(),
            tap,
        }))
        .map_err(|e| err("netdev_add")(&e))?;
    let mut args = qapi::Dictionary::new();
    args.insert("netdev".into(), netdev.into());
    args.insert("mac".into(), nic.mac.into());
    monitor
        .execute(&qmp::device_add {
            bus: Some(hotplug_slot(n)),
            id: Some(format!("hull-nic{n}")),
            driver: "virtio-net-pci".into(),
            arguments: args,
        })
        .map_err(|e| err("device_add")(&e))?;
    Ok(())
}
