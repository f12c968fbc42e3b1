//! What `hull-jail` prints: runc's state JSON and tables, and its log lines.

use std::io::Write;
use std::path::Path;

use rustjail::state::{Record, Status};
use serde::Serialize;

use crate::cli::LogFormat;

/// runc's `state` output (also the elements of `list --format json`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateJson<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<&'a std::collections::HashMap<String, String>>,
}

impl<'a> StateJson<'a> {
    pub fn new(record: &'a Record, status: Status) -> Self {
        StateJson {
            oci_version: record.spec.version(),
            id: &record.id,
            pid: if status == Status::Stopped {
                0
            } else {
                record.pid
            },
            status,
            bundle: &record.bundle,
            rootfs: &record.rootfs,
            created: &record.created,
            owner: &record.owner,
            annotations: record.spec.annotations().as_ref(),
        }
    }
}

/// Columns padded like Go's tabwriter in runc's `list`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<width$}", width = w + 3));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Errors go to stderr and, with `--log`, to the log file in runc's
/// format (logrus text or JSON lines), which is where containerd reads a
/// failed runtime's reason.
pub struct Log {
    file: Option<std::fs::File>,
    format: LogFormat,
}

impl Log {
    pub fn new(path: Option<&Path>, format: LogFormat) -> Self {
        let file = path.and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
        });
        Log { file, format }
    }

    pub fn error(&self, e: &dyn std::fmt::Display) {
        self.write("error", &e.to_string());
        eprintln!("hull-jail: {e}");
    }

    pub fn warn(&self, msg: &str) {
        self.write("warning", msg);
        eprintln!("hull-jail: warning: {msg}");
    }

    fn write(&self, level: &str, msg: &str) {
        let Some(mut f) = self.file.as_ref() else {
            return;
        };
        let time = rustjail::state::rfc3339(std::time::SystemTime::now());
        let line = match self.format {
            LogFormat::Json => {
                serde_json::json!({"level": level, "msg": msg, "time": time}).to_string()
            }
            LogFormat::Text => format!("time={time:?} level={level} msg={msg:?}"),
        };
        let _ = writeln!(f, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_pads_all_but_the_last_column() {
        let t = table(
            &["ID", "PID", "STATUS"],
            &[vec!["abc".into(), "1".into(), "running".into()]],
        );
        assert_eq!(t, "ID    PID   STATUS\nabc   1     running\n");
    }

    #[test]
    fn json_log_lines_carry_level_and_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        Log::new(Some(&path), LogFormat::Json).write("error", "container \"x\" does not exist");
        let line: serde_json::Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().trim()).unwrap();
        assert_eq!(line["level"], "error");
        assert_eq!(line["msg"], "container \"x\" does not exist");
    }
}
