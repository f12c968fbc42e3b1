//! `hull-agent vsock-source PORT BYTES|-`: a benchmark helper, not part of
//! the agent's service. Run as a process in the guest, it accepts one vsock
//! connection on PORT and writes BYTES zero bytes to it (or, with `-`, its
//! stdin): the raw vsock figures that `hull-agentctl bench-stdio` sets the
//! stdio paths against.

use std::io::Write;

/// What to send: zeros from memory, or stdin.
enum Source {
    Zeros(u64),
    Stdin,
}

fn parse(args: &[String]) -> Option<(u32, Source)> {
    match args {
        [port, bytes] if bytes == "-" => Some((port.parse().ok()?, Source::Stdin)),
        [port, bytes] => Some((port.parse().ok()?, Source::Zeros(bytes.parse().ok()?))),
        _ => None,
    }
}

fn send(conn: &mut vsock::VsockStream, source: Source) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    match source {
        Source::Zeros(mut left) => {
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                conn.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
        Source::Stdin => loop {
            let n = std::io::Read::read(&mut std::io::stdin().lock(), &mut buf)?;
            if n == 0 {
                break;
            }
            conn.write_all(&buf[..n])?;
        },
    }
    Ok(())
}

pub fn run(args: &[String]) -> i32 {
    let Some((port, source)) = parse(args) else {
        eprintln!("usage: hull-agent vsock-source PORT BYTES|-");
        return 2;
    };
    let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, port);
    let served = vsock::VsockListener::bind(&addr).and_then(|l| {
        let (mut conn, _) = l.accept()?;
        send(&mut conn, source)?;
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
