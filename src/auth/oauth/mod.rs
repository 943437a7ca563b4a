//! The OAuth 2.1 authorization server's flows, as the MCP authorization spec
//! asks: metadata (RFC 8414, RFC 9728), dynamic client registration (RFC
//! 7591), client ID metadata documents, the authorization code flow with
//! PKCE S256 only, refresh rotation with reuse detection (the whole family is
//! revoked), and revocation (RFC 7009). Rendering is `http/`'s job; this
//! module decides: metadata, registration and client lookup here,
//! `authorize.rs` for the login and consent flow, `token.rs` for the token
//! and revocation endpoints.

mod authorize;
mod token;

use std::net::IpAddr;

use serde_json::{Value, json};

pub(super) use authorize::Pending;
pub use authorize::{Consent, Finish, LoginForm, Refusal};

use super::{Auth, Scopes, redirect};
use crate::audit::Who;
use crate::crypto::{new_secret, sha256_hex, short_id};
use crate::store::{ClientRow, now_ms};

/// An OAuth error response (RFC 6749 section 5.2, RFC 7591 section 3.2.2).
#[derive(Debug, Clone)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn bad(error: &'static str, description: impl Into<String>) -> OAuthError {
        OAuthError::new(400, error, description)
    }

    fn server(e: impl std::fmt::Display) -> OAuthError {
        tracing::error!(error = %e, "authorization server failure");
        OAuthError::new(500, "server_error", "internal error; see the server log")
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// Client metadata fetched from a client ID URL is reused for this long.
const CIMD_CACHE_MS: i64 = 3_600_000;

impl Auth {
    /// RFC 9728 protected resource metadata for `/mcp`.
    pub fn resource_metadata(&self) -> Value {
        let cfg = self.config();
        json!({
            "resource": cfg.resource(),
            "authorization_servers": [cfg.issuer],
            "scopes_supported": scope_names(),
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpsh",
        })
    }

    /// RFC 8414 authorization server metadata.
    pub fn server_metadata(&self) -> Value {
        let iss = &self.config().issuer;
        json!({
            "issuer": iss,
            "authorization_endpoint": format!("{iss}/authorize"),
            "token_endpoint": format!("{iss}/token"),
            "registration_endpoint": format!("{iss}/register"),
            "revocation_endpoint": format!("{iss}/revoke"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_post"],
            "scopes_supported": scope_names(),
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        })
    }

    /// Dynamic client registration (RFC 7591).
    pub fn register(&self, body: &Value, source: Option<IpAddr>) -> Result<Value, OAuthError> {
        let meta = |e: &str| OAuthError::bad("invalid_client_metadata", e);
        let obj = body
            .as_object()
            .ok_or_else(|| meta("the body must be a JSON object"))?;
        let uris: Vec<String> = match obj.get("redirect_uris") {
            Some(Value::Array(a)) if !a.is_empty() && a.len() <= 20 => a
                .iter()
                .map(|u| u.as_str().map(str::to_owned))
                .collect::<Option<_>>()
                .ok_or_else(|| meta("redirect_uris must be strings"))?,
            _ => {
                return Err(meta(
                    "redirect_uris must be a non-empty array of at most 20 URIs",
                ));
            }
        };
        for u in &uris {
            redirect::check_registration(u)
                .map_err(|e| OAuthError::bad("invalid_redirect_uri", e))?;
        }
        let method = match obj
            .get("token_endpoint_auth_method")
            .and_then(Value::as_str)
        {
            None | Some("none") => "none",
            Some("client_secret_post") => "client_secret_post",
            Some(other) => {
                return Err(meta(&format!(
                    "token_endpoint_auth_method {other:?} is not supported; use \"none\" (PKCE) or \"client_secret_post\" (HTTP Basic is never accepted)"
                )));
            }
        };
        let str_list = |key: &str, default: &[&str]| -> Result<Vec<String>, OAuthError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(default.iter().map(|s| s.to_string()).collect()),
                Some(Value::Array(a)) => a
                    .iter()
                    .map(|v| v.as_str().map(str::to_owned))
                    .collect::<Option<_>>()
                    .ok_or_else(|| meta(&format!("{key} must be an array of strings"))),
                Some(_) => Err(meta(&format!("{key} must be an array of strings"))),
            }
        };
        let grant_types = str_list("grant_types", &["authorization_code", "refresh_token"])?;
        if let Some(g) = grant_types
            .iter()
            .find(|g| !matches!(g.as_str(), "authorization_code" | "refresh_token"))
        {
            return Err(meta(&format!(
                "grant type {g:?} is not supported; only authorization_code and refresh_token"
            )));
        }
        let response_types = str_list("response_types", &["code"])?;
        if response_types.iter().any(|r| r != "code") {
            return Err(meta("only the response type \"code\" is supported"));
        }
        let name = obj.get("client_name").and_then(Value::as_str).map(|n| {
            n.chars()
                .filter(|c| !c.is_control())
                .take(100)
                .collect::<String>()
        });
        let scope = obj.get("scope").and_then(Value::as_str).map(str::to_owned);
        if let Some(s) = &scope {
            Scopes::parse(s).map_err(|e| meta(&e))?;
        }
        let secret = (method == "client_secret_post").then(|| new_secret("mcpsh_cs_"));
        let now = now_ms();
        let row = ClientRow {
            client_id: short_id("client-") + &short_id(""),
            secret_hash: secret.as_deref().map(|s| sha256_hex(s.as_bytes())),
            name: name.clone(),
            redirect_uris: uris.clone(),
            auth_method: method.to_owned(),
            scope: scope.clone(),
            from_url: false,
            created_ms: now,
        };
        self.inner
            .store
            .insert_client(&row)
            .map_err(OAuthError::server)?;
        let source = source.map(|s| s.to_string());
        self.inner.audit.security(
            "client_register",
            Who {
                client_id: Some(&row.client_id),
                source: source.as_deref(),
                ..Default::default()
            },
            Some(format!(
                "{:?} redirect_uris {:?}",
                name.as_deref().unwrap_or(""),
                uris
            )),
        );
        let mut out = json!({
            "client_id": row.client_id,
            "client_id_issued_at": now / 1000,
            "redirect_uris": uris,
            "token_endpoint_auth_method": method,
            "grant_types": grant_types,
            "response_types": response_types,
        });
        if let Some(n) = name {
            out["client_name"] = n.into();
        }
        if let Some(s) = scope {
            out["scope"] = s.into();
        }
        if let Some(s) = secret {
            out["client_secret"] = s.into();
            out["client_secret_expires_at"] = 0.into();
        }
        Ok(out)
    }

    /// Find a client: registered, or (for an https client id) its metadata
    /// document, fetched with SSRF guards and cached.
    async fn client(&self, client_id: &str) -> Result<Option<ClientRow>, String> {
        let stored = self
            .inner
            .store
            .get_client(client_id)
            .map_err(|e| e.to_string())?;
        if !client_id.starts_with("https://") {
            return Ok(stored);
        }
        if let Some(c) = stored.filter(|c| c.from_url && now_ms() - c.created_ms < CIMD_CACHE_MS) {
            return Ok(Some(c));
        }
        let doc = super::cimd::fetch(client_id, &self.config().cimd)
            .await
            .map_err(|e| {
                format!("cannot use the client ID metadata document at {client_id}: {e}")
            })?;
        for u in &doc.redirect_uris {
            redirect::check_registration(u).map_err(|e| {
                format!(
                    "the client ID metadata document at {client_id} lists a bad redirect URI: {e}"
                )
            })?;
        }
        let row = ClientRow {
            client_id: client_id.to_owned(),
            secret_hash: None,
            name: doc.client_name.clone(),
            redirect_uris: doc.redirect_uris.clone(),
            auth_method: "none".into(),
            scope: doc.scope.clone(),
            from_url: true,
            created_ms: now_ms(),
        };
        self.inner
            .store
            .insert_client(&row)
            .map_err(|e| e.to_string())?;
        Ok(Some(row))
    }

    /// `resource` must name this server's MCP endpoint (RFC 8707).
    fn check_resource(&self, resource: Option<&str>) -> Result<String, String> {
        let ours = self.config().resource();
        match resource {
            None => Ok(ours),
            Some(r) if r == ours || r == format!("{ours}/") || r == self.config().issuer => {
                Ok(ours)
            }
            Some(r) => Err(format!("resource {r:?} is not this server; use {ours}")),
        }
    }

    /// A `resource` given at the token endpoint must be the one authorized.
    fn same_resource(&self, given: Option<&str>, granted: &str) -> Result<(), OAuthError> {
        let Some(r) = given else { return Ok(()) };
        let r = self
            .check_resource(Some(r))
            .map_err(|e| OAuthError::bad("invalid_target", e))?;
        if r != granted {
            return Err(OAuthError::bad(
                "invalid_target",
                "resource differs from the one authorized",
            ));
        }
        Ok(())
    }
}

fn scope_names() -> Vec<&'static str> {
    super::Scope::ALL.iter().map(|s| s.as_str()).collect()
}

fn is_b64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// base64url(SHA-256(verifier)) without padding.
pub fn pkce_s256(verifier: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_is_unpadded_base64url_of_sha256() {
        // Expected value computed independently with Python's hashlib/base64.
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mJ92K1uGyYuVNH0hTHAlmXIiU0pbV9"),
            "vfRVuTNdy-1te79Z2TJkwPQ-rwku981dcx1fg80gqAA"
        );
    }
}
