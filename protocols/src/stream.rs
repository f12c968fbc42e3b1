//! Handshake of a raw stdio connection.
//!
//! The host opens one connection to [`crate::STDIO_PORT`] per stream of a
//! process and sends a single header line
//! `HULL-STREAM <container_id> <exec_id|-> <stdin|stdout|stderr>\n`.
//! The agent answers `OK\n` and from then on the connection carries the
//! stream's raw bytes, or answers `ERR <reason>\n` and closes it.
//!
//! An output stream may instead be announced *before* its process exists,
//! with a fifth word: `HULL-STREAM <container_id> <exec_id|-> stdout direct\n`.
//! The agent then holds the connection and gives it to the process it
//! creates under that id as its stdout (or stderr) itself, so the output
//! leaves the VM with no copy in the agent; the agent ends the stream once
//! the process has exited and nothing it left behind still holds it.

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
    /// Announced before the process exists, to become its own output.
    pub direct: bool,
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
        let direct = if self.direct { " direct" } else { "" };
        format!(
            "{MAGIC} {} {exec} {}{direct}\n",
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
        let direct = match words.next() {
            None => false,
            Some("direct") if kind != StreamKind::Stdin => true,
            Some("direct") => return Err(bad("direct stdin")),
            Some(_) => return Err(bad("trailing words")),
        };
        if words.next().is_some() {
            return Err(bad("trailing words"));
        }
        Ok(StreamHeader {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            kind,
            direct,
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
        for (exec, direct) in [("", false), ("exec-1", false), ("exec-1", true)] {
            let h = StreamHeader {
                container_id: "c1".into(),
                exec_id: exec.into(),
                kind: StreamKind::Stderr,
                direct,
            };
            assert_eq!(StreamHeader::parse(&h.encode()).unwrap(), h);
        }
        assert!(
            StreamHeader::parse("HULL-STREAM c1 e1 stdout direct\n")
                .unwrap()
                .direct
        );
    }

    #[test]
    fn header_rejects_bad_input() {
        for line in [
            "",
            "HULL-STREAM",
            "HULL-STREAM c1 - stdweird\n",
            "HULL-STREAM ../x - stdin\n",
            "HULL-STREAM c1 - stdin extra\n",
            "HULL-STREAM c1 - stdin direct\n",
            "HULL-STREAM c1 - stdout direct extra\n",
            "OTHER c1 - stdin\n",
        ] {
            assert!(StreamHeader::parse(line).is_err(), "{line:?} accepted");
        }
    }
}
