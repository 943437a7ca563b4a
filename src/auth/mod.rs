//! Users, bearer tokens, the OAuth 2.1 authorization server's logic, scopes
//! and login throttling. Knows nothing of HTTP or MCP: `http/` hands it parsed
//! requests and renders what it answers; `mcp/` asks a [`Principal`] whether a
//! call is allowed. Secrets are hashed (SHA-256, Argon2id for passwords)
//! before they reach `store/`, and never logged.

pub mod cimd;
pub mod oauth;
pub mod password;
pub mod redirect;
pub mod scope;
pub mod throttle;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use scope::{Hosts, Scope, Scopes};

use crate::audit::Audit;
use crate::crypto::{new_secret, sha256_hex, short_id};
use crate::store::{PAT, Store, StoreError, TokenRow, UserRow, now_ms};

/// Token prefixes: they tell a human (and secret scanners) what a string is.
pub const ACCESS_PREFIX: &str = "mcpsh_at_";
pub const REFRESH_PREFIX: &str = "mcpsh_rt_";
pub const PAT_PREFIX: &str = "mcpsh_pat_";

/// Who is calling, and what they may do. Built from a bearer for HTTP, or
/// the local owner for stdio and `--insecure-no-auth`.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub token_id: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Scopes,
    pub hosts: Hosts,
    pub source: Option<String>,
}

impl Principal {
    /// The person at this machine: every scope on every host.
    pub fn owner(user: impl Into<String>) -> Principal {
        Principal {
            user: user.into(),
            token_id: None,
            client_id: None,
            scopes: Scopes::all(),
            hosts: Hosts::any(),
            source: None,
        }
    }

    /// Refusal text for a missing scope, written for the model reading it.
    pub fn require(&self, scope: Scope) -> Result<(), String> {
        if self.scopes.contains(scope) {
            return Ok(());
        }
        Err(format!(
            "not allowed: this needs the `{}` scope, and the token in use has only [{}]. \
             Ask the user for a token or login that includes `{}`.",
            scope.as_str(),
            self.scopes,
            scope.as_str()
        ))
    }

    /// Refusal text for a host outside the allowed patterns.
    pub fn require_host(&self, host: &str) -> Result<(), String> {
        if self.hosts.allows(host) {
            return Ok(());
        }
        Err(format!(
            "not allowed: host {host:?} is outside the hosts this token may reach ({}).",
            self.hosts
        ))
    }
}

/// Why a bearer was refused (the text goes into `WWW-Authenticate`).
#[derive(Debug, thiserror::Error)]
pub enum BearerError {
    #[error("the access token is unknown, revoked or expired")]
    Invalid,
    #[error("state database: {0}")]
    Store(#[from] StoreError),
}

/// Errors of the admin operations (CLI).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Lifetimes and the server's identity.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The public URL without a trailing slash: the OAuth issuer.
    pub issuer: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub code_ttl: Duration,
    pub throttle: throttle::Rate,
    /// Password verifications that may run at once.
    pub max_hashes: usize,
    pub cimd: cimd::FetchPolicy,
}

impl AuthConfig {
    pub fn new(issuer: &str) -> AuthConfig {
        AuthConfig {
            issuer: issuer.trim_end_matches('/').to_owned(),
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(30 * 86_400),
            code_ttl: Duration::from_secs(60),
            throttle: throttle::Rate::default(),
            max_hashes: 2,
            cimd: cimd::FetchPolicy::default(),
        }
    }

    /// The protected resource: the MCP endpoint.
    pub fn resource(&self) -> String {
        format!("{}/mcp", self.issuer)
    }
}

/// The auth service for a running server. Cheap to clone.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cfg: AuthConfig,
    audit: Audit,
    hasher: password::Hasher,
    throttle: throttle::Throttle,
    pending: Mutex<oauth::Pending>,
    /// When each token hash was last recorded as seen, to write that at most
    /// once a minute.
    seen: Mutex<HashMap<String, i64>>,
}

impl Auth {
    pub fn new(store: Store, audit: Audit, cfg: AuthConfig) -> Auth {
        Auth {
            inner: Arc::new(Inner {
                hasher: password::Hasher::new(cfg.max_hashes, Duration::from_secs(5)),
                throttle: throttle::Throttle::new(cfg.throttle),
                pending: Mutex::new(oauth::Pending::default()),
                seen: Mutex::new(HashMap::new()),
                store,
                cfg,
                audit,
            }),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.inner.cfg
    }

    /// Password verifications done so far (for the throttling benchmark).
    pub fn hashes_done(&self) -> u64 {
        self.inner.hasher.count()
    }

    /// Resolve `Authorization: Bearer …` to a principal. A token's scopes and
    /// hosts are narrowed by its user's current ones, so narrowing a user
    /// narrows every token at once.
    pub fn verify_bearer(
        &self,
        bearer: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal, BearerError> {
        let now = now_ms();
        let hash = sha256_hex(bearer.as_bytes());
        let found = self
            .inner
            .store
            .find_token(&hash, now)?
            .ok_or(BearerError::Invalid)?;
        let t = &found.token;
        let live = t.kind != crate::store::REFRESH
            && t.revoked_ms.is_none()
            && t.expires_ms.is_none_or(|e| e > now)
            && !found.grant_dead;
        let Some((user_scopes, user_hosts)) = found.user.as_ref().filter(|_| live) else {
            return Err(BearerError::Invalid);
        };
        let scopes = Scopes::parse(&t.scopes)
            .unwrap_or_default()
            .intersect(Scopes::parse(user_scopes).unwrap_or_default());
        let hosts = Hosts::parse(&t.hosts)
            .and_then(|h| Ok(h.narrow(&Hosts::parse(user_hosts)?)))
            .map_err(|_| BearerError::Invalid)?;
        self.note_seen(&hash, now);
        Ok(Principal {
            user: t.user_name.clone(),
            token_id: Some(t.id.clone()),
            client_id: t.client_id.clone(),
            scopes,
            hosts,
            source: source.map(|s| s.to_string()),
        })
    }

    fn note_seen(&self, hash: &str, now: i64) {
        let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(hash).is_some_and(|at| now - at < 60_000) {
            return;
        }
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(hash.to_owned(), now);
        drop(seen);
        if let Err(e) = self.inner.store.touch_token(hash, now) {
            tracing::warn!(error = %e, "cannot record token use");
        }
    }
}

/// Create a user or change its password, scopes and hosts.
pub fn set_user(
    store: &Store,
    name: &str,
    password: &str,
    scopes: Scopes,
    hosts: &Hosts,
) -> Result<(), AuthError> {
    check_user_name(name)?;
    if password.chars().count() < 12 {
        return Err(AuthError::Invalid(
            "password too short: use at least 12 characters".into(),
        ));
    }
    let now = now_ms();
    let created = store.get_user(name)?.map_or(now, |u| u.created_ms);
    store.upsert_user(&UserRow {
        name: name.to_owned(),
        phc: password::hash(password),
        scopes: scopes.to_string(),
        hosts: hosts.to_string(),
        created_ms: created,
        updated_ms: now,
    })?;
    Ok(())
}

fn check_user_name(name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "bad user name {name:?}: use 1-64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// On a server's first start with no user: create `admin` with a random
/// password and return it, to be shown once.
pub fn ensure_first_user(store: &Store) -> Result<Option<(String, String)>, AuthError> {
    if !store.list_users()?.is_empty() {
        return Ok(None);
    }
    let password = new_secret("");
    let now = now_ms();
    let created = store.insert_first_user(&UserRow {
        name: "admin".into(),
        phc: password::hash(&password),
        scopes: Scopes::all().to_string(),
        hosts: Hosts::any().to_string(),
        created_ms: now,
        updated_ms: now,
    })?;
    Ok(created.then(|| ("admin".to_owned(), password)))
}

/// A personal token for a headless client, as `mcpsh token create` makes.
pub struct NewPat {
    pub name: String,
    pub user: String,
    pub scopes: Scopes,
    pub hosts: Hosts,
    pub expires: Option<Duration>,
}

/// Create a personal token; returns the bearer (shown once) and its row.
pub fn create_pat(
    store: &Store,
    audit: &Audit,
    p: NewPat,
) -> Result<(String, TokenRow), AuthError> {
    let user = store.get_user(&p.user)?.ok_or_else(|| {
        AuthError::Invalid(format!(
            "no user {:?}; create it with `mcpsh set-auth {}`",
            p.user, p.user
        ))
    })?;
    let allowed = Scopes::parse(&user.scopes).unwrap_or_default();
    if !p.scopes.is_subset(allowed) {
        return Err(AuthError::Invalid(format!(
            "user {:?} may only hold [{allowed}]; asked for [{}]",
            p.user, p.scopes
        )));
    }
    if p.scopes.is_empty() {
        return Err(AuthError::Invalid(
            "a token needs at least one scope".into(),
        ));
    }
    let bearer = new_secret(PAT_PREFIX);
    let now = now_ms();
    let row = TokenRow {
        hash: sha256_hex(bearer.as_bytes()),
        id: short_id("pat-"),
        kind: PAT,
        name: Some(p.name),
        user_name: p.user,
        client_id: None,
        grant_id: None,
        scopes: p.scopes.to_string(),
        hosts: p.hosts.to_string(),
        created_ms: now,
        expires_ms: p.expires.map(|d| now + d.as_millis() as i64),
        revoked_ms: None,
        last_seen_ms: None,
    };
    store.insert_token(&row)?;
    audit.security(
        "token_issue",
        crate::audit::Who {
            user: Some(&row.user_name),
            token_id: Some(&row.id),
            ..Default::default()
        },
        Some(format!(
            "personal token {:?} scopes [{}]",
            row.name.as_deref().unwrap_or(""),
            row.scopes
        )),
    );
    Ok((bearer, row))
}
