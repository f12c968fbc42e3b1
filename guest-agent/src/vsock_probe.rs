//! `hull-agent vsock-connect CID PORT...`: a diagnostic, not part of the
//! agent's service. Tries to open a vsock connection to each port of CID
//! and prints one line per port: `PORT connected`, or `PORT socket: ERROR`
//! when no vsock socket can be made at all (a container's processes, by
//! default), or `PORT connect: ERROR`. Exits 0 when every line was printed.

use std::io::Write;

pub fn run(args: &[String]) -> i32 {
    let Some((cid, ports)) = args.split_first() else {
        eprintln!("usage: hull-agent vsock-connect CID PORT...");
        return 2;
    };
    let (Ok(cid), Ok(ports)) = (
        cid.parse::<u32>(),
        ports
            .iter()
            .map(|p| p.parse::<u32>())
            .collect::<Result<Vec<_>, _>>(),
    ) else {
        eprintln!("usage: hull-agent vsock-connect CID PORT... (numbers)");
        return 2;
    };
    let mut out = std::io::stdout().lock();
    for port in ports {
        let line = match vsock::VsockStream::connect(&vsock::VsockAddr::new(cid, port)) {
            Ok(_) => format!("{port} connected"),
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => {
                format!("{port} socket: {e}")
            }
            Err(e) => format!("{port} connect: {e}"),
        };
        if writeln!(out, "{line}").is_err() {
            return 1;
        }
    }
    0
}
