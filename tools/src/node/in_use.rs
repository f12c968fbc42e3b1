//! Which installed versions running processes still use: a shim, a helper
//! or a QEMU whose executable or command line names a version directory.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// Version name -> the pids using it.
pub fn versions_in_use(root: &Path) -> HashMap<String, Vec<u32>> {
    let prefix = format!("{}/", root.join("versions").display());
    let mut used: HashMap<String, Vec<u32>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return used;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let exe = std::fs::read_link(entry.path().join("exe"))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let text = format!("{exe}\0{}", cmdline(&entry.path()));
        for part in text.split(['\0', ',', '=']) {
            if let Some(rest) = part.strip_prefix(&prefix) {
                let version = rest.split('/').next().unwrap_or_default().to_string();
                let pids = used.entry(version).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    used
}

/// A process's command line, read up to 64 KiB.
fn cmdline(proc_dir: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(proc_dir.join("cmdline")) {
        let _ = f.take(64 << 10).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}
