//! Handshake of a raw stdio connection.
//!
//! The host opens one connection to [`crate::STDIO_PORT`] per stream of a
//! process and sends a single header line
//! `HULL-STREAM <container_id> <exec_id|-> <stdin|stdout|stderr>\n`.
//! The agent answers `OK\n` and from then on the connection carries the
//! stream's raw bytes, or answers `ERR <reason>\n` and closes it.

use std::fmt;

/// Which of a process's standard streams a connection carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
}

impl StreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamKind::Stdin => "stdin",
            StreamKind::Stdout => "stdout",
            StreamKind::Stderr => "stderr",
        }
    }
}

/// The first line of a raw stdio connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHeader {
    pub container_id: String,
    /// Empty for the container's init process.
    pub exec_id: String,
    pub kind: StreamKind,
}

/// Longest header line either side accepts, newline included.
pub const MAX_HEADER_LEN: usize = 512;
const MAGIC: &str = "HULL-STREAM";

/// Why a header line was refused.
#[derive(Debug)]
pub enum HeaderError {
    Malformed(String),
}

impl std::error::Error for HeaderError {}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::Malformed(why) => write!(f, "malformed stream header: {why}"),
        }
    }
}

impl StreamHeader {
    /// The header line, newline included.
    pub fn encode(&self) -> String {
        let exec = if self.exec_id.is_empty() {
            "-"
        } else {
            &self.exec_id
        };
        format!(
            "{MAGIC} {} {exec} {}\n",
            self.container_id,
            self.kind.as_str()
        )
    }

    /// Parses a header line (with or without its newline).
    pub fn parse(line: &str) -> Result<Self, HeaderError> {
        let bad = |why: &str| HeaderError::Malformed(format!("{why} in {line:?}"));
        let mut words = line.trim_end_matches('\n').split(' ');
        if words.next() != Some(MAGIC) {
            return Err(bad("missing HULL-STREAM"));
        }
        let container_id = words
            .next()
            .filter(|s| valid_id(s))
            .ok_or_else(|| bad("bad container id"))?;
        let exec_id = match words.next() {
            Some("-") => "",
            Some(s) if valid_id(s) => s,
            _ => return Err(bad("bad exec id")),
        };
        let kind = match words.next() {
            Some("stdin") => StreamKind::Stdin,
            Some("stdout") => StreamKind::Stdout,
            Some("stderr") => StreamKind::Stderr,
            _ => return Err(bad("bad stream kind")),
        };
        if words.next().is_some() {
            return Err(bad("trailing words"));
        }
        Ok(StreamHeader {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            kind,
        })
    }
}

/// containerd's identifier rule: letters, digits, `_`, `-`, `.`; 1 to 76 long.
pub fn valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 76
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        for exec in ["", "exec-1"] {
            let h = StreamHeader {
                container_id: "c1".into(),
                exec_id: exec.into(),
                kind: StreamKind::Stderr,
            };
            assert_eq!(StreamHeader::parse(&h.encode()).unwrap(), h);
        }
    }

    #[test]
    fn header_rejects_bad_input() {
        for line in [
            "",
            "HULL-STREAM",
            "HULL-STREAM c1 - stdweird\n",
            "HULL-STREAM ../x - stdin\n",
            "HULL-STREAM c1 - stdin extra\n",
            "OTHER c1 - stdin\n",
        ] {
            assert!(StreamHeader::parse(line).is_err(), "{line:?} accepted");
        }
    }
}
