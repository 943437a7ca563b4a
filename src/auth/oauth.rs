//! The OAuth 2.1 authorization server's flows, as the MCP authorization spec
//! asks: metadata (RFC 8414, RFC 9728), dynamic client registration (RFC
//! 7591), client ID metadata documents, the authorization code flow with
//! PKCE S256 only, refresh rotation with reuse detection (the whole family is
//! revoked), and revocation (RFC 7009). Rendering is `http/`'s job; this file
//! decides.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ACCESS_PREFIX, Auth, REFRESH_PREFIX, Scopes, redirect};
use crate::audit::Who;
use crate::crypto::{ct_eq, new_secret, sha256_hex, short_id};
use crate::store::{ACCESS, ClientRow, CodeRow, GrantRow, REFRESH, Take, TokenRow, now_ms};

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

/// Why `/authorize` could not show the login page.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// The client or redirect URI is unknown or wrong: never redirect, show
    /// this message to the person.
    Page(String),
    /// The redirect URI is trusted: send the browser back with this URL
    /// (carrying `error`, `state` and `iss`).
    Redirect(String),
}

/// What the login and consent page shows.
#[derive(Debug, Clone)]
pub struct Consent {
    /// Single-use form token; the page posts it back (and it is also set as
    /// a SameSite=Strict cookie by `http/`).
    pub csrf: String,
    pub client_name: String,
    pub client_id: String,
    /// The host the browser will be sent to.
    pub redirect_target: String,
    /// `scheme://host:port` of the redirect, for the page's CSP form-action.
    pub redirect_origin: Option<String>,
    pub scopes: Scopes,
    /// An error to show above the form (wrong password, …).
    pub message: Option<String>,
}

/// The posted login form.
#[derive(Debug, Clone, Default)]
pub struct LoginForm {
    pub csrf: String,
    pub username: String,
    pub password: String,
    /// True for "Allow", false for "Deny".
    pub allow: bool,
}

/// What to answer a posted login form.
#[derive(Debug, Clone)]
pub enum Finish {
    /// Send the browser to this URL (code or error).
    Redirect(String),
    /// Show the page again with a message and a fresh form token.
    Again { consent: Consent, status: u16 },
    /// Too many attempts from this source; answer 429.
    Throttled {
        consent: Consent,
        retry_after: Duration,
    },
    /// The form token is unknown, used or expired; start over.
    Expired(String),
}

/// An authorization request waiting for the person to log in.
#[derive(Debug, Clone)]
struct PendingAuth {
    client_id: String,
    client_name: String,
    redirect_uri: String,
    state: Option<String>,
    challenge: String,
    scopes: Scopes,
    resource: String,
    born: Instant,
}

/// Pending requests by form token, bounded in number and age.
#[derive(Debug, Default)]
pub(super) struct Pending {
    map: HashMap<String, PendingAuth>,
    order: VecDeque<String>,
}

const PENDING_MAX: usize = 10_000;
const PENDING_TTL: Duration = Duration::from_secs(600);

impl Pending {
    fn insert(&mut self, p: PendingAuth) -> String {
        while self.order.len() >= PENDING_MAX {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
        let csrf = new_secret("");
        self.order.push_back(csrf.clone());
        self.map.insert(csrf.clone(), p);
        csrf
    }

    /// Take (consume) a pending request by form token.
    fn take(&mut self, csrf: &str) -> Option<PendingAuth> {
        let p = self.map.remove(csrf)?;
        self.order.retain(|c| c != csrf);
        (p.born.elapsed() < PENDING_TTL).then_some(p)
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

    /// Validate an authorization request and prepare the login page.
    pub async fn authorize(&self, q: &HashMap<String, String>) -> Result<Consent, Refusal> {
        let get = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let client_id =
            get("client_id").ok_or_else(|| Refusal::Page("the request has no client_id".into()))?;
        let client = self
            .client(client_id)
            .await
            .map_err(Refusal::Page)?
            .ok_or_else(|| {
                Refusal::Page(format!(
                    "unknown client {client_id:?}; the app must register first"
                ))
            })?;
        let redirect_uri = match get("redirect_uri") {
            Some(u) => u.to_owned(),
            None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
            None => return Err(Refusal::Page("the request has no redirect_uri".into())),
        };
        if !client
            .redirect_uris
            .iter()
            .any(|r| redirect::matches(r, &redirect_uri))
        {
            return Err(Refusal::Page(format!(
                "the redirect URI {redirect_uri:?} is not registered for this app; refusing to send a code there"
            )));
        }
        // From here on the redirect URI is trusted: errors go back to the app.
        let state = get("state").map(str::to_owned);
        let back = |error: &str, desc: &str| {
            Refusal::Redirect(self.redirect_url(
                &redirect_uri,
                &[("error", error), ("error_description", desc)],
                state.as_deref(),
            ))
        };
        if get("response_type") != Some("code") {
            return Err(back(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        let challenge = get("code_challenge").ok_or_else(|| {
            back(
                "invalid_request",
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            )
        })?;
        if get("code_challenge_method") != Some("S256") {
            return Err(back(
                "invalid_request",
                "code_challenge_method must be S256 (plain is not accepted)",
            ));
        }
        if challenge.len() != 43 || !challenge.bytes().all(is_b64url) {
            return Err(back(
                "invalid_request",
                "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
            ));
        }
        let scopes = match get("scope") {
            Some(s) => Scopes::parse(s).map_err(|e| back("invalid_scope", &e))?,
            None => Scopes::all(),
        };
        let resource = self
            .check_resource(get("resource"))
            .map_err(|e| back("invalid_target", &e))?;
        let pending = PendingAuth {
            client_id: client.client_id.clone(),
            client_name: client
                .name
                .clone()
                .unwrap_or_else(|| client.client_id.clone()),
            redirect_uri,
            state,
            challenge: challenge.to_owned(),
            scopes,
            resource,
            born: Instant::now(),
        };
        Ok(self.consent(pending, None))
    }

    fn consent(&self, p: PendingAuth, message: Option<String>) -> Consent {
        let mut c = Consent {
            csrf: String::new(),
            client_name: p.client_name.clone(),
            client_id: p.client_id.clone(),
            redirect_target: redirect::display_target(&p.redirect_uri),
            redirect_origin: redirect::origin(&p.redirect_uri),
            scopes: p.scopes,
            message,
        };
        c.csrf = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p);
        c
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

    /// `redirect_uri` with `params`, `state` and `iss` added to its query.
    fn redirect_url(
        &self,
        redirect_uri: &str,
        params: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in params {
            ser.append_pair(k, v);
        }
        if let Some(s) = state {
            ser.append_pair("state", s);
        }
        ser.append_pair("iss", &self.config().issuer);
        let sep = if redirect_uri.contains('?') { '&' } else { '?' };
        format!("{redirect_uri}{sep}{}", ser.finish())
    }

    /// Handle the posted login and consent form.
    pub async fn finish(&self, form: LoginForm, source: IpAddr) -> Finish {
        let taken = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(&form.csrf);
        let Some(p) = taken else {
            return Finish::Expired("this login form has expired or was already used; go back to the app and start again".into());
        };
        let src = source.to_string();
        if !form.allow {
            self.inner.audit.security(
                "consent_deny",
                Who {
                    client_id: Some(&p.client_id),
                    source: Some(&src),
                    ..Default::default()
                },
                None,
            );
            return Finish::Redirect(self.redirect_url(
                &p.redirect_uri,
                &[
                    ("error", "access_denied"),
                    ("error_description", "the user denied access"),
                ],
                p.state.as_deref(),
            ));
        }
        if let Err(refused) = self.inner.throttle.attempt(source) {
            if refused.first {
                self.inner.audit.security(
                    "login_throttled",
                    Who {
                        user: Some(&form.username),
                        client_id: Some(&p.client_id),
                        source: Some(&src),
                        ..Default::default()
                    },
                    Some(
                        "further attempts from this source are refused until its bucket refills"
                            .into(),
                    ),
                );
            }
            let wait = refused.retry_after;
            return Finish::Throttled {
                consent: self.consent(
                    p,
                    Some(format!(
                        "Too many attempts from your address; wait {} seconds.",
                        wait.as_secs() + 1
                    )),
                ),
                retry_after: wait,
            };
        }
        let user = match self.inner.store.get_user(&form.username) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot read users");
                return Finish::Again {
                    consent: self.consent(p, Some("Internal error; try again.".into())),
                    status: 500,
                };
            }
        };
        let ok = match self
            .inner
            .hasher
            .verify(form.password, user.as_ref().map(|u| u.phc.clone()))
            .await
        {
            Ok(ok) => ok,
            Err(_) => {
                return Finish::Again {
                    consent: self.consent(
                        p,
                        Some(
                            "The server is busy checking other logins; try again in a moment."
                                .into(),
                        ),
                    ),
                    status: 503,
                };
            }
        };
        let who = Who {
            user: Some(&form.username),
            client_id: Some(&p.client_id),
            source: Some(&src),
            ..Default::default()
        };
        let Some(user) = user.filter(|_| ok) else {
            self.inner.audit.security("login_fail", who, None);
            return Finish::Again {
                consent: self.consent(p, Some("Wrong user name or password.".into())),
                status: 401,
            };
        };
        self.inner.audit.security("login_ok", who, None);
        let scopes = p
            .scopes
            .intersect(Scopes::parse(&user.scopes).unwrap_or_default());
        if scopes.is_empty() {
            self.inner.audit.security(
                "consent_deny",
                who,
                Some(format!("user holds none of [{}]", p.scopes)),
            );
            return Finish::Redirect(self.redirect_url(
                &p.redirect_uri,
                &[
                    ("error", "access_denied"),
                    (
                        "error_description",
                        "the user holds none of the requested scopes",
                    ),
                ],
                p.state.as_deref(),
            ));
        }
        match self.issue_code(&p, &user.name, scopes, &user.hosts) {
            Ok(code) => {
                self.inner
                    .audit
                    .security("consent", who, Some(format!("scopes [{scopes}]")));
                Finish::Redirect(self.redirect_url(
                    &p.redirect_uri,
                    &[("code", &code)],
                    p.state.as_deref(),
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot issue a code");
                Finish::Redirect(self.redirect_url(
                    &p.redirect_uri,
                    &[("error", "server_error")],
                    p.state.as_deref(),
                ))
            }
        }
    }

    fn issue_code(
        &self,
        p: &PendingAuth,
        user: &str,
        scopes: Scopes,
        hosts: &str,
    ) -> Result<String, crate::store::StoreError> {
        let now = now_ms();
        let grant = GrantRow {
            id: short_id("login-"),
            user_name: user.to_owned(),
            client_id: p.client_id.clone(),
            scopes: scopes.to_string(),
            hosts: hosts.to_owned(),
            resource: p.resource.clone(),
            created_ms: now,
            refreshed_ms: None,
            expires_ms: now + self.config().refresh_ttl.as_millis() as i64,
            revoked_ms: None,
            revoke_reason: None,
        };
        self.inner.store.insert_grant(&grant)?;
        let code = new_secret("mcpsh_code_");
        self.inner.store.insert_code(&CodeRow {
            hash: sha256_hex(code.as_bytes()),
            grant_id: grant.id,
            redirect_uri: p.redirect_uri.clone(),
            challenge: p.challenge.clone(),
            expires_ms: now + self.config().code_ttl.as_millis() as i64,
        })?;
        let _ = self.inner.store.prune_auth(now);
        Ok(code)
    }

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
                if let Some(g) = grant_id {
                    let _ = self
                        .inner
                        .store
                        .revoke_grant(&g, "authorization code replayed", now);
                    self.inner.audit.security(
                        "code_reuse",
                        Who {
                            client_id: Some(&client.client_id),
                            source,
                            ..Default::default()
                        },
                        Some(format!("login {g} revoked")),
                    );
                }
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
        let out = self
            .issue_pair(&grant, scopes)
            .map_err(OAuthError::server)?;
        self.inner.audit.security(
            "token_issue",
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
                if let Some(g) = grant_id {
                    let _ = self
                        .inner
                        .store
                        .revoke_grant(&g, "refresh token reused", now);
                    self.inner.audit.security(
                        "token_reuse",
                        Who {
                            client_id: Some(&client.client_id),
                            source,
                            ..Default::default()
                        },
                        Some(format!("login {g} revoked")),
                    );
                }
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
        let out = self
            .issue_pair(&grant, scopes)
            .map_err(OAuthError::server)?;
        self.inner.audit.security(
            "token_refresh",
            Who {
                user: Some(&grant.user_name),
                client_id: Some(&client.client_id),
                source,
                ..Default::default()
            },
            Some(format!("login {}", grant.id)),
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
