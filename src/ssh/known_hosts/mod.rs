//! Host-key verification with OpenSSH's known_hosts semantics (sshd(8),
//! "SSH_KNOWN_HOSTS FILE FORMAT"; ssh(1)): comma-separated host patterns with
//! `*`, `?` and `!` negation, `[host]:port` for ports other than 22, hashed
//! names (`|1|salt|hmac`), `@revoked`, `@cert-authority`, several files.
//!
//! It decides and explains, stricter than ssh(1) where ssh would ask: an
//! unknown key, a changed key and a key of a type the file does not list for
//! the host are all refused. It never weakens a check, never touches the
//! network, and writes only through [`append_trusted`] (for the human-only
//! `mcpsh hosts trust`). Certificates themselves are the caller's business:
//! [`KnownHosts::cert_authorities`] lists the CA keys to verify them against.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::Digest;

/// Longer lines are reported and skipped (a 16384-bit RSA key needs ~3 KiB).
const MAX_LINE: usize = 64 * 1024;
/// Larger files are refused rather than half read (a half-read file could
/// miss a `@revoked` line).
const MAX_FILE: u64 = 8 * 1024 * 1024;
/// OpenSSH's `match_pattern_list` gives up on a longer sub-pattern: no match.
const MAX_SUBPATTERN: usize = 1022;
/// How many known keys a refusal names before "and N more".
const MESSAGE_KEYS: usize = 3;

/// A known_hosts file that could not be read; a missing file is not an error.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    #[error("cannot read known_hosts file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("known_hosts file {path} is larger than {MAX_FILE} bytes; refusing to read it")]
    TooLarge { path: PathBuf },
}

/// A key on a known_hosts line, with where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyEntry {
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
    pub key_type: String,
    pub blob: Vec<u8>,
}

impl PublicKeyEntry {
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.blob)
    }
}

/// A line that was skipped (or whose host field was unreadable), for the
/// operator's logs: `file:line: reason`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub line: usize,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}",
            display_path(&self.file),
            self.line,
            self.reason
        )
    }
}

/// The key a server presented, as the verdict's message names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    /// The name looked up: the lower-cased host, or `[host]:port`.
    pub name: String,
    pub key_type: String,
    pub fingerprint: String,
}

/// The outcome of [`KnownHosts::check`]. Only `Trusted` lets a connection on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A non-revoked line for this host has exactly this key.
    Trusted {
        presented: Presented,
        file: PathBuf,
        line: usize,
    },
    /// An `@revoked` line (for any host) has this key.
    Revoked {
        presented: Presented,
        file: PathBuf,
        line: usize,
    },
    /// The host has lines, none with this key; `expected` lists them all.
    Changed {
        presented: Presented,
        expected: Vec<PublicKeyEntry>,
    },
    /// No line names the host (`@cert-authority` lines do not count).
    Unknown { presented: Presented },
}

impl Verdict {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Verdict::Trusted { .. })
    }

    pub fn presented(&self) -> &Presented {
        match self {
            Verdict::Trusted { presented, .. }
            | Verdict::Revoked { presented, .. }
            | Verdict::Changed { presented, .. }
            | Verdict::Unknown { presented } => presented,
        }
    }

    /// What to tell the model or operator. `alias` is the name `mcpsh hosts
    /// trust` takes (the inventory name), which may differ from the name
    /// looked up in known_hosts.
    pub fn message(&self, alias: &str) -> String {
        let p = self.presented();
        let who = if alias.eq_ignore_ascii_case(&p.name) {
            alias.to_string()
        } else {
            format!("{alias} ({})", p.name)
        };
        let now = format!("{}, {}", p.fingerprint, p.key_type);
        let trust = format!("`mcpsh hosts trust {alias}`");
        match self {
            Verdict::Trusted { file, line, .. } => format!(
                "the host key of {who} ({now}) matches {}:{line}",
                display_path(file)
            ),
            Verdict::Revoked { file, line, .. } => format!(
                "REFUSED: the host key of {who} ({now}) is revoked: {}:{line} marks it \
                 @revoked, so it must never be accepted; a human must find out why the \
                 server presents it",
                display_path(file)
            ),
            Verdict::Unknown { .. } => format!(
                "REFUSED: the host key of {who} ({now}) is not in known_hosts; a human must \
                 verify it and add it with {trust}"
            ),
            Verdict::Changed { expected, .. }
                if expected.iter().any(|e| e.key_type == p.key_type) =>
            {
                format!(
                    "REFUSED: the host key of {who} changed: the host has a different key of \
                     this type (now {}, expected {}); this may be an attack; if the change is \
                     expected, a human must remove the old line and run {trust}",
                    p.fingerprint,
                    list_keys(expected.iter().filter(|e| e.key_type == p.key_type), false)
                )
            }
            Verdict::Changed { expected, .. } => format!(
                "REFUSED: the host key of {who} ({now}) is not in known_hosts, and the host is \
                 known with other key types only ({}); this may be an attack; a human must \
                 verify the new key and add it with {trust}",
                list_keys(expected.iter(), true)
            ),
        }
    }
}

/// `SHA256:` and the unpadded base64 of the blob's SHA-256, as
/// `ssh-keygen -lf` prints it.
pub fn fingerprint(key_blob: &[u8]) -> String {
    format!(
        "SHA256:{}",
        STANDARD_NO_PAD.encode(sha2::Sha256::digest(key_blob))
    )
}

/// OpenSSH's default UserKnownHostsFile then GlobalKnownHostsFile, for when
/// ssh's own configuration is not available.
pub fn default_files(home: &Path) -> Vec<PathBuf> {
    vec![
        home.join(".ssh/known_hosts"),
        home.join(".ssh/known_hosts2"),
        PathBuf::from("/etc/ssh/ssh_known_hosts"),
        PathBuf::from("/etc/ssh/ssh_known_hosts2"),
    ]
}

/// The parsed lines of one or more known_hosts files, in order.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    problems: Vec<Problem>,
}

#[derive(Debug)]
struct Entry {
    marker: Marker,
    hosts: Hosts,
    key: PublicKeyEntry,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

#[derive(Debug)]
enum Hosts {
    /// A comma-separated pattern list, lower-cased.
    Patterns(String),
    /// `|1|salt|mac`: HMAC-SHA1 keyed with the salt over the lookup name.
    Hashed { key: ring::hmac::Key, mac: Vec<u8> },
    /// Names no host; the line's key still counts if it is `@revoked`.
    Unreadable,
}

impl KnownHosts {
    /// Read `files` in order (user files first, as ssh does). Missing files
    /// are skipped; malformed lines are skipped and listed in `problems`.
    pub fn load<P: AsRef<Path>>(files: &[P]) -> Result<KnownHosts, KnownHostsError> {
        let mut known = KnownHosts::default();
        for path in files {
            let path = path.as_ref();
            if let Some(bytes) = read_bounded(path)? {
                known.add_file(path, &bytes);
            }
        }
        Ok(known)
    }

    /// Lines that were skipped or only partly understood.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Verify the key `host` presented on `port`. `host` is what ssh would
    /// look up (HostKeyAlias if set, else HostName); `key_blob` is the public
    /// key in SSH wire encoding. Messages name the type written inside the
    /// blob, so `key_type` (`ssh-rsa`, or a signature algorithm such as
    /// `rsa-sha2-512`) only serves if the blob has none.
    pub fn check(&self, host: &str, port: u16, key_type: &str, key_blob: &[u8]) -> Verdict {
        let name = lookup_name(host, port);
        let presented = Presented {
            name: name.clone(),
            key_type: blob_key_type(key_blob).unwrap_or(key_type).to_string(),
            fingerprint: fingerprint(key_blob),
        };
        if let Some(revoked) = self.revoked(key_blob) {
            return Verdict::Revoked {
                presented,
                file: revoked.file.clone(),
                line: revoked.line,
            };
        }
        let mut expected = Vec::new();
        for entry in self.matching(&name, Marker::None) {
            if entry.key.blob == key_blob {
                return Verdict::Trusted {
                    presented,
                    file: entry.key.file.clone(),
                    line: entry.key.line,
                };
            }
            expected.push(entry.key.clone());
        }
        if expected.is_empty() {
            Verdict::Unknown { presented }
        } else {
            Verdict::Changed {
                presented,
                expected,
            }
        }
    }

    /// The `@cert-authority` keys whose patterns match the host, for
    /// verifying a host certificate; revoked CA keys are left out.
    pub fn cert_authorities(&self, host: &str, port: u16) -> Vec<PublicKeyEntry> {
        let name = lookup_name(host, port);
        self.matching(&name, Marker::CertAuthority)
            .filter(|e| self.revoked(&e.key.blob).is_none())
            .map(|e| e.key.clone())
            .collect()
    }

    /// The `@revoked` line with this key, whatever its host patterns say
    /// (stricter than ssh, which only honours lines matching the host). For a
    /// certificate, ask for both its key and its CA's key.
    pub fn revoked(&self, key_blob: &[u8]) -> Option<&PublicKeyEntry> {
        self.entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.blob == key_blob)
            .map(|e| &e.key)
    }

    fn matching<'a>(&'a self, name: &'a str, marker: Marker) -> impl Iterator<Item = &'a Entry> {
        self.entries
            .iter()
            .filter(move |e| e.marker == marker && e.hosts.matches(name))
    }

    fn add_file(&mut self, path: &Path, bytes: &[u8]) {
        for (index, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let mut problem = |reason: String| {
                self.problems.push(Problem {
                    file: path.to_path_buf(),
                    line,
                    reason,
                })
            };
            if raw.len() > MAX_LINE {
                problem(format!("line longer than {MAX_LINE} bytes; ignored"));
                continue;
            }
            let Ok(text) = std::str::from_utf8(raw) else {
                problem("line is not UTF-8; ignored".to_string());
                continue;
            };
            match parse_line(text) {
                Ok(None) => {}
                Ok(Some((marker, hosts, key_type, blob))) => {
                    if let Hosts::Unreadable = hosts {
                        problem("unreadable hashed host name; the line names no host".into());
                    }
                    self.entries.push(Entry {
                        marker,
                        hosts,
                        key: PublicKeyEntry {
                            file: path.to_path_buf(),
                            line,
                            key_type,
                            blob,
                        },
                    });
                }
                Err(reason) => problem(format!("{reason}; line ignored")),
            }
        }
    }
}

/// Append a plain (unhashed) line trusting `key_blob` for `host` on `port`,
/// for `mcpsh hosts trust`. Creates the file 0600 (and missing parents 0700);
/// one `O_APPEND` write; starts a new line if the file does not end with one.
/// Refuses host names that would read as something else in the file.
pub fn append_trusted(
    path: &Path,
    host: &str,
    port: u16,
    key_type: &str,
    key_blob: &[u8],
) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let invalid = |msg: String| io::Error::new(io::ErrorKind::InvalidInput, msg);
    if let Some(why) = bad_host_name(host) {
        return Err(invalid(format!("refusing host name {host:?}: {why}")));
    }
    match blob_key_type(key_blob) {
        Some(t) if t == key_type => {}
        _ => {
            return Err(invalid(format!(
                "the key is not a {key_type} key in SSH wire encoding"
            )));
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    let mut text = String::new();
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8];
        crate::fsutil::read_full_at(&file, &mut last, len - 1)?;
        if last[0] != b'\n' {
            text.push('\n');
        }
    }
    text.push_str(&format!(
        "{} {key_type} {}\n",
        lookup_name(host, port),
        STANDARD.encode(key_blob)
    ));
    file.write_all(text.as_bytes())?;
    file.sync_data()
}

/// What ssh looks up: the lower-cased host, or `[host]:port` off port 22.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 || port == 0 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

fn read_bounded(path: &Path) -> Result<Option<Vec<u8>>, KnownHostsError> {
    let err = |source| KnownHostsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(err(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(err)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(KnownHostsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(Some(bytes))
}

type Parsed = (Marker, Hosts, String, Vec<u8>);

/// One line: `[@marker] hosts keytype base64 [comment]`; `None` for blank
/// lines and comments.
fn parse_line(text: &str) -> Result<Option<Parsed>, String> {
    let text = text.strip_suffix('\r').unwrap_or(text);
    let rest = text.trim_start_matches([' ', '\t']);
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let (marker, rest) = match rest.strip_prefix('@') {
        Some(after) => match split_field(after) {
            ("cert-authority", rest) => (Marker::CertAuthority, rest),
            ("revoked", rest) => (Marker::Revoked, rest),
            (other, _) => return Err(format!("unknown marker @{other}")),
        },
        None => (Marker::None, rest),
    };
    let (hosts, rest) = split_field(rest);
    let (key_type, rest) = split_field(rest);
    if key_type.is_empty() || key_type.starts_with('#') {
        return Err("no key type after the host names".into());
    }
    if key_type.bytes().all(|b| b.is_ascii_digit()) {
        return Err("an SSH-1 RSA key, which is not supported".into());
    }
    let (encoded, _comment) = split_field(rest);
    if encoded.is_empty() || encoded.starts_with('#') {
        return Err("no key after the key type".into());
    }
    let blob = STANDARD
        .decode(encoded)
        .map_err(|_| "the key is not valid base64".to_string())?;
    match blob_key_type(&blob) {
        Some(t) if t == key_type => {}
        Some(t) => return Err(format!("the line says {key_type} but the key is {t}")),
        None => return Err("the key data is truncated".into()),
    }
    Ok(Some((
        marker,
        Hosts::parse(hosts),
        key_type.to_string(),
        blob,
    )))
}

/// The first space/tab-separated field and the rest after its separators.
fn split_field(s: &str) -> (&str, &str) {
    let end = s.find([' ', '\t']).unwrap_or(s.len());
    (&s[..end], s[end..].trim_start_matches([' ', '\t']))
}

/// The key type name a wire-encoded public key starts with.
fn blob_key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    let name = std::str::from_utf8(blob.get(4..4usize.checked_add(len)?)?).ok()?;
    (!name.is_empty()).then_some(name)
}

impl Hosts {
    fn parse(field: &str) -> Hosts {
        if !field.starts_with('|') {
            return Hosts::Patterns(field.to_ascii_lowercase());
        }
        let hashed = || {
            let (salt, mac) = field.strip_prefix("|1|")?.split_once('|')?;
            let salt = STANDARD.decode(salt).ok()?;
            let mac = STANDARD.decode(mac).ok()?;
            // OpenSSH requires a SHA-1-sized salt; the MAC is SHA-1-sized.
            (salt.len() == 20 && mac.len() == 20).then(|| Hosts::Hashed {
                key: ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt),
                mac,
            })
        };
        hashed().unwrap_or(Hosts::Unreadable)
    }

    /// `name` is already lower-cased (see [`lookup_name`]).
    fn matches(&self, name: &str) -> bool {
        match self {
            Hosts::Patterns(list) => match_pattern_list(name, list),
            Hosts::Hashed { key, mac } => ring::hmac::verify(key, name.as_bytes(), mac).is_ok(),
            Hosts::Unreadable => false,
        }
    }
}

/// OpenSSH's `match_hostname`: some sub-pattern matches and no negated one
/// does (a negated match wins wherever it stands in the list).
fn match_pattern_list(name: &str, list: &str) -> bool {
    let mut positive = false;
    for sub in list.split(',') {
        let (negated, pattern) = match sub.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, sub),
        };
        if pattern.len() > MAX_SUBPATTERN {
            return false;
        }
        if crate::wildcard::matches(name.as_bytes(), pattern.as_bytes()) {
            if negated {
                return false;
            }
            positive = true;
        }
    }
    positive
}

/// Why `host` cannot go on a known_hosts line as a plain name, if it cannot.
fn bad_host_name(host: &str) -> Option<&'static str> {
    if host.is_empty() {
        Some("it is empty")
    } else if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it contains whitespace or control characters")
    } else if host.starts_with(['-', '@', '#', '|', '!']) {
        Some("it starts with a character known_hosts or ssh would read as syntax")
    } else if host.contains([',', '*', '?', '[', ']']) {
        Some("it contains a comma, wildcard or bracket, which known_hosts reads as patterns")
    } else {
        None
    }
}

/// `fp from file:line`, a few of them, with the key type if `typed`.
fn list_keys<'a>(keys: impl Iterator<Item = &'a PublicKeyEntry>, typed: bool) -> String {
    let mut parts = Vec::new();
    let mut more = 0;
    for key in keys {
        if parts.len() == MESSAGE_KEYS {
            more += 1;
            continue;
        }
        let ty = if typed {
            format!("{} ", key.key_type)
        } else {
            String::new()
        };
        let at = display_path(&key.file);
        parts.push(format!("{ty}{} from {at}:{}", key.fingerprint(), key.line));
    }
    if more > 0 {
        parts.push(format!("and {more} more"));
    }
    parts.join(", ")
}

/// The path with the home directory shown as `~`.
fn display_path(path: &Path) -> String {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty() && h != "/")
        && let Ok(rest) = path.strip_prefix(&home)
    {
        return format!("~/{}", rest.display());
    }
    path.display().to_string()
}

#[cfg(test)]
mod tests;
