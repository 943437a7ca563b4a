//! The login and consent page of `/authorize`, and the plain error page.
//! Every value is HTML-escaped; the page cannot be framed, cached or used to
//! leak the referrer, and runs no script.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::oauth::Consent;

/// Escape text for HTML element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.3rem}.box{border:1px solid #ccc;border-radius:8px;padding:1rem 1.2rem}\
.err{background:#fde8e8;border:1px solid #f5b5b5;padding:.6rem;border-radius:6px}\
label{display:block;margin:.8rem 0 .2rem}input[type=text],input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}\
button{margin:1rem .5rem 0 0;padding:.5rem 1.2rem}code{background:#f3f3f3;padding:0 .2rem}";

fn secure_headers(resp: &mut Response, form_action: &str) {
    let h = resp.headers_mut();
    let csp = format!(
        "default-src 'none'; style-src 'unsafe-inline'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    );
    if let Ok(v) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, v);
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
}

/// The login form asking the person to approve `c`.
pub(super) fn login(c: &Consent, status: StatusCode, secure_cookie: bool) -> Response {
    let scopes: String = c
        .scopes
        .iter()
        .map(|s| {
            format!(
                "<li><code>{}</code>: {}</li>",
                s.as_str(),
                esc(s.describe())
            )
        })
        .collect();
    let message = c
        .message
        .as_deref()
        .map(|m| format!("<p class=err>{}</p>", esc(m)))
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=utf-8><meta name=viewport content='width=device-width'>\
<title>mcpsh: allow access?</title><style>{STYLE}</style></head><body><h1>Allow <b>{name}</b> to use mcpsh?</h1>\
{message}<div class=box><p>After you allow it, your browser goes to <b>{target}</b>.</p>\
<p>It asks to:</p><ul>{scopes}</ul><p><small>client id <code>{id}</code></small></p></div>\
<form method=post action=/authorize><input type=hidden name=csrf value=\"{csrf}\">\
<label for=u>User</label><input id=u type=text name=username autocomplete=username required>\
<label for=p>Password</label><input id=p type=password name=password autocomplete=current-password>\
<button type=submit name=decision value=allow>Allow</button><button type=submit name=decision value=deny formnovalidate>Deny</button>\
</form></body></html>",
        name = esc(&c.client_name),
        target = esc(&c.redirect_target),
        id = esc(&c.client_id),
        csrf = esc(&c.csrf),
    );
    let mut resp = (status, body).into_response();
    let form_action = match &c.redirect_origin {
        Some(o) => format!("'self' {o}"),
        // A native app's private-use scheme: allow the redirect to it.
        None => "'self' *".to_owned(),
    };
    secure_headers(&mut resp, &form_action);
    let cookie = format!(
        "{}={}; Path=/authorize; HttpOnly; SameSite=Strict; Max-Age=600{}",
        super::oauth::CSRF_COOKIE,
        c.csrf,
        if secure_cookie { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A page that explains why the request cannot go on (never redirects).
pub(super) fn error(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><meta charset=utf-8><title>mcpsh: cannot continue</title>\
<style>{STYLE}</style></head><body><h1>mcpsh cannot continue</h1><p class=err>{}</p></body></html>",
        esc(message)
    );
    let mut resp = (status, body).into_response();
    secure_headers(&mut resp, "'none'");
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }
}
