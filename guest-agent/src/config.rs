//! Agent configuration: the kernel command line (`hull.*` options) when the
//! agent is PID 1, command-line flags when it runs as an ordinary process.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown option {0:?} (expected --unix-dir DIR, --log-level LEVEL)")]
    UnknownFlag(String),
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
    pub log_level: slog::Level,
    pub endpoint: Endpoint,
    pub debug_console: bool,
}

fn parse_level(v: &str) -> Result<slog::Level, ConfigError> {
    v.parse::<slog::Level>().map_err(|_| ConfigError::BadValue {
        key: "log level",
        value: v.to_string(),
    })
}

impl AgentConfig {
    pub fn load(args: &[String]) -> Result<Self, ConfigError> {
        let is_pid1 = std::process::id() == 1;
        let mut cfg = AgentConfig {
            is_pid1,
            log_level: slog::Level::Info,
            endpoint: Endpoint::Vsock {
                agent_port: protocols::AGENT_PORT,
                stdio_port: protocols::STDIO_PORT,
            },
            debug_console: false,
        };
        if is_pid1 {
            let cmdline = std::fs::read_to_string("/proc/cmdline").map_err(ConfigError::Cmdline)?;
            cfg.apply_cmdline(&cmdline)?;
        }
        cfg.apply_flags(args)?;
        Ok(cfg)
    }

    /// Applies `hull.log=`, `hull.port=`, `hull.debug_console=` options;
    /// every other word belongs to the kernel.
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
                    self.endpoint = Endpoint::Unix {
                        dir: PathBuf::from(dir),
                    };
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> AgentConfig {
        AgentConfig {
            is_pid1: true,
            log_level: slog::Level::Info,
            endpoint: Endpoint::Vsock {
                agent_port: 1024,
                stdio_port: 1025,
            },
            debug_console: false,
        }
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
