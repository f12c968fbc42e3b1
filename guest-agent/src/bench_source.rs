//! `hull-agent bench-source (stdout | vsock:PORT) (BYTES | -)`: a benchmark
//! helper, not part of the agent's service. Run as a process in the guest, it
//! writes BYTES zero bytes from memory (or, with `-`, its stdin) to its
//! stdout or to the one vsock connection it accepts on PORT, in 256 KiB
//! writes. The same producer on both sinks is how `hull-agentctl
//! bench-stdio` sets the stdio paths against raw vsock.

use std::io::{Read, Write};

/// What to send: zeros from memory, or stdin.
enum Source {
    Zeros(u64),
    Stdin,
}

enum Sink {
    Stdout,
    Vsock(u32),
}

fn parse(args: &[String]) -> Option<(Sink, Source)> {
    let [sink, source] = args else {
        return None;
    };
    let sink = match sink.strip_prefix("vsock:") {
        Some(port) => Sink::Vsock(port.parse().ok()?),
        None if sink == "stdout" => Sink::Stdout,
        None => return None,
    };
    let source = match source.as_str() {
        "-" => Source::Stdin,
        n => Source::Zeros(n.parse().ok()?),
    };
    Some((sink, source))
}

fn send(out: &mut dyn Write, source: Source) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    match source {
        Source::Zeros(mut left) => {
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                out.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
        Source::Stdin => loop {
            let n = std::io::stdin().lock().read(&mut buf)?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])?;
        },
    }
    out.flush()
}

pub fn run(args: &[String]) -> i32 {
    let Some((sink, source)) = parse(args) else {
        eprintln!("usage: hull-agent bench-source (stdout | vsock:PORT) (BYTES | -)");
        return 2;
    };
    let sent = match sink {
        Sink::Stdout => send(&mut std::io::stdout().lock(), source),
        Sink::Vsock(port) => {
            let addr = vsock::VsockAddr::new(vsock::VMADDR_CID_ANY, port);
            vsock::VsockListener::bind(&addr).and_then(|l| {
                let (mut conn, _) = l.accept()?;
                send(&mut conn, source)?;
                conn.shutdown(std::net::Shutdown::Write)
            })
        }
    };
    match sent {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench-source: {e}");
            1
        }
    }
}
