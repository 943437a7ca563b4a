//! The host seam: which machine a tool call acts on. Every feature takes a
//! [`Host`] so that it works on `local` today and on SSH hosts when the SSH
//! backend lands, without the feature knowing the difference.
//!
//! This module validates host names coming from agents; it never spawns
//! anything itself for `local` (the job engine's supervisor does).

/// A resolved target machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// The machine mcpsh runs on.
    Local,
}

/// Why a host name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HostError {
    #[error(
        "host name {0:?} is not valid: use letters, digits, '.', '-', '_' and not a leading '-'"
    )]
    BadName(String),
    #[error(
        "unknown host {0:?}: only \"local\" is available (SSH hosts are not configured in this build)"
    )]
    Unknown(String),
}

impl Host {
    /// Resolve a host parameter (`None`, `""` and `"local"` mean this machine).
    pub fn resolve(name: Option<&str>) -> Result<Host, HostError> {
        let name = name.map(str::trim).unwrap_or("");
        if name.is_empty() || name == "local" || name == "localhost" {
            return Ok(Host::Local);
        }
        let ok = !name.starts_with('-')
            && name.len() <= 253
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !ok {
            return Err(HostError::BadName(name.to_owned()));
        }
        Err(HostError::Unknown(name.to_owned()))
    }

    pub fn name(&self) -> &'static str {
        match self {
            Host::Local => "local",
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
                Err(HostError::BadName("-oProxyCommand=sh".into())),
            ),
            (
                Some("a;rm -rf /"),
                Err(HostError::BadName("a;rm -rf /".into())),
            ),
            (Some("web-3"), Err(HostError::Unknown("web-3".into()))),
        ] {
            assert_eq!(Host::resolve(input), expected, "{input:?}");
        }
    }
}
