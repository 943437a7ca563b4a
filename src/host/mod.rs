//! The host seam: which machine a tool call acts on. Every feature takes a
//! [`Host`] so that it works on `local` and on SSH hosts alike.
//!
//! This module validates host names coming from agents against the SSH
//! inventory; it never spawns anything itself (the job engine's supervisor
//! does for `local`, the SSH pool for the rest).

use crate::ssh::Pool;

/// A resolved target machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// The machine mcpsh runs on.
    Local,
    /// A host of the SSH inventory, by its name there.
    Ssh(String),
}

/// Why a host name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error("host name {0:?} is not valid: {1}")]
    BadName(String, String),
    #[error(
        "unknown host {name:?}; use \"local\" or one of the SSH hosts: {} (the hosts tool, action list, shows them){}",
        if known.is_empty() { "none are configured".to_owned() } else { known.join(", ") },
        problem.as_ref().map(|p| format!(". The SSH host files cannot be used: {p}")).unwrap_or_default()
    )]
    Unknown {
        name: String,
        known: Vec<String>,
        problem: Option<String>,
    },
}

impl Host {
    /// Resolve a host parameter (`None`, `""`, `"local"` and `"localhost"`
    /// mean this machine; anything else must be a host of `ssh`'s inventory).
    pub fn resolve(name: Option<&str>, ssh: Option<&Pool>) -> Result<Host, HostError> {
        let name = name.map(str::trim).unwrap_or("");
        if name.is_empty() || name == "local" || name == "localhost" {
            return Ok(Host::Local);
        }
        crate::ssh::config::check_host_name(name)
            .map_err(|why| HostError::BadName(name.to_owned(), why))?;
        match ssh {
            Some(pool) if pool.knows(name) => Ok(Host::Ssh(name.to_owned())),
            _ => Err(HostError::Unknown {
                name: name.to_owned(),
                known: ssh
                    .map(|p| {
                        p.inventory()
                            .hosts()
                            .iter()
                            .map(|h| h.name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                problem: ssh.and_then(Pool::problem),
            }),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Host::Local => "local",
            Host::Ssh(name) => name,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_and_refuses() {
        for (input, expected) in [
            (None, Ok(Host::Local)),
            (Some("local"), Ok(Host::Local)),
            (Some(" "), Ok(Host::Local)),
            (
                Some("-oProxyCommand=sh"),
                Err(HostError::BadName(
                    "-oProxyCommand=sh".into(),
                    String::new(),
                )),
            ),
            (
                Some("a;rm -rf /"),
                Err(HostError::BadName("a;rm -rf /".into(), String::new())),
            ),
            (
                Some("web-3"),
                Err(HostError::Unknown {
                    name: "web-3".into(),
                    known: vec![],
                    problem: None,
                }),
            ),
        ] {
            let got = Host::resolve(input, None).map_err(|e| match e {
                HostError::BadName(n, _) => HostError::BadName(n, String::new()),
                other => other,
            });
            assert_eq!(got, expected, "{input:?}");
        }
    }
}
