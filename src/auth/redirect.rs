//! Redirect URIs: what a client may register, and the exact match at
//! `/authorize`. The only tolerance is the port of a loopback redirect
//! (RFC 8252 section 7.3): native apps listen on whatever port is free.

/// Schemes a browser must never be sent to with a code.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "filesystem",
    "ftp",
    "ws",
    "wss",
    "mailto",
    "tel",
    "sms",
];

/// A parsed redirect URI (borrowing the text).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed<'a> {
    scheme: &'a str,
    /// Host of an http(s) URI, as written (brackets kept for IPv6).
    host: &'a str,
    port: Option<u16>,
    /// Path and query, exactly as written.
    rest: &'a str,
}

fn parse(uri: &str) -> Result<Parsed<'_>, String> {
    if uri.len() > 2000 {
        return Err("redirect URI longer than 2000 characters".into());
    }
    if let Some(c) = uri.chars().find(|c| {
        !c.is_ascii_graphic() || matches!(c, '\\' | '<' | '>' | '"' | '{' | '}' | '|' | '^' | '`')
    }) {
        return Err(format!(
            "redirect URI contains {c:?}; it must be plain ASCII without spaces or backslashes"
        ));
    }
    if uri.contains('#') {
        return Err("redirect URI must not have a fragment (#…)".into());
    }
    let (scheme, after) = uri
        .split_once(':')
        .ok_or("redirect URI is not absolute (no scheme)")?;
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+.-".contains(c));
    if !valid_scheme {
        return Err(format!(
            "redirect URI scheme {scheme:?} is not a lower-case URI scheme"
        ));
    }
    if FORBIDDEN_SCHEMES.contains(&scheme) {
        return Err(format!("redirect URI scheme {scheme:?} is not allowed"));
    }
    if scheme != "http" && scheme != "https" {
        // A private-use scheme of a native app (RFC 8252 section 7.1).
        if after.starts_with("//")
            && after[2..]
                .split(['/', '?'])
                .next()
                .is_some_and(|a| a.contains('@'))
        {
            return Err("redirect URI must not carry user information (…@)".into());
        }
        return Ok(Parsed {
            scheme,
            host: "",
            port: None,
            rest: after,
        });
    }
    let after = after
        .strip_prefix("//")
        .ok_or("an http(s) redirect URI needs //host")?;
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains('@') {
        return Err("redirect URI must not carry user information (…@)".into());
    }
    let (host, port) = split_port(authority)?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    };
    if !host_ok {
        return Err(format!(
            "redirect URI host {host:?} is not a valid host name"
        ));
    }
    let path = rest.split('?').next().unwrap_or("");
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("redirect URI path must not contain . or .. segments".into());
    }
    Ok(Parsed {
        scheme,
        host,
        port,
        rest,
    })
}

fn split_port(authority: &str) -> Result<(&str, Option<u16>), String> {
    let colon = if authority.starts_with('[') {
        authority.find("]:").map(|i| i + 1)
    } else {
        authority.rfind(':')
    };
    match colon {
        None => Ok((authority, None)),
        Some(i) => {
            let digits = &authority[i + 1..];
            let port = digits
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0 && !digits.starts_with('0') && digits.len() <= 5)
                .ok_or_else(|| format!("redirect URI port {digits:?} is not a valid port"))?;
            Ok((&authority[..i], Some(port)))
        }
    }
}

fn is_loopback(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "[::1]" | "localhost")
}

/// Check a redirect URI a client wants to register: https anywhere, http
/// only to this machine's loopback, or a native app's private-use scheme.
pub fn check_registration(uri: &str) -> Result<(), String> {
    let p = parse(uri)?;
    if p.scheme == "http" && !is_loopback(p.host) {
        return Err(format!(
            "redirect URI {uri:?} uses plain http to a non-loopback host; use https, or http://127.0.0.1:PORT/… for a local app"
        ));
    }
    Ok(())
}

/// Does `requested` match the registered `registered`? Exact string match,
/// except that a loopback http redirect may use any port.
pub fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return parse(requested).is_ok();
    }
    let (Ok(a), Ok(b)) = (parse(registered), parse(requested)) else {
        return false;
    };
    a.scheme == "http"
        && b.scheme == "http"
        && is_loopback(a.host)
        && a.host == b.host
        && a.rest == b.rest
}

/// `scheme://host[:port]` of an http(s) redirect (for the consent page and
/// the page's form-action); None for private-use schemes.
pub fn origin(uri: &str) -> Option<String> {
    let p = parse(uri).ok()?;
    if p.host.is_empty() {
        return None;
    }
    Some(match p.port {
        Some(port) => format!("{}://{}:{port}", p.scheme, p.host),
        None => format!("{}://{}", p.scheme, p.host),
    })
}

/// What the consent page names as where the browser will go.
pub fn display_target(uri: &str) -> String {
    match parse(uri) {
        Ok(p) if !p.host.is_empty() => p.host.to_owned(),
        Ok(p) => format!("the app handling {}:", p.scheme),
        Err(_) => "an invalid address".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rules() {
        for ok in [
            "https://app.example.com/callback",
            "https://app.example.com:8443/cb?x=1",
            "http://127.0.0.1:3000/cb",
            "http://localhost/cb",
            "http://[::1]:9/cb",
            "com.example.app:/oauth",
            "cursor://anysphere.cursor-retrieval/oauth/callback",
        ] {
            assert!(
                check_registration(ok).is_ok(),
                "{ok}: {:?}",
                check_registration(ok)
            );
        }
        for bad in [
            "http://app.example.com/cb",
            "https://app.example.com/cb#x",
            "https://user@app.example.com/cb",
            "javascript:alert(1)",
            "data:text/html,x",
            "file:///etc/passwd",
            "/relative",
            "https:///nohost",
            "https://app.example.com/a/../b",
            "https://app example.com/cb",
            "https://app.example.com:0/cb",
            "https://app.example.com:65536/cb",
            "https://app.example.com\\@evil/cb",
            "HTTPS://app.example.com/cb",
            "https://app.exämple.com/cb",
            "cursor://u@host/cb",
        ] {
            assert!(check_registration(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn only_the_loopback_port_may_vary() {
        let reg = "http://127.0.0.1:3000/cb";
        assert!(matches(reg, reg));
        assert!(matches(reg, "http://127.0.0.1:51234/cb"));
        assert!(matches(reg, "http://127.0.0.1/cb"));
        for bad in [
            "http://127.0.0.1:3000/cb/",
            "http://127.0.0.1:3000/cb?x=1",
            "http://localhost:3000/cb",
            "http://127.0.0.2:3000/cb",
            "https://127.0.0.1:3000/cb",
            "http://127.0.0.1:3000@evil.com/cb",
        ] {
            assert!(!matches(reg, bad), "{bad}");
        }
        let https = "https://app.example.com/cb";
        assert!(matches(https, https));
        assert!(!matches(https, "https://app.example.com:443/cb"));
        assert!(!matches(https, "https://APP.example.com/cb"));
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("http://127.0.0.1:3000/cb").as_deref(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(
            origin("https://a.example/cb").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(origin("com.example.app:/cb"), None);
        assert_eq!(display_target("https://a.example/cb"), "a.example");
    }
}
