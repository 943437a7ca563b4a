//! The host inventory: concrete `Host` aliases of the ssh config plus
//! `hosts.toml`, and selection of hosts for fan-out. Reads files only.
//!
//! `hosts.toml`:
//!
//! ```toml
//! [[host]]
//! name = "web-1"            # required; also an ssh config alias, or new
//! address = "10.0.0.11"     # HostName
//! user = "deploy"
//! port = 2222
//! key = "~/.ssh/id_web"     # the only identity file tried
//! tags = ["web", "prod"]
//! ```
//!
//! Unknown fields are refused. For a name also in the ssh config, the fields
//! set here win and the ssh config supplies the rest (ProxyJump, known-hosts
//! files, …). `local` and `localhost` are reserved for this machine.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;
use super::expand::LocalUser;
use super::lexer::{self, Item};
use super::names::{check_address, check_host_name, check_user_name, is_pattern, match_pattern};

/// Names that mean the machine mcpsh runs on, never an SSH host.
const RESERVED: [&str; 2] = ["local", "localhost"];
/// Most close matches suggested for an unknown name.
const MAX_SUGGESTIONS: usize = 3;

/// What `hosts.toml` sets for a host; `None` leaves it to the ssh config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOverride {
    /// HostName (IPv6 without brackets).
    pub address: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// Replaces the identity files (`~` and tokens allowed).
    pub key: Option<String>,
}

/// One known host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryHost {
    pub name: String,
    pub tags: Vec<String>,
    pub in_ssh_config: bool,
    pub in_hosts_toml: bool,
    pub overrides: HostOverride,
}

/// The hosts mcpsh knows, in order: ssh config aliases as they appear, then
/// names only `hosts.toml` has.
#[derive(Debug, Clone)]
pub struct Inventory {
    ssh_config: PathBuf,
    local: LocalUser,
    hosts: Vec<InventoryHost>,
}

/// Why a selection failed. Messages are for a model to act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no host was selected: give host names, globs like web-*, or tag:NAME")]
    Empty,
    #[error("host selector {selector:?} refused: {reason}")]
    Bad { selector: String, reason: String },
    #[error(
        "unknown host {name:?}{}; the hosts tool (action list) shows every host",
        did_you_mean(suggestions)
    )]
    UnknownHost {
        name: String,
        suggestions: Vec<String>,
    },
    #[error("no host has tag {tag:?}; tags in use: {}", list_or_none(known))]
    UnknownTag { tag: String, known: Vec<String> },
    #[error("pattern {pattern:?} matches no host; hosts: {}", list_or_none(hosts))]
    NoMatch { pattern: String, hosts: Vec<String> },
}

fn did_you_mean(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", s.join(", "))
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    #[serde(default)]
    host: Vec<toml::Spanned<HostEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    name: String,
    address: Option<String>,
    user: Option<String>,
    port: Option<u16>,
    key: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
}

impl Inventory {
    /// Reads the ssh config (a missing file is empty) and `hosts_toml` (a
    /// missing file is empty) for the current user.
    pub fn load(ssh_config: &Path, hosts_toml: Option<&Path>) -> Result<Inventory, ConfigError> {
        Self::load_as(ssh_config, hosts_toml, LocalUser::current()?)
    }

    /// [`Inventory::load`] for a given local user (its home anchors
    /// relative `Include`s).
    pub fn load_as(
        ssh_config: &Path,
        hosts_toml: Option<&Path>,
        local: LocalUser,
    ) -> Result<Inventory, ConfigError> {
        let mut inv = Inventory {
            ssh_config: ssh_config.to_path_buf(),
            local,
            hosts: Vec::new(),
        };
        for item in lexer::read(ssh_config, &inv.local.home)? {
            let Item::Directive(d) = item else { continue };
            if d.keyword != "host" {
                continue;
            }
            for name in d.args.iter().filter(|a| !is_pattern(a)) {
                let refused = check_host_name(name).err().or_else(|| {
                    RESERVED
                        .contains(&name.as_str())
                        .then(|| "reserved for this machine".into())
                });
                if let Some(reason) = refused {
                    tracing::warn!(file = %d.file.display(), line = d.line, "ssh config host {name:?} skipped: {reason}");
                } else if inv.get(name).is_none() {
                    inv.hosts.push(InventoryHost {
                        name: name.clone(),
                        tags: Vec::new(),
                        in_ssh_config: true,
                        in_hosts_toml: false,
                        overrides: HostOverride::default(),
                    });
                }
            }
        }
        if let Some(path) = hosts_toml {
            for entry in read_hosts_toml(path)? {
                match inv.hosts.iter_mut().find(|h| h.name == entry.name) {
                    Some(h) => {
                        h.in_hosts_toml = true;
                        h.tags = entry.tags;
                        h.overrides = entry.overrides;
                    }
                    None => inv.hosts.push(entry),
                }
            }
        }
        Ok(inv)
    }

    pub fn hosts(&self) -> &[InventoryHost] {
        &self.hosts
    }

    pub fn get(&self, name: &str) -> Option<&InventoryHost> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    pub fn local_user(&self) -> &LocalUser {
        &self.local
    }

    /// The hosts `selectors` name, de-duplicated, in inventory order. A
    /// selector is an exact name, a glob (`*`, `?`: `web-*`) or `tag:NAME`.
    /// An unknown name, an unused tag or a glob matching nothing is an error.
    pub fn select(&self, selectors: &[String]) -> Result<Vec<String>, SelectError> {
        let mut chosen = vec![false; self.hosts.len()];
        for selector in selectors {
            let s = selector.trim();
            let bad = |reason: String| SelectError::Bad {
                selector: selector.clone(),
                reason,
            };
            let picked: Vec<usize> = if let Some(tag) = s.strip_prefix("tag:") {
                check_tag(tag).map_err(bad)?;
                let found = self.positions(|h| h.tags.iter().any(|t| t == tag));
                if found.is_empty() {
                    return Err(SelectError::UnknownTag {
                        tag: tag.to_owned(),
                        known: self.tags(),
                    });
                }
                found
            } else if s.contains(['*', '?']) {
                check_host_name(&s.replace(['*', '?'], "x")).map_err(bad)?;
                let found = self.positions(|h| match_pattern(&h.name, s));
                if found.is_empty() {
                    return Err(SelectError::NoMatch {
                        pattern: s.to_owned(),
                        hosts: self.hosts.iter().map(|h| h.name.clone()).collect(),
                    });
                }
                found
            } else if s.is_empty() {
                return Err(SelectError::Empty);
            } else {
                check_host_name(s).map_err(bad)?;
                match self.hosts.iter().position(|h| h.name == s) {
                    Some(i) => vec![i],
                    None => {
                        return Err(SelectError::UnknownHost {
                            name: s.to_owned(),
                            suggestions: self.close_to(s),
                        });
                    }
                }
            };
            for i in picked {
                chosen[i] = true;
            }
        }
        let names: Vec<String> = self
            .hosts
            .iter()
            .zip(chosen)
            .filter(|(_, c)| *c)
            .map(|(h, _)| h.name.clone())
            .collect();
        if names.is_empty() {
            return Err(SelectError::Empty);
        }
        Ok(names)
    }

    fn positions(&self, pick: impl Fn(&InventoryHost) -> bool) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| pick(&self.hosts[i]))
            .collect()
    }

    /// Every tag in use, sorted.
    fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self.hosts.iter().flat_map(|h| h.tags.clone()).collect();
        tags.sort();
        tags.dedup();
        tags
    }

    /// Names within a small edit distance of `name` (or containing it), closest first.
    fn close_to(&self, name: &str) -> Vec<String> {
        let want = name.to_ascii_lowercase();
        let mut scored: Vec<(usize, &str)> = self
            .hosts
            .iter()
            .filter_map(|h| {
                let have = h.name.to_ascii_lowercase();
                let d = edit_distance(&want, &have);
                let close =
                    d <= (want.len() / 3).max(1) || have.contains(&want) || want.contains(&have);
                close.then_some((d, h.name.as_str()))
            })
            .collect();
        scored.sort();
        scored
            .into_iter()
            .take(MAX_SUGGESTIONS)
            .map(|(_, n)| n.to_owned())
            .collect()
    }
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tag {tag:?} is not valid: 1-64 letters, digits, '.', '-' or '_'"
        ))
    }
}

/// Reads and checks `hosts.toml`; a missing file has no hosts.
fn read_hosts_toml(path: &Path) -> Result<Vec<InventoryHost>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let err = |message: String| ConfigError::HostsToml {
        path: path.to_path_buf(),
        message,
    };
    let file: HostsFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    let mut hosts: Vec<InventoryHost> = Vec::new();
    for spanned in file.host {
        let line = text[..spanned.span().start].matches('\n').count() + 1;
        let e = spanned.into_inner();
        let at = |reason: String| err(format!("line {line}: host {:?}: {reason}", e.name));
        check_host_name(&e.name).map_err(at)?;
        if RESERVED.contains(&e.name.as_str()) {
            return Err(at(
                "this name is reserved for the machine mcpsh runs on".into()
            ));
        }
        if hosts.iter().any(|h| h.name == e.name) {
            return Err(at("listed twice".into()));
        }
        let address = match &e.address {
            Some(a) => Some(
                check_address(a)
                    .map_err(|r| at(format!("address: {r}")))?
                    .to_owned(),
            ),
            None => None,
        };
        if let Some(u) = &e.user {
            check_user_name(u).map_err(|r| at(format!("user: {r}")))?;
        }
        if e.port == Some(0) {
            return Err(at("port: 0 is not a port number (1-65535)".into()));
        }
        if let Some(k) = &e.key
            && (k.is_empty() || k.contains(|c: char| c.is_control()))
        {
            return Err(at("key: give the path of a private key file".into()));
        }
        for t in &e.tags {
            check_tag(t).map_err(at)?;
        }
        hosts.push(InventoryHost {
            name: e.name,
            tags: e.tags,
            in_ssh_config: false,
            in_hosts_toml: true,
            overrides: HostOverride {
                address,
                user: e.user,
                port: e.port,
                key: e.key,
            },
        });
    }
    Ok(hosts)
}
