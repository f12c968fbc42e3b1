//! `hull-agent vsock-source PORT BYTES`: a benchmark helper, not part of the
//! agent's service. Run as a process in the guest, it accepts one vsock
//! connection on PORT and writes BYTES zero bytes to it: the raw vsock
//! figure that `hull-agentctl bench-stdio` sets the stdio paths against.

use std::io::Write;

fn parse(args: &[String]) -> Option<(u32, u64)> {
    match args {
        [port, bytes] => Some((port.parse().ok()?, bytes.parse().ok()?)),
        _ => None,
    }
}

pub fn run(args: &[String]) -> i32 {
    let Some((port, bytes)) = parse(args) else {
        eprintln!("usage: hull-agent vsock-source PORT BYTES");
        return 2;
    };
    let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, port);
    let served = vsock::VsockListener::bind(&addr).and_then(|l| {
        let (mut conn, _) = l.accept()?;
        let buf = vec![0u8; 256 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            conn.write_all(&buf[..n])?;
            left -= n as u64;
        }
        conn.shutdown(std::net::Shutdown::Write)
    });
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("vsock-source: {e}");
            1
        }
    }
}
