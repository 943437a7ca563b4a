//! `/authorize`: validate the request, show the login and consent page,
//! check the password (throttled per source, before hashing), and issue a
//! single-use code bound to the client, redirect URI and PKCE challenge.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::is_b64url;
use crate::audit::Who;
use crate::auth::{Auth, Scopes, redirect};
use crate::crypto::{new_secret, sha256_hex, short_id};
use crate::store::{CodeRow, GrantRow, now_ms};

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
pub(in crate::auth) struct Pending {
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

impl Auth {
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
}
