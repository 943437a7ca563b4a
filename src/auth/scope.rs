//! Scopes and host patterns: what a user or token may do, and where.

use std::fmt;

/// One permission. `exec` covers bash, job and session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Exec,
    FilesRead,
    FilesWrite,
    Transfer,
    Forward,
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 6] = [
        Scope::Exec,
        Scope::FilesRead,
        Scope::FilesWrite,
        Scope::Transfer,
        Scope::Forward,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Exec => "exec",
            Scope::FilesRead => "files:read",
            Scope::FilesWrite => "files:write",
            Scope::Transfer => "transfer",
            Scope::Forward => "forward",
            Scope::Admin => "admin",
        }
    }

    /// What a person approving a login reads.
    pub fn describe(self) -> &'static str {
        match self {
            Scope::Exec => "run commands and shells",
            Scope::FilesRead => "read files",
            Scope::FilesWrite => "write, move and delete files",
            Scope::Transfer => "copy files between hosts",
            Scope::Forward => "forward ports",
            Scope::Admin => "administer mcpsh",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes(u8);

impl Scopes {
    pub fn all() -> Scopes {
        Scope::ALL.iter().fold(Scopes(0), |s, x| s.with(*x))
    }

    pub fn empty() -> Scopes {
        Scopes(0)
    }

    pub fn with(self, s: Scope) -> Scopes {
        Scopes(self.0 | s.bit())
    }

    pub fn contains(self, s: Scope) -> bool {
        self.0 & s.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn intersect(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    pub fn is_subset(self, of: Scopes) -> bool {
        self.0 & !of.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Parse a list separated by spaces or commas. `all` means every scope.
    pub fn parse(text: &str) -> Result<Scopes, String> {
        let mut set = Scopes(0);
        for word in text.split([' ', ',']).filter(|w| !w.is_empty()) {
            if word == "all" {
                set = Scopes::all();
                continue;
            }
            match Scope::ALL.iter().find(|s| s.as_str() == word) {
                Some(s) => set = set.with(*s),
                None => {
                    return Err(format!(
                        "unknown scope {word:?}; the scopes are {}",
                        Scopes::all()
                    ));
                }
            }
        }
        Ok(set)
    }
}

impl fmt::Display for Scopes {
    /// Space-separated, as OAuth writes scopes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<&str> = self.iter().map(Scope::as_str).collect();
        f.write_str(&words.join(" "))
    }
}

/// Host patterns: exact names or globs with `*` and `?` (e.g. `web-*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hosts(Vec<String>);

impl Hosts {
    pub fn any() -> Hosts {
        Hosts(vec!["*".into()])
    }

    /// Parse patterns separated by spaces or commas.
    pub fn parse(text: &str) -> Result<Hosts, String> {
        let mut out = Vec::new();
        for p in text.split([' ', ',']).filter(|w| !w.is_empty()) {
            if p.starts_with('-')
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.*?:@[]".contains(c))
            {
                return Err(format!(
                    "bad host pattern {p:?}: use host names with * and ? as wildcards"
                ));
            }
            out.push(p.to_owned());
        }
        if out.is_empty() {
            return Err("no host pattern given; use '*' for every host".into());
        }
        Ok(Hosts(out))
    }

    pub fn allows(&self, host: &str) -> bool {
        self.0
            .iter()
            .any(|p| crate::wildcard::matches(host.as_bytes(), p.as_bytes()))
    }

    /// Patterns allowed by both sets: each of `self` that `other` allows
    /// completely is kept; `*` in either side defers to the other.
    pub fn narrow(&self, other: &Hosts) -> Hosts {
        if other.0.iter().any(|p| p == "*") {
            return self.clone();
        }
        if self.0.iter().any(|p| p == "*") {
            return other.clone();
        }
        let kept: Vec<String> = self
            .0
            .iter()
            .filter(|p| other.0.contains(p) || (!p.contains(['*', '?']) && other.allows(p)))
            .cloned()
            .collect();
        Hosts(kept)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when every host is allowed.
    pub fn is_any(&self) -> bool {
        self.0.iter().any(|p| p == "*")
    }
}

impl fmt::Display for Hosts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_parse_and_print() {
        let s = Scopes::parse("exec,files:read").unwrap();
        assert!(s.contains(Scope::Exec) && s.contains(Scope::FilesRead));
        assert!(!s.contains(Scope::FilesWrite));
        assert_eq!(s.to_string(), "exec files:read");
        assert_eq!(Scopes::parse("all").unwrap(), Scopes::all());
        assert!(Scopes::parse("exec root").unwrap_err().contains("root"));
        assert!(
            Scopes::parse("files:read")
                .unwrap()
                .is_subset(Scopes::all())
        );
        assert!(!Scopes::all().is_subset(s));
    }

    #[test]
    fn host_globs() {
        let h = Hosts::parse("web-*, db1").unwrap();
        for (host, ok) in [
            ("web-1", true),
            ("web-", true),
            ("db1", true),
            ("db12", false),
            ("local", false),
            ("xweb-1", false),
        ] {
            assert_eq!(h.allows(host), ok, "{host}");
        }
        assert!(Hosts::any().allows("local"));
        assert!(Hosts::parse("-oProxyCommand=x").is_err());
        assert!(Hosts::parse("a;b").is_err());
        assert!(Hosts::parse("").is_err());
        assert!(
            crate::wildcard::matches(b"aXXbYYc", b"a*b*c")
                && !crate::wildcard::matches(b"aXXbYY", b"a*b*c")
        );
    }

    #[test]
    fn narrowing_hosts() {
        let user = Hosts::parse("web-* db1").unwrap();
        assert_eq!(Hosts::any().narrow(&user), user);
        assert_eq!(user.narrow(&Hosts::any()), user);
        let asked = Hosts::parse("web-3 db2 web-*").unwrap();
        assert_eq!(asked.narrow(&user).to_string(), "web-3 web-*");
    }
}
