//! OAuth Client ID Metadata Documents (MCP authorization 2025-11-25,
//! draft-ietf-oauth-client-id-metadata-document): a client whose `client_id`
//! is an https URL is described by the JSON document served at that URL.
//!
//! [`fetch`] is a request to a URL an anonymous caller chose, made from inside
//! the operator's network, so it is fenced in: the URL is parsed strictly,
//! every address the host resolves to must be public, the connection goes to
//! the address that was checked (no second lookup a rebinding DNS server could
//! answer differently), redirects are not followed, and time and size are
//! capped. It knows nothing of the store or of HTTP routing: the caller caches
//! and checks redirect URIs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::task::AbortOnDropHandle;

/// Limits of a fetch. `Default` is the production policy.
#[derive(Debug, Clone)]
pub struct FetchPolicy {
    /// Also accept loopback addresses (tests serve documents on 127.0.0.1);
    /// every other non-public range stays refused.
    pub allow_loopback: bool,
    /// Roots trusted in addition to the public web PKI (webpki-roots).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// The whole fetch, from DNS lookup to the last byte.
    pub timeout: Duration,
    /// The largest document accepted.
    pub max_bytes: usize,
}

impl Default for FetchPolicy {
    fn default() -> FetchPolicy {
        FetchPolicy {
            allow_loopback: false,
            extra_roots: Vec::new(),
            timeout: Duration::from_secs(5),
            max_bytes: 64 * 1024,
        }
    }
}

/// The client metadata we use from a document (RFC 7591 names); other
/// fields are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub client_id: String,
    pub client_name: Option<String>,
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub scope: Option<String>,
    pub token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    pub grant_types: Vec<String>,
    #[serde(default)]
    pub response_types: Vec<String>,
}

/// Why a client ID metadata document could not be used. Messages are for
/// the developer of the MCP client (or the model driving it): what failed
/// and what the document or its server must do instead. The caller adds
/// the URL.
#[derive(Debug, thiserror::Error)]
pub enum CimdError {
    #[error("the client_id is not a usable metadata document URL: {0}")]
    BadUrl(String),
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error(
        "{host} resolves to {ip}, a {reason} address; the document must be served from a public \
         address"
    )]
    Forbidden {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "the TLS handshake with {host} failed: {source}; the server needs a certificate for \
         {host} from a publicly trusted CA"
    )]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("an extra trusted root certificate is invalid: {0}")]
    BadRoot(rustls::Error),
    #[error("the HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
    #[error(
        "the server answered {status} redirecting to {location}; redirects are not followed, \
         so serve the document at the client_id URL itself"
    )]
    Redirect { status: u16, location: String },
    #[error("the server answered HTTP {0}; it must answer 200 with the JSON document")]
    Status(u16),
    #[error("the document is too large: the limit is {0} bytes")]
    TooLarge(usize),
    #[error("no complete answer within {0:?} (the limit for the whole fetch)")]
    Timeout(Duration),
    #[error("the document is not valid JSON client metadata: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the document is not acceptable: {0}")]
    Invalid(String),
}

/// Fetch and validate the metadata document that `client_id` names.
pub async fn fetch(client_id: &str, policy: &FetchPolicy) -> Result<ClientMetadata, CimdError> {
    let url = parse_url(client_id)?;
    let body = tokio::time::timeout(policy.timeout, download(&url, policy))
        .await
        .map_err(|_| CimdError::Timeout(policy.timeout))??;
    parse_document(&body, client_id)
}

// ---- URL rules ----

const MAX_URL: usize = 2048;

/// A client ID URL taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Url<'a> {
    /// For DNS and SNI: lower case; an IPv6 literal without brackets.
    host: String,
    port: u16,
    /// `host[:port]` as written, for the Host header.
    authority: &'a str,
    /// Path and query: the request target.
    target: &'a str,
}

fn bad_url(why: impl Into<String>) -> CimdError {
    CimdError::BadUrl(why.into())
}

/// Parse a client ID URL by the draft's rules, more strictly than a browser
/// would: anything ambiguous is refused rather than normalized.
fn parse_url(url: &str) -> Result<Url<'_>, CimdError> {
    if url.len() > MAX_URL {
        return Err(bad_url(format!("it is longer than {MAX_URL} characters")));
    }
    if let Some(c) = url.chars().find(|&c| !c.is_ascii_graphic() || c == '\\') {
        return Err(bad_url(format!(
            "it contains {c:?}; it must be plain ASCII without spaces, control characters or backslashes"
        )));
    }
    if url.contains('#') {
        return Err(bad_url("it has a fragment (#…)"));
    }
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| bad_url("it must start with https://"))?;
    let (authority, target) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err(bad_url("it carries user information (…@)"));
    }
    let (host, port) = split_authority(authority)?;
    check_target(target)?;
    Ok(Url {
        host,
        port,
        authority,
        target,
    })
}

/// Split `host[:port]` (host possibly a bracketed IPv6 literal).
fn split_authority(authority: &str) -> Result<(String, u16), CimdError> {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (inside, after) = v6
                .split_once(']')
                .ok_or_else(|| bad_url("its host has an unclosed ["))?;
            let ip: Ipv6Addr = inside
                .parse()
                .map_err(|_| bad_url("its bracketed host is not an IPv6 address"))?;
            (ip.to_string(), after)
        }
        None => {
            let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
            check_hostname(host)?;
            (host.to_ascii_lowercase(), port)
        }
    };
    let port = match port {
        "" => 443,
        p => p
            .strip_prefix(':')
            .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<u16>().ok())
            .filter(|&n| n != 0)
            .ok_or_else(|| bad_url("its port is not a number from 1 to 65535"))?,
    };
    Ok((host, port))
}

/// A DNS name or IPv4 literal: letters, digits, `-` and `.`, no empty label.
fn check_hostname(host: &str) -> Result<(), CimdError> {
    if host.is_empty() {
        return Err(bad_url("it has no host"));
    }
    if host.len() > 253 {
        return Err(bad_url("its host is longer than 253 characters"));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(bad_url(
            "its host may only contain letters, digits, - and . (internationalized names in punycode)",
        ));
    }
    if host.split('.').any(str::is_empty) {
        return Err(bad_url(
            "its host has an empty label (leading, trailing or doubled .)",
        ));
    }
    Ok(())
}

/// The path must name a document (not `/`), with no dot segments, and path
/// and query may only hold URI characters with well-formed `%XX` escapes.
fn check_target(target: &str) -> Result<(), CimdError> {
    let path = target.split('?').next().unwrap_or(target);
    if path.is_empty() || path == "/" {
        return Err(bad_url(
            "it has no path; the document must be at a path such as https://example.com/client.json",
        ));
    }
    if path.split('/').any(is_dot_segment) {
        return Err(bad_url("its path has a . or .. segment"));
    }
    let uri_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    if let Some(b) = target.bytes().find(|&b| !uri_char(b)) {
        return Err(bad_url(format!(
            "its path or query contains {:?}, which must be percent-encoded",
            b as char
        )));
    }
    let bytes = target.as_bytes();
    let bad_escape = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'%'
            && !bytes
                .get(i + 1..i + 3)
                .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return Err(bad_url(
            "its path or query has a % not followed by two hex digits",
        ));
    }
    Ok(())
}

/// `.` or `..`, also when spelled with `%2e`.
fn is_dot_segment(segment: &str) -> bool {
    let s = segment.to_ascii_lowercase().replace("%2e", ".");
    s == "." || s == ".."
}

// ---- Address rules ----

/// What an address is, for deciding whether we may connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Loopback,
    /// Anything else that is not globally reachable, with its name.
    Reserved(&'static str),
}

/// A block of addresses, in IPv6 space (IPv4 blocks as IPv4-mapped), so
/// one table and one comparison serve both families.
struct Range {
    net: u128,
    len: u32,
    class: Class,
}

impl Range {
    fn contains(&self, bits: u128) -> bool {
        let mask = u128::MAX.checked_shl(128 - self.len).unwrap_or(0);
        bits & mask == self.net & mask
    }
}

const fn v4(o: [u8; 4], len: u32, class: Class) -> Range {
    let ip = Ipv4Addr::new(o[0], o[1], o[2], o[3]).to_ipv6_mapped();
    Range {
        net: ip.to_bits(),
        len: 96 + len,
        class,
    }
}

const fn v6(s: [u16; 8], len: u32, class: Class) -> Range {
    let ip = Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
    Range {
        net: ip.to_bits(),
        len,
        class,
    }
}

const fn reserved(name: &'static str) -> Class {
    Class::Reserved(name)
}

/// Blocks that are not publicly reachable (IANA special-purpose registries),
/// checked in order. IPv6 outside these is public only in 2000::/3.
#[rustfmt::skip]
const RANGES: &[Range] = &[
    v4([0, 0, 0, 0], 8, reserved("\"this network\" (0.0.0.0/8)")),
    v4([10, 0, 0, 0], 8, reserved("private")),
    v4([100, 64, 0, 0], 10, reserved("carrier-grade NAT")),
    v4([127, 0, 0, 0], 8, Class::Loopback),
    v4([169, 254, 0, 0], 16, reserved("link-local")),
    v4([172, 16, 0, 0], 12, reserved("private")),
    v4([192, 0, 0, 0], 24, reserved("IETF protocol assignment")),
    v4([192, 0, 2, 0], 24, reserved("documentation")),
    v4([192, 88, 99, 0], 24, reserved("6to4 relay")),
    v4([192, 168, 0, 0], 16, reserved("private")),
    v4([198, 18, 0, 0], 15, reserved("benchmarking")),
    v4([198, 51, 100, 0], 24, reserved("documentation")),
    v4([203, 0, 113, 0], 24, reserved("documentation")),
    v4([224, 0, 0, 0], 4, reserved("multicast")),
    v4([240, 0, 0, 0], 4, reserved("reserved or broadcast")),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 128, reserved("unspecified")),
    v6([0, 0, 0, 0, 0, 0, 0, 1], 128, Class::Loopback),
    v6([0, 0, 0, 0, 0, 0, 0, 0], 96, reserved("deprecated IPv4-compatible")),
    v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, reserved("local-use NAT64")),
    v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64, reserved("discard-only")),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, reserved("Teredo")),
    v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, reserved("IETF protocol assignment")),
    v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, reserved("documentation")),
    v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, reserved("6to4")),
    v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, reserved("documentation")),
    v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, reserved("unique local")),
    v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, reserved("link-local")),
    v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, reserved("site-local")),
    v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, reserved("multicast")),
];

/// Outside `RANGES`, these are public: IPv4 (as mapped) and IPv6 global
/// unicast.
const PUBLIC: &[Range] = &[
    v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96, Class::Public),
    v6([0x2000, 0, 0, 0, 0, 0, 0, 0], 3, Class::Public),
];

/// The well-known NAT64 prefix: packets to 64:ff9b::a.b.c.d go to a.b.c.d.
const NAT64: Range = v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, Class::Public);

fn classify(ip: IpAddr) -> Class {
    let bits = match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped().to_bits(),
        // Judge a NAT64 address as the IPv4 address it reaches (the low
        // 32 bits, kept by the truncation).
        IpAddr::V6(ip) if NAT64.contains(ip.to_bits()) => Ipv4Addr::from_bits(ip.to_bits() as u32)
            .to_ipv6_mapped()
            .to_bits(),
        IpAddr::V6(ip) => ip.to_bits(),
    };
    match RANGES.iter().find(|r| r.contains(bits)) {
        Some(range) => range.class,
        None if PUBLIC.iter().any(|r| r.contains(bits)) => Class::Public,
        None => reserved("reserved (outside 2000::/3)"),
    }
}

/// Why `ip` may not be fetched from under `policy`, if it may not.
fn refusal(ip: IpAddr, policy: &FetchPolicy) -> Option<&'static str> {
    match classify(ip) {
        Class::Public => None,
        Class::Loopback if policy.allow_loopback => None,
        Class::Loopback => Some("loopback"),
        Class::Reserved(name) => Some(name),
    }
}

// ---- The request ----

/// The most a response head may take (hyper's minimum is 8 KiB).
const MAX_HEAD_BYTES: usize = 16 * 1024;

async fn download(url: &Url<'_>, policy: &FetchPolicy) -> Result<Vec<u8>, CimdError> {
    let addrs = resolve(url, policy).await?;
    let tcp = connect(url, &addrs).await?;
    let tls = tls_connect(url, policy, tcp).await?;
    get(url, tls, policy.max_bytes).await
}

/// Resolve the host once; every address must pass, since an attacker's DNS
/// may mix a public address with a private one.
async fn resolve(url: &Url<'_>, policy: &FetchPolicy) -> Result<Vec<SocketAddr>, CimdError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|source| CimdError::Resolve {
            host: url.host.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(CimdError::NoAddress {
            host: url.host.clone(),
        });
    }
    for addr in &addrs {
        if let Some(reason) = refusal(addr.ip(), policy) {
            return Err(CimdError::Forbidden {
                host: url.host.clone(),
                ip: addr.ip(),
                reason,
            });
        }
    }
    Ok(addrs)
}

/// Connect to the first checked address that answers.
async fn connect(url: &Url<'_>, addrs: &[SocketAddr]) -> Result<TcpStream, CimdError> {
    let mut error = CimdError::NoAddress {
        host: url.host.clone(),
    };
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                // Only a request and a small document cross: don't wait on Nagle.
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(source) => error = CimdError::Connect { addr, source },
        }
    }
    Err(error)
}

async fn tls_connect(
    url: &Url<'_>,
    policy: &FetchPolicy,
    tcp: TcpStream,
) -> Result<TlsStream<TcpStream>, CimdError> {
    let name = ServerName::try_from(url.host.clone())
        .map_err(|_| bad_url("its host is not a valid DNS name"))?;
    TlsConnector::from(client_config(policy)?)
        .connect(name, tcp)
        .await
        .map_err(|source| CimdError::Tls {
            host: url.host.clone(),
            source,
        })
}

fn client_config(policy: &FetchPolicy) -> Result<Arc<rustls::ClientConfig>, CimdError> {
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for cert in &policy.extra_roots {
        roots.add(cert.clone()).map_err(CimdError::BadRoot)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One HTTP/1.1 GET; the body of a 200 answer, read up to `max_bytes`.
async fn get(
    url: &Url<'_>,
    tls: TlsStream<TcpStream>,
    max_bytes: usize,
) -> Result<Vec<u8>, CimdError> {
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD_BYTES)
        .handshake(TokioIo::new(tls))
        .await?;
    // The connection is driven by its own task, which ends with this fetch
    // (or its timeout) when the handle drops.
    let _conn = AbortOnDropHandle::new(tokio::spawn(conn));
    let request = Request::get(url.target)
        .header(header::HOST, url.authority)
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("mcpsh/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| bad_url(format!("it does not make an HTTP request: {e}")))?;
    let response = sender.send_request(request).await?;
    check_status(&response)?;
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(CimdError::TooLarge(max_bytes));
    }
    read_capped(response.into_body(), max_bytes).await
}

fn check_status(response: &Response<Incoming>) -> Result<(), CimdError> {
    let status = response.status();
    if status == StatusCode::OK {
        return Ok(());
    }
    if status.is_redirection() {
        let location = response
            .headers()
            .get(header::LOCATION)
            .map_or("nowhere".to_owned(), |v| {
                quote(&String::from_utf8_lossy(v.as_bytes()))
            });
        return Err(CimdError::Redirect {
            status: status.as_u16(),
            location,
        });
    }
    Err(CimdError::Status(status.as_u16()))
}

/// Read the body, giving up as soon as it passes `max_bytes`.
async fn read_capped(mut body: Incoming, max_bytes: usize) -> Result<Vec<u8>, CimdError> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            if out.len() + data.len() > max_bytes {
                return Err(CimdError::TooLarge(max_bytes));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

// ---- The document ----

/// Fields that only a confidential client has.
const SECRET_FIELDS: &[&str] = &["client_secret", "client_secret_expires_at"];

fn parse_document(body: &[u8], client_id: &str) -> Result<ClientMetadata, CimdError> {
    let value: serde_json::Value = serde_json::from_slice(body)?;
    let Some(fields) = value.as_object() else {
        return Err(CimdError::Invalid("it is not a JSON object".into()));
    };
    if let Some(field) = SECRET_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(CimdError::Invalid(format!(
            "it has {field}; a client identified by a URL is public and cannot hold a shared secret"
        )));
    }
    let meta: ClientMetadata = serde_json::from_value(value)?;
    if meta.client_id != client_id {
        return Err(CimdError::Invalid(format!(
            "its client_id {} differs from the URL it was fetched from; they must be identical",
            quote(&meta.client_id)
        )));
    }
    if meta.redirect_uris.is_empty() {
        return Err(CimdError::Invalid(
            "redirect_uris is missing or empty; list the redirect URIs the client uses".into(),
        ));
    }
    if let Some(method) = meta
        .token_endpoint_auth_method
        .as_deref()
        .filter(|&m| m != "none")
    {
        return Err(CimdError::Invalid(format!(
            "token_endpoint_auth_method is {}; only \"none\" (a public client using PKCE) is supported",
            quote(method)
        )));
    }
    Ok(meta)
}

/// Server-chosen text for an error message: quoted, escaped, and short.
fn quote(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::tls::testcert::{self, TestCert};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn url_rules() {
        for (url, host, port, target) in [
            (
                "https://example.com/client.json",
                "example.com",
                443,
                "/client.json",
            ),
            (
                "https://App.Example.com:8443/c?v=1",
                "app.example.com",
                8443,
                "/c?v=1",
            ),
            ("https://[::1]/c", "::1", 443, "/c"),
            ("https://[2001:db8::1]:444/a/b", "2001:db8::1", 444, "/a/b"),
            ("https://1.2.3.4/x%20y", "1.2.3.4", 443, "/x%20y"),
            (
                "https://example.com/a/.well/b",
                "example.com",
                443,
                "/a/.well/b",
            ),
        ] {
            let parsed = parse_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            let got = (parsed.host.as_str(), parsed.port, parsed.target);
            assert_eq!(got, (host, port, target), "{url}");
        }

        let long = format!("https://example.com/{}", "a".repeat(MAX_URL));
        for (url, why) in [
            ("http://example.com/c", "https://"),
            ("HTTPS://example.com/c", "https://"),
            ("https:/example.com/c", "https://"),
            ("https://example.com", "no path"),
            ("https://example.com/", "no path"),
            ("https://example.com?x=1", "no path"),
            ("https://example.com/?x=1", "no path"),
            ("https:///c", "no host"),
            ("https://:443/c", "no host"),
            ("https://user@example.com/c", "user information"),
            ("https://user:pw@example.com/c", "user information"),
            ("https://example.com/c#frag", "fragment"),
            ("https://example.com/./c", ". or .."),
            ("https://example.com/a/../c", ". or .."),
            ("https://example.com/a/..", ". or .."),
            ("https://example.com/a/%2E%2e/c", ". or .."),
            ("https://example.com/a b", "' '"),
            ("https://example.com/a\tb", "'\\t'"),
            ("https://example.com/a\\b", "'\\\\'"),
            ("https://example.com\\@evil.com/c", "'\\\\'"),
            ("https://exämple.com/c", "'ä'"),
            ("https://example.com/a<b", "percent-encoded"),
            ("https://example.com/a%zz", "two hex digits"),
            ("https://example.com/a%2", "two hex digits"),
            ("https://example.com:0/c", "port"),
            ("https://example.com:65536/c", "port"),
            ("https://example.com:/c", "port"),
            ("https://example.com:+1/c", "port"),
            ("https://[::1/c", "unclosed"),
            ("https://[::1]x/c", "port"),
            ("https://[fe80::1%25eth0]/c", "IPv6"),
            ("https://[example.com]/c", "IPv6"),
            ("https://exa_mple.com/c", "letters, digits"),
            ("https://example..com/c", "empty label"),
            ("https://example.com./c", "empty label"),
            (long.as_str(), "longer than"),
        ] {
            match parse_url(url) {
                Ok(parsed) => panic!("{url} was accepted: {parsed:?}"),
                Err(e) => assert!(e.to_string().contains(why), "{url}: {e}"),
            }
        }
    }

    #[test]
    fn address_classes() {
        let kind = |ip: &str| match classify(ip.parse().unwrap()) {
            Class::Public => "public",
            Class::Loopback => "loopback",
            Class::Reserved(_) => "reserved",
        };
        for (ip, expected) in [
            ("8.8.8.8", "public"),
            ("1.1.1.1", "public"),
            ("100.63.255.255", "public"),
            ("100.128.0.0", "public"),
            ("172.32.0.1", "public"),
            ("198.20.0.1", "public"),
            ("223.255.255.255", "public"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.254", "loopback"),
            ("0.0.0.0", "reserved"),
            ("0.1.2.3", "reserved"),
            ("10.0.0.1", "reserved"),
            ("100.64.0.1", "reserved"),
            ("100.127.255.255", "reserved"),
            ("169.254.169.254", "reserved"),
            ("172.16.0.1", "reserved"),
            ("172.31.255.255", "reserved"),
            ("192.0.0.8", "reserved"),
            ("192.0.2.1", "reserved"),
            ("192.168.1.1", "reserved"),
            ("198.18.0.1", "reserved"),
            ("198.19.255.255", "reserved"),
            ("198.51.100.7", "reserved"),
            ("203.0.113.9", "reserved"),
            ("224.0.0.1", "reserved"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "reserved"),
            ("2606:4700:4700::1111", "public"),
            ("2a00:1450::1", "public"),
            ("::ffff:8.8.8.8", "public"),
            ("64:ff9b::808:808", "public"),
            ("::1", "loopback"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::7f00:1", "loopback"),
            ("::", "reserved"),
            ("::ffff:10.0.0.1", "reserved"),
            ("::ffff:169.254.169.254", "reserved"),
            ("::ffff:0.0.0.0", "reserved"),
            ("::127.0.0.1", "reserved"),
            ("::8.8.8.8", "reserved"),
            ("64:ff9b::a00:1", "reserved"),
            ("64:ff9b:1::1", "reserved"),
            ("100::1", "reserved"),
            ("2001::1", "reserved"),
            ("2001:db8::1", "reserved"),
            ("2002:7f00:1::", "reserved"),
            ("3fff::1", "reserved"),
            ("fc00::1", "reserved"),
            ("fd00::1", "reserved"),
            ("fe80::1", "reserved"),
            ("febf::1", "reserved"),
            ("fec0::1", "reserved"),
            ("ff02::1", "reserved"),
            ("4000::1", "reserved"),
        ] {
            assert_eq!(kind(ip), expected, "{ip}");
        }
    }

    #[test]
    fn loopback_is_allowed_only_when_asked() {
        let test = FetchPolicy {
            allow_loopback: true,
            ..FetchPolicy::default()
        };
        for ip in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
            let ip = ip.parse().unwrap();
            assert_eq!(refusal(ip, &FetchPolicy::default()), Some("loopback"));
            assert_eq!(refusal(ip, &test), None);
        }
        for ip in ["10.0.0.1", "169.254.169.254", "fd00::1"] {
            assert!(refusal(ip.parse().unwrap(), &test).is_some(), "{ip}");
        }
    }

    const ID: &str = "https://app.example.com/client.json";

    #[test]
    fn document_rules() {
        let doc = |extra: &str| {
            format!(r#"{{"client_id": "{ID}", "redirect_uris": ["http://127.0.0.1/cb"]{extra}}}"#)
        };
        for (body, why) in [
            ("[]".to_owned(), "not a JSON object"),
            ("{".to_owned(), "not valid JSON"),
            (
                r#"{"redirect_uris": ["http://127.0.0.1/cb"]}"#.to_owned(),
                "client_id",
            ),
            (
                format!(r#"{{"client_id": "{ID}/", "redirect_uris": ["x"]}}"#),
                "differs",
            ),
            (format!(r#"{{"client_id": "{ID}"}}"#), "redirect_uris"),
            (
                format!(r#"{{"client_id": "{ID}", "redirect_uris": []}}"#),
                "redirect_uris",
            ),
            (doc(r#", "client_secret": "s""#), "shared secret"),
            (doc(r#", "client_secret_expires_at": 0"#), "shared secret"),
            (
                doc(r#", "token_endpoint_auth_method": "client_secret_basic""#),
                "\"none\"",
            ),
            (
                doc(r#", "token_endpoint_auth_method": "private_key_jwt""#),
                "\"none\"",
            ),
            (
                doc(r#", "redirect_uris": "x""#),
                "not valid JSON client metadata",
            ),
        ] {
            match parse_document(body.as_bytes(), ID) {
                Ok(meta) => panic!("{body} was accepted: {meta:?}"),
                Err(e) => assert!(e.to_string().contains(why), "{body}: {e}"),
            }
        }
        let meta = parse_document(
            doc(r#", "token_endpoint_auth_method": "none", "jwks": {}"#).as_bytes(),
            ID,
        )
        .unwrap();
        assert_eq!(meta.token_endpoint_auth_method.as_deref(), Some("none"));
        assert_eq!(meta.redirect_uris, ["http://127.0.0.1/cb"]);
    }

    /// What the test server does once it has read a request.
    enum Reply {
        Send(Vec<u8>),
        Stall,
    }

    fn response(head: &str, body: &str) -> Reply {
        Reply::Send(format!("{head}\r\ncontent-length: {}\r\n\r\n{body}", body.len()).into_bytes())
    }

    fn document_for(url: &str) -> String {
        format!(
            r#"{{"client_id":"{url}","client_name":"Test","redirect_uris":["http://127.0.0.1/cb"],"x":1}}"#
        )
    }

    /// An HTTPS server on localhost that answers one request with
    /// `reply(url)`; the task returns the request head it read.
    async fn serve(
        cert: &TestCert,
        reply: impl FnOnce(&str) -> Reply + Send + 'static,
    ) -> (String, AbortOnDropHandle<String>) {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/client.json",
            tcp.local_addr().unwrap().port()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config());
        let reply = reply(&url);
        let task = tokio::spawn(async move {
            let (stream, _) = tcp.accept().await.unwrap();
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return String::new();
            };
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(tls.read(&mut byte).await.unwrap(), 1, "request cut short");
                head.push(byte[0]);
            }
            match reply {
                Reply::Send(bytes) => {
                    // The client may hang up once it has seen enough.
                    let _ = tls.write_all(&bytes).await;
                    let _ = tls.shutdown().await;
                }
                Reply::Stall => std::future::pending().await,
            }
            String::from_utf8(head).unwrap()
        });
        (url, AbortOnDropHandle::new(task))
    }

    fn trusting(cert: &TestCert) -> FetchPolicy {
        FetchPolicy {
            allow_loopback: true,
            extra_roots: vec![cert.der.clone()],
            timeout: Duration::from_secs(2),
            max_bytes: 64 * 1024,
        }
    }

    #[tokio::test]
    async fn fetches_a_document_over_https() {
        let Some(cert) = testcert::generate() else {
            return;
        };
        let (url, server) =
            serve(&cert, |url| response("HTTP/1.1 200 OK", &document_for(url))).await;
        let meta = fetch(&url, &trusting(&cert)).await.unwrap();
        assert_eq!(meta.client_id, url);
        assert_eq!(meta.client_name.as_deref(), Some("Test"));
        let head = server.await.unwrap().to_ascii_lowercase();
        let authority = url
            .trim_start_matches("https://")
            .trim_end_matches("/client.json");
        assert!(head.starts_with("get /client.json http/1.1\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nhost: {authority}\r\n")),
            "{head}"
        );
        assert!(head.contains("\r\naccept: application/json\r\n"), "{head}");
    }

    /// Fetch from a server answering `reply`; the error's message.
    async fn fetch_error(
        reply: impl FnOnce(&str) -> Reply + Send + 'static,
        policy: impl FnOnce(FetchPolicy) -> FetchPolicy,
    ) -> String {
        let Some(cert) = testcert::generate() else {
            return "skipped".into();
        };
        let (url, _server) = serve(&cert, reply).await;
        match fetch(&url, &policy(trusting(&cert))).await {
            Ok(meta) => panic!("fetch succeeded: {meta:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn check(err: String, expected: &str) {
        assert!(err == "skipped" || err.contains(expected), "{err}");
    }

    #[tokio::test]
    async fn a_redirect_is_refused() {
        let reply = |_: &str| {
            response(
                "HTTP/1.1 302 Found\r\nlocation: https://169.254.169.254/",
                "",
            )
        };
        check(
            fetch_error(reply, |p| p).await,
            "answered 302 redirecting to \"https://169.254.169.254/\"",
        );
    }

    #[tokio::test]
    async fn not_found_is_refused() {
        check(
            fetch_error(|_| response("HTTP/1.1 404 Not Found", "no"), |p| p).await,
            "HTTP 404",
        );
    }

    #[tokio::test]
    async fn an_oversized_document_is_refused() {
        let big = |url: &str| {
            document_for(url).replace("\"x\":1", &format!("\"x\":\"{}\"", "a".repeat(2000)))
        };
        let small = |p| FetchPolicy {
            max_bytes: 1000,
            ..p
        };
        let declared = move |url: &str| response("HTTP/1.1 200 OK", &big(url));
        check(fetch_error(declared, small).await, "too large");
        // Without a length the cap applies while reading.
        let streamed = move |url: &str| {
            Reply::Send(
                format!("HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n{}", big(url)).into_bytes(),
            )
        };
        check(fetch_error(streamed, small).await, "too large");
    }

    #[tokio::test]
    async fn a_document_for_another_client_is_refused() {
        let reply = |url: &str| response("HTTP/1.1 200 OK", &document_for(&format!("{url}?other")));
        check(fetch_error(reply, |p| p).await, "differs from the URL");
    }

    #[tokio::test]
    async fn a_slow_server_hits_the_timeout() {
        let quick = |p| FetchPolicy {
            timeout: Duration::from_millis(300),
            ..p
        };
        check(
            fetch_error(|_| Reply::Stall, quick).await,
            "no complete answer within 300ms",
        );
    }

    #[tokio::test]
    async fn loopback_is_refused_by_default() {
        for url in [
            "https://localhost:9/c.json",
            "https://127.0.0.1/c.json",
            "https://[::1]/c.json",
        ] {
            let err = fetch(url, &FetchPolicy::default())
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("a loopback address"), "{url}: {err}");
        }
    }

    #[tokio::test]
    async fn an_untrusted_certificate_is_refused() {
        let Some(cert) = testcert::generate() else {
            return;
        };
        let (url, _server) =
            serve(&cert, |url| response("HTTP/1.1 200 OK", &document_for(url))).await;
        let policy = FetchPolicy {
            extra_roots: Vec::new(),
            ..trusting(&cert)
        };
        let err = fetch(&url, &policy).await.unwrap_err().to_string();
        assert!(err.contains("TLS handshake with localhost failed"), "{err}");
    }
}
