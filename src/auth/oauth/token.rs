//! The token endpoint (code exchange, refresh rotation with reuse
//! detection) and revocation (RFC 7009).

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Value, json};

use super::{OAuthError, is_b64url, pkce_s256};
use crate::audit::Who;
use crate::auth::{ACCESS_PREFIX, Auth, REFRESH_PREFIX, Scopes};
use crate::crypto::{ct_eq, new_secret, sha256_hex, short_id};
use crate::store::{ACCESS, ClientRow, GrantRow, REFRESH, Take, TokenRow, now_ms};

impl Auth {
    /// The token endpoint. `basic` is true when the request carried an
    /// `Authorization: Basic` header, which is refused outright.
    pub fn token(
        &self,
        form: &HashMap<String, String>,
        basic: bool,
        source: Option<IpAddr>,
    ) -> Result<Value, OAuthError> {
        if basic {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "HTTP Basic is not accepted; send client_id (and client_secret for a confidential client) in the form body",
            ));
        }
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let client_id = get("client_id")
            .ok_or_else(|| OAuthError::bad("invalid_request", "client_id is required"))?;
        let client = self
            .inner
            .store
            .get_client(client_id)
            .map_err(OAuthError::server)?
            .ok_or_else(|| {
                OAuthError::new(
                    401,
                    "invalid_client",
                    format!("unknown client {client_id:?}"),
                )
            })?;
        if let Some(want) = &client.secret_hash {
            let given = get("client_secret")
                .map(|s| sha256_hex(s.as_bytes()))
                .unwrap_or_default();
            if !ct_eq(given.as_bytes(), want.as_bytes()) {
                return Err(OAuthError::new(
                    401,
                    "invalid_client",
                    "client authentication failed: wrong or missing client_secret",
                ));
            }
        }
        let source = source.map(|s| s.to_string());
        match get("grant_type") {
            Some("authorization_code") => self.exchange_code(&client, &get, source.as_deref()),
            Some("refresh_token") => self.refresh(&client, &get, source.as_deref()),
            Some(other) => Err(OAuthError::bad(
                "unsupported_grant_type",
                format!(
                    "grant_type {other:?} is not supported; use authorization_code or refresh_token"
                ),
            )),
            None => Err(OAuthError::bad("invalid_request", "grant_type is required")),
        }
    }

    fn exchange_code<'a>(
        &self,
        client: &ClientRow,
        get: &impl Fn(&str) -> Option<&'a str>,
        source: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let invalid = |d: &str| OAuthError::bad("invalid_grant", d);
        let code =
            get("code").ok_or_else(|| OAuthError::bad("invalid_request", "code is required"))?;
        let verifier = get("code_verifier").ok_or_else(|| {
            OAuthError::bad("invalid_request", "code_verifier is required (PKCE)")
        })?;
        let now = now_ms();
        let row = match self
            .inner
            .store
            .take_code(&sha256_hex(code.as_bytes()), now)
            .map_err(OAuthError::server)?
        {
            Take::Fresh(row) => row,
            Take::Replayed { grant_id } => {
                self.revoke_replayed(
                    grant_id,
                    "code_reuse",
                    "authorization code replayed",
                    client,
                    source,
                    now,
                );
                return Err(invalid(
                    "the authorization code was already used; every token issued from it is now revoked",
                ));
            }
            Take::Missing => return Err(invalid("unknown authorization code")),
        };
        let grant = self
            .inner
            .store
            .get_grant(&row.grant_id)
            .map_err(OAuthError::server)?
            .ok_or_else(|| invalid("unknown authorization code"))?;
        if grant.client_id != client.client_id {
            return Err(invalid(
                "the authorization code was issued to another client",
            ));
        }
        if row.expires_ms <= now {
            return Err(invalid(
                "the authorization code expired (codes live 60 seconds)",
            ));
        }
        if get("redirect_uri").is_some_and(|u| u != row.redirect_uri)
            || (get("redirect_uri").is_none())
        {
            return Err(invalid(
                "redirect_uri must be given and equal the one used at /authorize",
            ));
        }
        if !(43..=128).contains(&verifier.len())
            || !verifier
                .bytes()
                .all(|b| is_b64url(b) || b == b'.' || b == b'~')
        {
            return Err(invalid(
                "code_verifier must be 43-128 characters of [A-Za-z0-9-._~]",
            ));
        }
        let computed = pkce_s256(verifier);
        if !ct_eq(computed.as_bytes(), row.challenge.as_bytes()) {
            return Err(invalid("code_verifier does not match the code_challenge"));
        }
        self.same_resource(get("resource"), &grant.resource)?;
        if grant.revoked_ms.is_some() {
            return Err(invalid("this login was revoked"));
        }
        let scopes = Scopes::parse(&grant.scopes).unwrap_or_default();
        self.issue_recorded("token_issue", &grant, scopes, client, source)
    }

    /// A code or refresh token came back after use: revoke the login it
    /// belongs to (every token issued from it) and record why.
    fn revoke_replayed(
        &self,
        grant_id: Option<String>,
        event: &str,
        reason: &str,
        client: &ClientRow,
        source: Option<&str>,
        now: i64,
    ) {
        let Some(g) = grant_id else {
            return;
        };
        let _ = self.inner.store.revoke_grant(&g, reason, now);
        self.inner.audit.security(
            event,
            Who {
                client_id: Some(&client.client_id),
                source,
                ..Default::default()
            },
            Some(format!("login {g} revoked")),
        );
    }

    fn refresh<'a>(
        &self,
        client: &ClientRow,
        get: &impl Fn(&str) -> Option<&'a str>,
        source: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let invalid = |d: &str| OAuthError::bad("invalid_grant", d);
        let token = get("refresh_token")
            .ok_or_else(|| OAuthError::bad("invalid_request", "refresh_token is required"))?;
        let now = now_ms();
        let row = match self
            .inner
            .store
            .take_refresh(&sha256_hex(token.as_bytes()), now)
            .map_err(OAuthError::server)?
        {
            Take::Fresh(row) => row,
            Take::Replayed { grant_id } => {
                self.revoke_replayed(
                    grant_id,
                    "token_reuse",
                    "refresh token reused",
                    client,
                    source,
                    now,
                );
                return Err(invalid(
                    "this refresh token was already used; the whole login is now revoked, log in again",
                ));
            }
            Take::Missing => return Err(invalid("unknown refresh token")),
        };
        let grant_id = row.grant_id.clone().unwrap_or_default();
        let grant = self
            .inner
            .store
            .get_grant(&grant_id)
            .map_err(OAuthError::server)?
            .ok_or_else(|| invalid("unknown refresh token"))?;
        if grant.client_id != client.client_id {
            let _ = self.inner.store.revoke_grant(
                &grant.id,
                "refresh token presented by another client",
                now,
            );
            return Err(invalid("the refresh token belongs to another client"));
        }
        if grant.revoked_ms.is_some()
            || grant.expires_ms <= now
            || row.expires_ms.is_some_and(|e| e <= now)
        {
            return Err(invalid("this login was revoked or expired; log in again"));
        }
        let granted = Scopes::parse(&grant.scopes).unwrap_or_default();
        let scopes = match get("scope") {
            Some(s) => {
                let asked = Scopes::parse(s).map_err(|e| OAuthError::bad("invalid_scope", e))?;
                if !asked.is_subset(granted) {
                    return Err(OAuthError::bad(
                        "invalid_scope",
                        format!("a refresh may only narrow the scopes [{granted}]"),
                    ));
                }
                asked
            }
            None => granted,
        };
        self.same_resource(get("resource"), &grant.resource)?;
        let expires = now + self.config().refresh_ttl.as_millis() as i64;
        self.inner
            .store
            .touch_grant(&grant.id, now, expires)
            .map_err(OAuthError::server)?;
        self.issue_recorded("token_refresh", &grant, scopes, client, source)
    }

    /// [`Self::issue_pair`], recorded on the audit log as `event`.
    fn issue_recorded(
        &self,
        event: &str,
        grant: &GrantRow,
        scopes: Scopes,
        client: &ClientRow,
        source: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let out = self.issue_pair(grant, scopes).map_err(OAuthError::server)?;
        self.inner.audit.security(
            event,
            Who {
                user: Some(&grant.user_name),
                client_id: Some(&client.client_id),
                source,
                ..Default::default()
            },
            Some(format!("login {} scopes [{scopes}]", grant.id)),
        );
        Ok(out)
    }

    /// A new access token and refresh token for `grant`.
    fn issue_pair(
        &self,
        grant: &GrantRow,
        scopes: Scopes,
    ) -> Result<Value, crate::store::StoreError> {
        let now = now_ms();
        let access = new_secret(ACCESS_PREFIX);
        let refresh = new_secret(REFRESH_PREFIX);
        let ttl = self.config().access_ttl;
        for (secret, kind, expires) in [
            (&access, ACCESS, now + ttl.as_millis() as i64),
            (
                &refresh,
                REFRESH,
                now + self.config().refresh_ttl.as_millis() as i64,
            ),
        ] {
            self.inner.store.insert_token(&TokenRow {
                hash: sha256_hex(secret.as_bytes()),
                id: short_id(if kind == ACCESS { "at-" } else { "rt-" }),
                kind,
                name: None,
                user_name: grant.user_name.clone(),
                client_id: Some(grant.client_id.clone()),
                grant_id: Some(grant.id.clone()),
                scopes: scopes.to_string(),
                hosts: grant.hosts.clone(),
                created_ms: now,
                expires_ms: Some(expires),
                revoked_ms: None,
                last_seen_ms: None,
            })?;
        }
        Ok(json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
            "refresh_token": refresh,
            "scope": scopes.to_string(),
        }))
    }

    /// Token revocation (RFC 7009): always 200, whether or not it existed.
    /// Revoking a refresh token ends its whole login.
    pub fn revoke(&self, form: &HashMap<String, String>, basic: bool) -> Result<(), OAuthError> {
        if basic {
            return Err(OAuthError::new(
                401,
                "invalid_client",
                "HTTP Basic is not accepted",
            ));
        }
        let token = form
            .get("token")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::bad("invalid_request", "token is required"))?;
        let grant = self
            .inner
            .store
            .revoke_token_hash(&sha256_hex(token.as_bytes()), now_ms())
            .map_err(OAuthError::server)?;
        self.inner.audit.security(
            "token_revoke",
            Who {
                client_id: form.get("client_id").map(String::as_str),
                ..Default::default()
            },
            grant.map(|g| format!("login {g} revoked")),
        );
        Ok(())
    }
}
