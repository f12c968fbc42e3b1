//! Agent configuration: the kernel command line (`hull.*` options) when the
//! agent is PID 1 or a service of the guest's init (`--guest-service`, in a
//! distro rootfs image); a TOML file (`--config`) and command-line flags. Later sources
//! override earlier ones: file, then kernel command line, then flags.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown option {0:?} (expected --config FILE, --unix-dir DIR, --log-level LEVEL, --copy-dir DIR, --guest-service)")]
    UnknownFlag(String),
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{key}: {value:?} is not a valid value")]
    BadValue { key: &'static str, value: String },
    #[error("read /proc/cmdline: {0}")]
    Cmdline(std::io::Error),
}

/// Where the agent listens.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// vsock ports for the ttrpc server and the raw stdio streams.
    Vsock { agent_port: u32, stdio_port: u32 },
    /// Unix sockets `agent.sock` and `stdio.sock` in a directory.
    Unix { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub is_pid1: bool,
    /// The agent serves a VM's host: as PID 1, or as a service of the
    /// guest's own init (`--guest-service`). Not when run on a host.
    pub in_guest: bool,
    pub log_level: slog::Level,
    pub endpoint: Endpoint,
    pub debug_console: bool,
    /// Whether container processes may open AF_VSOCK sockets (the line to
    /// the host). Off unless `hull.container_vsock=allow`.
    pub container_vsock: bool,
    /// CopyFile writes only below this directory.
    pub copy_dir: PathBuf,
    /// Where CreateSandbox writes the sandbox's resolv.conf.
    pub etc_dir: PathBuf,
    /// Where CreateSandbox writes the pod's files when the agent holds the
    /// pod's namespaces.
    pub pod_dir: PathBuf,
}

/// The configuration file's keys; every one is optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    log_level: Option<String>,
    agent_port: Option<u32>,
    stdio_port: Option<u32>,
    unix_dir: Option<PathBuf>,
    copy_dir: Option<PathBuf>,
    etc_dir: Option<PathBuf>,
    debug_console: Option<bool>,
}

/// The flag of an agent that is a service of the guest's init.
pub const GUEST_SERVICE_FLAG: &str = "--guest-service";

/// CopyFile's directory in a VM.
pub const GUEST_COPY_DIR: &str = "/run/hull/shared";

fn parse_level(v: &str) -> Result<slog::Level, ConfigError> {
    v.parse::<slog::Level>().map_err(|_| ConfigError::BadValue {
        key: "log level",
        value: v.to_string(),
    })
}

impl AgentConfig {
    pub fn load(args: &[String]) -> Result<Self, ConfigError> {
        let is_pid1 = std::process::id() == 1;
        let in_guest = is_pid1 || args.iter().any(|a| a == GUEST_SERVICE_FLAG);
        let mut cfg = AgentConfig {
            is_pid1,
            in_guest,
            log_level: slog::Level::Info,
            endpoint: Endpoint::Vsock {
                agent_port: protocols::AGENT_PORT,
                stdio_port: protocols::STDIO_PORT,
            },
            debug_console: false,
            container_vsock: false,
            copy_dir: PathBuf::from(GUEST_COPY_DIR),
            etc_dir: PathBuf::from("/etc"),
            pod_dir: PathBuf::from(protocols::POD_FILES_DIR),
        };
        if let Some(path) = config_file_arg(args)? {
            cfg.apply_file(path)?;
        }
        if in_guest {
            let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(ConfigError::Cmdline)?;
            cfg.apply_cmdline(&cmdline)?;
        }
        cfg.apply_flags(args)?;
        Ok(cfg)
    }

    fn apply_file(&mut self, path: &str) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::File {
            path: path.to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let file: FileConfig = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if let Some(level) = file.log_level {
            self.log_level = parse_level(&level)?;
        }
        if let Some(dir) = file.unix_dir {
            self.set_unix_dir(dir);
        }
        if let Endpoint::Vsock {
            agent_port,
            stdio_port,
        } = &mut self.endpoint
        {
            *agent_port = file.agent_port.unwrap_or(*agent_port);
            *stdio_port = file.stdio_port.unwrap_or(*stdio_port);
        }
        self.copy_dir = file.copy_dir.unwrap_or(self.copy_dir.clone());
        self.etc_dir = file.etc_dir.unwrap_or(self.etc_dir.clone());
        self.debug_console = file.debug_console.unwrap_or(self.debug_console);
        Ok(())
    }

    /// Off the VM the agent keeps to its directory: CopyFile's target and
    /// the sandbox's resolv.conf live there, not in the host's /run and /etc.
    fn set_unix_dir(&mut self, dir: PathBuf) {
        self.copy_dir = dir.join("shared");
        self.etc_dir = dir.join("etc");
        self.pod_dir = dir.join("pod");
        self.endpoint = Endpoint::Unix { dir };
    }

    /// Applies `hull.log=`, `hull.port=`, `hull.debug_console=`,
    /// `hull.container_vsock=` options; every other word belongs to the
    /// kernel.
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), ConfigError> {
        for word in cmdline.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "hull.log" => self.log_level = parse_level(value)?,
                "hull.port" => {
                    let port = value.parse().map_err(|_| ConfigError::BadValue {
                        key: "hull.port",
                        value: value.into(),
                    })?;
                    if let Endpoint::Vsock { agent_port, .. } = &mut self.endpoint {
                        *agent_port = port;
                    }
                }
                "hull.container_vsock" => {
                    self.container_vsock = match value {
                        "allow" => true,
                        "deny" => false,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key: "hull.container_vsock",
                                value: value.into(),
                            })
                        }
                    }
                }
                "hull.debug_console" => {
                    self.debug_console = match value {
                        "on" | "1" | "true" => true,
                        "off" | "0" | "false" => false,
                        _ => {
                            return Err(ConfigError::BadValue {
                                key: "hull.debug_console",
                                value: value.into(),
                            })
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn apply_flags(&mut self, args: &[String]) -> Result<(), ConfigError> {
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "--unix-dir" => {
                    let dir = it.next().ok_or(ConfigError::MissingValue("--unix-dir"))?;
                    self.set_unix_dir(PathBuf::from(dir));
                }
                "--copy-dir" => {
                    let dir = it.next().ok_or(ConfigError::MissingValue("--copy-dir"))?;
                    self.copy_dir = PathBuf::from(dir);
                }
                // Read first, by `load`.
                "--config" => {
                    it.next();
                }
                GUEST_SERVICE_FLAG => {}
                "--log-level" => {
                    self.log_level =
                        parse_level(it.next().ok_or(ConfigError::MissingValue("--log-level"))?)?
                }
                other => return Err(ConfigError::UnknownFlag(other.to_string())),
            }
        }
        Ok(())
    }
}

/// The value of `--config`, if given.
fn config_file_arg(args: &[String]) -> Result<Option<&str>, ConfigError> {
    match args.iter().position(|a| a == "--config") {
        None => Ok(None),
        Some(i) => args
            .get(i + 1)
            .map(|s| Some(s.as_str()))
            .ok_or(ConfigError::MissingValue("--config")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AgentConfig {
        AgentConfig {
            is_pid1: true,
            in_guest: true,
            log_level: slog::Level::Info,
            endpoint: Endpoint::Vsock {
                agent_port: 1024,
                stdio_port: 1025,
            },
            debug_console: false,
            container_vsock: false,
            copy_dir: PathBuf::from(GUEST_COPY_DIR),
            etc_dir: PathBuf::from("/etc"),
            pod_dir: PathBuf::from(protocols::POD_FILES_DIR),
        }
    }

    #[test]
    fn config_file_sets_keys_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(
            &path,
            "log_level = \"debug\"\nagent_port = 3000\ndebug_console = true\n",
        )
        .expect("write");
        let mut c = base();
        c.apply_file(path.to_str().expect("utf-8")).expect("apply");
        assert_eq!(c.log_level, slog::Level::Debug);
        assert!(c.debug_console);
        assert!(matches!(
            c.endpoint,
            Endpoint::Vsock {
                agent_port: 3000,
                stdio_port: 1025
            }
        ));
        std::fs::write(&path, "agent_prot = 3000\n").expect("write");
        let err = base()
            .apply_file(path.to_str().expect("utf-8"))
            .expect_err("typo");
        assert!(err.to_string().contains("agent_prot"), "{err}");
    }

    #[test]
    fn unix_dir_keeps_copy_and_etc_inside_it() {
        let mut c = base();
        c.apply_flags(&["--unix-dir".to_string(), "/tmp/a".to_string()])
            .expect("flags");
        assert_eq!(c.copy_dir, PathBuf::from("/tmp/a/shared"));
        assert_eq!(c.etc_dir, PathBuf::from("/tmp/a/etc"));
    }

    #[test]
    fn cmdline_options_apply_and_kernel_words_are_ignored() {
        let mut c = base();
        c.apply_cmdline("console=ttyS0 quiet hull.log=debug hull.port=2000 hull.debug_console=on")
            .unwrap();
        assert_eq!(c.log_level, slog::Level::Debug);
        assert!(c.debug_console);
        assert!(matches!(
            c.endpoint,
            Endpoint::Vsock {
                agent_port: 2000,
                ..
            }
        ));
    }

    #[test]
    fn bad_cmdline_value_is_named() {
        let err = base().apply_cmdline("hull.port=abc").unwrap_err();
        assert!(err.to_string().contains("hull.port"));
    }

    #[test]
    fn unknown_flag_is_rejected() {
        assert!(base().apply_flags(&["--bogus".to_string()]).is_err());
    }
}
