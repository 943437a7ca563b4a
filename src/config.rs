//! Effective configuration: defaults < `config.toml` < `MCPSH_*` environment < flags.
//!
//! A leaf module: it reads files and the environment and knows nothing of the
//! rest of mcpsh. `mcpsh config show` prints [`Config::to_toml`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors while loading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("environment variable {name}={value:?}: {why}")]
    Env {
        name: &'static str,
        value: String,
        why: String,
    },
    #[error("cannot find a state directory: set MCPSH_STATE_DIR or HOME")]
    NoStateDir,
}

/// Job engine limits. Sizes are bytes, times are as named.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Most jobs that may run at once; a further `bash` call is refused with a clear error.
    pub max_concurrent: usize,
    /// Per-job spool cap: past it the head and the most recent tail are kept and
    /// the middle is dropped (the exact dropped range is reported).
    pub output_cap: u64,
    /// Spool bytes kept across all finished jobs; oldest finished jobs are cleaned first.
    pub spool_quota: u64,
    /// Size of one spool segment file (the unit the cap drops).
    pub segment_size: u64,
    /// Seconds `bash` waits inline before backgrounding when the call gives no `wait`.
    pub default_wait: f64,
    /// Largest `wait` a call may ask for.
    pub max_wait: f64,
    /// Default inline output budget in bytes (`max_output`).
    pub default_max_output: usize,
    /// Largest `max_output` a call may ask for.
    pub max_output_limit: usize,
    /// Milliseconds between SIGTERM and SIGKILL when a job is killed.
    pub kill_grace_ms: u64,
    /// Milliseconds between SIGTERM and SIGKILL when a job hits its `timeout`.
    pub timeout_grace_ms: u64,
    /// Hard runtime limit in seconds applied to every job (0 = none).
    pub max_runtime: u64,
}

/// The file tools.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FilesConfig {
    /// When set, the file tools reach only paths under these directories
    /// (symlinks and `..` included); empty means anywhere the server user may.
    pub roots: Vec<PathBuf>,
}

/// The audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Days audit rows are kept; older rows are removed at start and daily (0 = forever).
    pub keep_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { keep_days: 90 }
    }
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            max_concurrent: 64,
            output_cap: 256 << 20,
            spool_quota: 4 << 30,
            segment_size: 8 << 20,
            default_wait: 10.0,
            max_wait: 50.0,
            default_max_output: 16 << 10,
            max_output_limit: 256 << 10,
            kill_grace_ms: 2000,
            timeout_grace_ms: 500,
            max_runtime: 0,
        }
    }
}

/// SSH hosts and connections.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SshConfig {
    /// The ssh config whose `Host` aliases are the inventory. Empty means
    /// `~/.ssh/config`.
    pub config: PathBuf,
    /// Extra hosts (`[[host]] name, address, user, port, key, tags`). Empty
    /// means `hosts.toml` next to the config file (`~/.config/mcpsh/hosts.toml`).
    pub hosts_toml: PathBuf,
    /// Most channels (commands, SFTP sessions) open at once on one
    /// connection; stock sshd allows 10 (`MaxSessions`). Further ones queue.
    pub max_channels: usize,
    /// Seconds an unused connection stays open.
    pub idle_secs: u64,
    /// Seconds to wait for a connection (TCP, key exchange and login).
    pub connect_timeout_secs: u64,
    /// Hosts a fan-out `bash` call runs on at once.
    pub fanout_concurrency: usize,
}

impl Default for SshConfig {
    fn default() -> Self {
        SshConfig {
            config: PathBuf::new(),
            hosts_toml: PathBuf::new(),
            max_channels: 8,
            idle_secs: 600,
            connect_timeout_secs: 10,
            fanout_concurrency: 32,
        }
    }
}

/// Terminal sessions (`session` tool, `mcpsh terms`, `mcpsh attach`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Most sessions open at once (all hosts).
    pub max_open: usize,
    /// Seconds a session may sit with no input, output or request before it
    /// is closed (0 = never).
    pub idle_secs: u64,
    /// Per-session transcript cap: past it the head and the most recent tail
    /// are kept and the middle is dropped.
    pub transcript_cap: u64,
    /// Terminal size of a new session when `open` gives none.
    pub cols: u16,
    pub rows: u16,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            max_open: 16,
            idle_secs: 4 * 3600,
            transcript_cap: 64 << 20,
            cols: 120,
            rows: 40,
        }
    }
}

/// The whole effective configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address `mcpsh serve` listens on.
    pub listen: SocketAddr,
    /// Where state lives (database, spools). Empty means the XDG default.
    pub state_dir: PathBuf,
    pub jobs: JobsConfig,
    pub files: FilesConfig,
    pub audit: AuditConfig,
    pub ssh: SshConfig,
    pub sessions: SessionsConfig,
    /// The file this configuration was read from, if any.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 1337)),
            state_dir: PathBuf::new(),
            jobs: JobsConfig::default(),
            files: FilesConfig::default(),
            audit: AuditConfig::default(),
            ssh: SshConfig::default(),
            sessions: SessionsConfig::default(),
            source: None,
        }
    }
}

/// Something that answers environment lookups; the real one is `std::env::var`.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Load from the default locations and the process environment.
    pub fn load() -> Result<Config, ConfigError> {
        Config::load_with(&|k| std::env::var(k).ok())
    }

    /// Load using `env` for every variable lookup (tests pass a map).
    pub fn load_with(env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        let mut cfg = match config_file(env) {
            Some(path) if path.exists() => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                let mut cfg: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    source: Box::new(e),
                })?;
                cfg.source = Some(path);
                cfg
            }
            _ => Config::default(),
        };
        cfg.apply_env(env)?;
        if cfg.state_dir.as_os_str().is_empty() {
            cfg.state_dir = default_state_dir(env).ok_or(ConfigError::NoStateDir)?;
        }
        let home = env("HOME").map(PathBuf::from).unwrap_or_else(|| "/".into());
        if cfg.ssh.config.as_os_str().is_empty() {
            cfg.ssh.config = home.join(".ssh/config");
        }
        if cfg.ssh.hosts_toml.as_os_str().is_empty() {
            cfg.ssh.hosts_toml = match &cfg.source {
                Some(src) if src.parent().is_some() => src.with_file_name("hosts.toml"),
                _ => config_dir(env)
                    .unwrap_or_else(|| home.join(".config/mcpsh"))
                    .join("hosts.toml"),
            };
        }
        Ok(cfg)
    }

    fn apply_env(&mut self, env: EnvLookup<'_>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(
            env: EnvLookup<'_>,
            name: &'static str,
        ) -> Result<Option<T>, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            match env(name) {
                None => Ok(None),
                Some(value) => {
                    value
                        .trim()
                        .parse()
                        .map(Some)
                        .map_err(|e: T::Err| ConfigError::Env {
                            name,
                            why: e.to_string(),
                            value,
                        })
                }
            }
        }
        if let Some(v) = parse(env, "MCPSH_LISTEN")? {
            self.listen = v;
        }
        if let Some(v) = env("MCPSH_STATE_DIR").filter(|v| !v.is_empty()) {
            self.state_dir = PathBuf::from(v);
        }
        if let Some(v) = parse(env, "MCPSH_MAX_JOBS")? {
            self.jobs.max_concurrent = v;
        }
        if let Some(v) = parse(env, "MCPSH_JOB_OUTPUT_CAP")? {
            self.jobs.output_cap = v;
        }
        if let Some(v) = env("MCPSH_FILE_ROOTS").filter(|v| !v.is_empty()) {
            self.files.roots = std::env::split_paths(&v).collect();
        }
        if let Some(v) = env("MCPSH_SSH_CONFIG").filter(|v| !v.is_empty()) {
            self.ssh.config = PathBuf::from(v);
        }
        if let Some(v) = env("MCPSH_HOSTS_TOML").filter(|v| !v.is_empty()) {
            self.ssh.hosts_toml = PathBuf::from(v);
        }
        if let Some(v) = parse(env, "MCPSH_SESSION_IDLE_SECS")? {
            self.sessions.idle_secs = v;
        }
        if let Some(v) = parse(env, "MCPSH_SPOOL_QUOTA")? {
            self.jobs.spool_quota = v;
        }
        Ok(())
    }

    /// The effective configuration as TOML (no secrets live here yet).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if let Some(src) = &self.source {
            out.push_str(&format!("# read from {}\n", src.display()));
        } else {
            out.push_str("# no config file found; built-in defaults with environment overrides\n");
        }
        out.push_str(&toml::to_string(self).unwrap_or_else(|e| format!("# cannot render: {e}\n")));
        out
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("mcpsh.db")
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.state_dir.join("jobs")
    }

    pub fn terms_dir(&self) -> PathBuf {
        self.state_dir.join("terms")
    }
}

fn config_file(env: EnvLookup<'_>) -> Option<PathBuf> {
    if let Some(p) = env("MCPSH_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = config_dir(env)
        .map(|d| d.join("config.toml"))
        .filter(|p| p.exists())
    {
        return Some(p);
    }
    Some(PathBuf::from("/etc/mcpsh/config.toml"))
}

/// `$XDG_CONFIG_HOME/mcpsh` or `~/.config/mcpsh`.
fn config_dir(env: EnvLookup<'_>) -> Option<PathBuf> {
    env("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".config")))
        .map(|d| d.join("mcpsh"))
}

fn default_state_dir(env: EnvLookup<'_>) -> Option<PathBuf> {
    env("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| Path::new(&h).join(".local/state")))
        .map(|d| d.join("mcpsh"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(&|k| map.get(k).cloned())
    }

    #[test]
    fn layers_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9\"\n[jobs]\nmax_concurrent = 3\noutput_cap = 100\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let cfg = load(&[
            ("MCPSH_CONFIG", f),
            ("MCPSH_JOB_OUTPUT_CAP", "200"),
            ("HOME", "/h"),
        ])
        .unwrap();
        assert_eq!(cfg.listen.port(), 9);
        assert_eq!(cfg.jobs.max_concurrent, 3);
        assert_eq!(cfg.jobs.output_cap, 200, "env beats file");
        assert_eq!(cfg.state_dir, PathBuf::from("/h/.local/state/mcpsh"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err = load(&[("MCPSH_MAX_JOBS", "many"), ("HOME", "/h")]).unwrap_err();
        assert!(err.to_string().contains("MCPSH_MAX_JOBS"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "bogus = 1\n").unwrap();
        let err = load(&[("MCPSH_CONFIG", file.to_str().unwrap()), ("HOME", "/h")]).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }
}
