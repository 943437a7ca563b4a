//! Users, OAuth clients, grants, codes and tokens. Every secret arrives here
//! already hashed (SHA-256 hex); this file never sees a bearer or a password.

use rusqlite::{OptionalExtension, Row, params};

use super::{Cached, Store, StoreError};

/// A user who can log in through the browser flow.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub name: String,
    /// Argon2id PHC string.
    pub phc: String,
    /// Space-separated scopes the user may hold.
    pub scopes: String,
    /// Space-separated host patterns the user may reach.
    pub hosts: String,
    pub created_ms: i64,
    pub updated_ms: i64,
}

/// A registered OAuth client (dynamic registration or a metadata document).
#[derive(Debug, Clone)]
pub struct ClientRow {
    pub client_id: String,
    pub secret_hash: Option<String>,
    pub name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub auth_method: String,
    pub scope: Option<String>,
    /// Registered from a client ID metadata document (the id is its URL).
    pub from_url: bool,
    pub created_ms: i64,
}

/// One login of a user through one client: the family every code, access
/// token and refresh token of that login belongs to.
#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: String,
    pub user_name: String,
    pub client_id: String,
    pub scopes: String,
    pub hosts: String,
    pub resource: String,
    pub created_ms: i64,
    pub refreshed_ms: Option<i64>,
    pub expires_ms: i64,
    pub revoked_ms: Option<i64>,
    pub revoke_reason: Option<String>,
}

/// An authorization code, waiting to be exchanged once.
#[derive(Debug, Clone)]
pub struct CodeRow {
    pub hash: String,
    pub grant_id: String,
    pub redirect_uri: String,
    /// PKCE S256 challenge (base64url of SHA-256 of the verifier).
    pub challenge: String,
    pub expires_ms: i64,
}

/// What presenting a code or a refresh token found.
#[derive(Debug, Clone)]
pub enum Take<T> {
    /// Unused until now; it is now marked used.
    Fresh(T),
    /// Already used (or revoked): a replay. Carries the grant to revoke.
    Replayed {
        grant_id: Option<String>,
    },
    Missing,
}

/// Token kinds.
pub const ACCESS: &str = "access";
pub const REFRESH: &str = "refresh";
pub const PAT: &str = "pat";

/// One bearer, access, refresh or personal (`token create`).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub hash: String,
    /// Short public id shown in lists and the audit log.
    pub id: String,
    pub kind: &'static str,
    pub name: Option<String>,
    pub user_name: String,
    pub client_id: Option<String>,
    pub grant_id: Option<String>,
    pub scopes: String,
    pub hosts: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_seen_ms: Option<i64>,
}

/// A bearer looked up for a request, with what it depends on.
#[derive(Debug, Clone)]
pub struct TokenFound {
    pub token: TokenRow,
    /// The grant (family) was revoked or expired.
    pub grant_dead: bool,
    /// The user's current scopes and hosts; None when the user was removed.
    pub user: Option<(String, String)>,
}

const TOKEN_COLUMNS: &str = "t.hash, t.id, t.kind, t.name, t.user_name, t.client_id, t.grant_id, \
     t.scopes, t.hosts, t.created_ms, t.expires_ms, t.revoked_ms, t.last_seen_ms";

fn token_from_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    let kind: String = r.get(2)?;
    Ok(TokenRow {
        hash: r.get(0)?,
        id: r.get(1)?,
        kind: match kind.as_str() {
            ACCESS => ACCESS,
            REFRESH => REFRESH,
            _ => PAT,
        },
        name: r.get(3)?,
        user_name: r.get(4)?,
        client_id: r.get(5)?,
        grant_id: r.get(6)?,
        scopes: r.get(7)?,
        hosts: r.get(8)?,
        created_ms: r.get(9)?,
        expires_ms: r.get(10)?,
        revoked_ms: r.get(11)?,
        last_seen_ms: r.get(12)?,
    })
}

const GRANT_COLUMNS: &str = "id, user_name, client_id, scopes, hosts, resource, created_ms, \
     refreshed_ms, expires_ms, revoked_ms, revoke_reason";

fn grant_from_row(r: &Row<'_>) -> rusqlite::Result<GrantRow> {
    Ok(GrantRow {
        id: r.get(0)?,
        user_name: r.get(1)?,
        client_id: r.get(2)?,
        scopes: r.get(3)?,
        hosts: r.get(4)?,
        resource: r.get(5)?,
        created_ms: r.get(6)?,
        refreshed_ms: r.get(7)?,
        expires_ms: r.get(8)?,
        revoked_ms: r.get(9)?,
        revoke_reason: r.get(10)?,
    })
}

fn user_from_row(r: &Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        name: r.get(0)?,
        phc: r.get(1)?,
        scopes: r.get(2)?,
        hosts: r.get(3)?,
        created_ms: r.get(4)?,
        updated_ms: r.get(5)?,
    })
}

fn client_from_row(r: &Row<'_>) -> rusqlite::Result<ClientRow> {
    let uris: String = r.get(3)?;
    Ok(ClientRow {
        client_id: r.get(0)?,
        secret_hash: r.get(1)?,
        name: r.get(2)?,
        redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
        auth_method: r.get(4)?,
        scope: r.get(5)?,
        from_url: r.get(6)?,
        created_ms: r.get(7)?,
    })
}

impl Store {
    /// Create a user or replace its password, scopes and hosts.
    pub fn upsert_user(&self, u: &UserRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "INSERT INTO users (name, phc, scopes, hosts, created_ms, updated_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (name) DO UPDATE SET \
                 phc = excluded.phc, scopes = excluded.scopes, hosts = excluded.hosts, \
                 updated_ms = excluded.updated_ms",
                params![u.name, u.phc, u.scopes, u.hosts, u.created_ms, u.updated_ms],
            )
            .map(drop)
        })
    }

    /// Create a user only if there is no user at all; false when one exists.
    pub fn insert_first_user(&self, u: &UserRow) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = c.exec_cached(
                "INSERT INTO users (name, phc, scopes, hosts, created_ms, updated_ms) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6 WHERE NOT EXISTS (SELECT 1 FROM users)",
                params![u.name, u.phc, u.scopes, u.hosts, u.created_ms, u.updated_ms],
            )?;
            Ok(n == 1)
        })
    }

    pub fn get_user(&self, name: &str) -> Result<Option<UserRow>, StoreError> {
        self.with(|c| {
            c.one_cached(
                "SELECT name, phc, scopes, hosts, created_ms, updated_ms FROM users WHERE name = ?1",
                params![name],
                user_from_row,
            )
            .optional()
        })
    }

    pub fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT name, phc, scopes, hosts, created_ms, updated_ms FROM users ORDER BY name",
            )?
            .query_map([], user_from_row)?
            .collect()
        })
    }

    pub fn insert_client(&self, cl: &ClientRow) -> Result<(), StoreError> {
        let uris = serde_json::to_string(&cl.redirect_uris).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.exec_cached(
                "INSERT OR REPLACE INTO oauth_clients (client_id, secret_hash, name, redirect_uris, \
                 auth_method, scope, from_url, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    cl.client_id,
                    cl.secret_hash,
                    cl.name,
                    uris,
                    cl.auth_method,
                    cl.scope,
                    cl.from_url,
                    cl.created_ms
                ],
            )
            .map(drop)
        })
    }

    pub fn get_client(&self, client_id: &str) -> Result<Option<ClientRow>, StoreError> {
        self.with(|c| {
            c.one_cached(
                "SELECT client_id, secret_hash, name, redirect_uris, auth_method, scope, from_url, \
                 created_ms FROM oauth_clients WHERE client_id = ?1",
                params![client_id],
                client_from_row,
            )
            .optional()
        })
    }

    pub fn insert_grant(&self, g: &GrantRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                &format!(
                    "INSERT INTO grants ({GRANT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    g.id,
                    g.user_name,
                    g.client_id,
                    g.scopes,
                    g.hosts,
                    g.resource,
                    g.created_ms,
                    g.refreshed_ms,
                    g.expires_ms,
                    g.revoked_ms,
                    g.revoke_reason
                ],
            )
            .map(drop)
        })
    }

    pub fn get_grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        self.with(|c| {
            c.one_cached(
                &format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?1"),
                params![id],
                grant_from_row,
            )
            .optional()
        })
    }

    /// Grants newest first; `live_at` keeps only unrevoked, unexpired ones.
    pub fn list_grants(&self, live_at: Option<i64>) -> Result<Vec<GrantRow>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {GRANT_COLUMNS} FROM grants WHERE ?1 IS NULL OR \
                 (revoked_ms IS NULL AND expires_ms > ?1) ORDER BY created_ms DESC"
            ))?
            .query_map(params![live_at], grant_from_row)?
            .collect()
        })
    }

    /// Record a refresh of a grant, sliding its expiry.
    pub fn touch_grant(&self, id: &str, now_ms: i64, expires_ms: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "UPDATE grants SET refreshed_ms = ?2, expires_ms = ?3 WHERE id = ?1",
                params![id, now_ms, expires_ms],
            )
            .map(drop)
        })
    }

    /// Revoke a grant and every token of it. Returns false if it was already
    /// revoked or does not exist.
    pub fn revoke_grant(&self, id: &str, reason: &str, now_ms: i64) -> Result<bool, StoreError> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            let n = tx.exec_cached(
                "UPDATE grants SET revoked_ms = ?2, revoke_reason = ?3 WHERE id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms, reason],
            )?;
            tx.exec_cached(
                "UPDATE tokens SET revoked_ms = ?2 WHERE grant_id = ?1 AND revoked_ms IS NULL",
                params![id, now_ms],
            )?;
            tx.commit()?;
            Ok(n == 1)
        })
    }

    pub fn insert_code(&self, code: &CodeRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "INSERT INTO auth_codes (hash, grant_id, redirect_uri, challenge, expires_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    code.hash,
                    code.grant_id,
                    code.redirect_uri,
                    code.challenge,
                    code.expires_ms
                ],
            )
            .map(drop)
        })
    }

    /// Use a code: the first caller gets it, every later one sees a replay.
    pub fn take_code(&self, hash: &str, now_ms: i64) -> Result<Take<CodeRow>, StoreError> {
        self.with(|c| {
            let fresh = c
                .one_cached(
                    "UPDATE auth_codes SET used_ms = ?2 WHERE hash = ?1 AND used_ms IS NULL \
                     RETURNING hash, grant_id, redirect_uri, challenge, expires_ms",
                    params![hash, now_ms],
                    |r| {
                        Ok(CodeRow {
                            hash: r.get(0)?,
                            grant_id: r.get(1)?,
                            redirect_uri: r.get(2)?,
                            challenge: r.get(3)?,
                            expires_ms: r.get(4)?,
                        })
                    },
                )
                .optional()?;
            if let Some(code) = fresh {
                return Ok(Take::Fresh(code));
            }
            let used: Option<String> = c
                .one_cached(
                    "SELECT grant_id FROM auth_codes WHERE hash = ?1",
                    params![hash],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match used {
                Some(g) => Take::Replayed { grant_id: Some(g) },
                None => Take::Missing,
            })
        })
    }

    pub fn insert_token(&self, t: &TokenRow) -> Result<(), StoreError> {
        self.with(|c| {
            c.exec_cached(
                "INSERT INTO tokens (hash, id, kind, name, user_name, client_id, grant_id, scopes, hosts, \
                 created_ms, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    t.hash,
                    t.id,
                    t.kind,
                    t.name,
                    t.user_name,
                    t.client_id,
                    t.grant_id,
                    t.scopes,
                    t.hosts,
                    t.created_ms,
                    t.expires_ms
                ],
            )
            .map(drop)
        })
    }

    /// Look up a bearer by its hash, with its grant and user.
    pub fn find_token(&self, hash: &str, now_ms: i64) -> Result<Option<TokenFound>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS}, \
                 (g.id IS NOT NULL AND (g.revoked_ms IS NOT NULL OR g.expires_ms <= ?2)), \
                 u.scopes, u.hosts \
                 FROM tokens t LEFT JOIN grants g ON g.id = t.grant_id \
                 LEFT JOIN users u ON u.name = t.user_name WHERE t.hash = ?1"
            ))?
            .query_row(params![hash, now_ms], |r| {
                let scopes: Option<String> = r.get(14)?;
                let hosts: Option<String> = r.get(15)?;
                Ok(TokenFound {
                    token: token_from_row(r)?,
                    grant_dead: r.get(13)?,
                    user: scopes.zip(hosts),
                })
            })
            .optional()
        })
    }

    /// Mark a token seen (called at most about once a minute per token).
    pub fn touch_token(&self, hash: &str, now_ms: i64) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached("UPDATE tokens SET last_seen_ms = ?2 WHERE hash = ?1")?
                .execute(params![hash, now_ms])
                .map(drop)
        })
    }

    /// Use a refresh token for rotation: the first caller gets it, a second
    /// presentation of the same token is a replay.
    pub fn take_refresh(&self, hash: &str, now_ms: i64) -> Result<Take<TokenRow>, StoreError> {
        self.with(|c| {
            let fresh = c
                .one_cached(
                    &format!(
                        "UPDATE tokens SET used_ms = ?2 WHERE hash = ?1 AND kind = 'refresh' \
                         AND used_ms IS NULL AND revoked_ms IS NULL RETURNING {}",
                        TOKEN_COLUMNS.replace("t.", "")
                    ),
                    params![hash, now_ms],
                    token_from_row,
                )
                .optional()?;
            if let Some(t) = fresh {
                return Ok(Take::Fresh(t));
            }
            let seen: Option<Option<String>> = c
                .one_cached(
                    "SELECT grant_id FROM tokens WHERE hash = ?1 AND kind = 'refresh'",
                    params![hash],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(match seen {
                Some(grant_id) => Take::Replayed { grant_id },
                None => Take::Missing,
            })
        })
    }

    /// Revoke one token by hash (RFC 7009). A refresh token takes its grant
    /// with it. Returns the grant revoked, if any.
    pub fn revoke_token_hash(&self, hash: &str, now_ms: i64) -> Result<Option<String>, StoreError> {
        let grant: Option<(String, Option<String>)> = self.with(|c| {
            c.one_cached(
                "UPDATE tokens SET revoked_ms = coalesce(revoked_ms, ?2) WHERE hash = ?1 \
                 RETURNING kind, grant_id",
                params![hash, now_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
        })?;
        match grant {
            Some((kind, Some(g))) if kind == REFRESH => {
                self.revoke_grant(&g, "refresh token revoked", now_ms)?;
                Ok(Some(g))
            }
            _ => Ok(None),
        }
    }

    /// Revoke personal tokens by id or name; returns the ids revoked.
    pub fn revoke_pat(&self, id_or_name: &str, now_ms: i64) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE tokens SET revoked_ms = ?2 WHERE kind = 'pat' AND revoked_ms IS NULL \
                 AND (id = ?1 OR name = ?1) RETURNING id",
            )?
            .query_map(params![id_or_name, now_ms], |r| r.get(0))?
            .collect()
        })
    }

    /// Personal tokens, newest first.
    pub fn list_pats(&self) -> Result<Vec<TokenRow>, StoreError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {TOKEN_COLUMNS} FROM tokens t WHERE t.kind = 'pat' ORDER BY t.created_ms DESC"
            ))?
            .query_map([], token_from_row)?
            .collect()
        })
    }

    /// Drop what can no longer be used: codes and tokens a day past expiry,
    /// grants a day past expiry or revocation (with their tokens).
    pub fn prune_auth(&self, now_ms: i64) -> Result<(), StoreError> {
        let cutoff = now_ms - 86_400_000;
        self.with(|c| {
            c.execute_batch(&format!(
                "DELETE FROM auth_codes WHERE expires_ms < {cutoff};
                 DELETE FROM tokens WHERE expires_ms < {cutoff};
                 DELETE FROM tokens WHERE grant_id IN (SELECT id FROM grants WHERE expires_ms < {cutoff} \
                   OR revoked_ms < {cutoff});
                 DELETE FROM grants WHERE expires_ms < {cutoff} OR revoked_ms < {cutoff};"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(hash: &str, kind: &'static str, grant: Option<&str>) -> TokenRow {
        TokenRow {
            hash: hash.into(),
            id: format!("id-{hash}"),
            kind,
            name: None,
            user_name: "ann".into(),
            client_id: Some("c".into()),
            grant_id: grant.map(str::to_owned),
            scopes: "exec".into(),
            hosts: "*".into(),
            created_ms: 1,
            expires_ms: Some(10_000),
            revoked_ms: None,
            last_seen_ms: None,
        }
    }

    #[test]
    fn codes_and_refresh_tokens_are_single_use_and_revocation_takes_the_family() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        store
            .upsert_user(&UserRow {
                name: "ann".into(),
                phc: "x".into(),
                scopes: "exec".into(),
                hosts: "*".into(),
                created_ms: 1,
                updated_ms: 1,
            })
            .unwrap();
        store
            .insert_grant(&GrantRow {
                id: "g1".into(),
                user_name: "ann".into(),
                client_id: "c".into(),
                scopes: "exec".into(),
                hosts: "*".into(),
                resource: "r".into(),
                created_ms: 1,
                refreshed_ms: None,
                expires_ms: 10_000,
                revoked_ms: None,
                revoke_reason: None,
            })
            .unwrap();
        let code = CodeRow {
            hash: "code".into(),
            grant_id: "g1".into(),
            redirect_uri: "u".into(),
            challenge: "ch".into(),
            expires_ms: 100,
        };
        store.insert_code(&code).unwrap();
        assert!(
            matches!(store.take_code("code", 5).unwrap(), Take::Fresh(c) if c.challenge == "ch")
        );
        assert!(
            matches!(store.take_code("code", 6).unwrap(), Take::Replayed { grant_id: Some(g) } if g == "g1")
        );
        assert!(matches!(store.take_code("nope", 6).unwrap(), Take::Missing));

        store
            .insert_token(&token("a1", ACCESS, Some("g1")))
            .unwrap();
        store
            .insert_token(&token("r1", REFRESH, Some("g1")))
            .unwrap();
        assert!(matches!(store.take_refresh("r1", 7).unwrap(), Take::Fresh(t) if t.id == "id-r1"));
        assert!(matches!(
            store.take_refresh("r1", 8).unwrap(),
            Take::Replayed { .. }
        ));
        assert!(
            matches!(store.take_refresh("a1", 8).unwrap(), Take::Missing),
            "an access token is no refresh token"
        );

        let found = store.find_token("a1", 9).unwrap().unwrap();
        assert!(!found.grant_dead && found.user.is_some());
        assert!(store.revoke_grant("g1", "test", 9).unwrap());
        assert!(!store.revoke_grant("g1", "test", 9).unwrap());
        let found = store.find_token("a1", 9).unwrap().unwrap();
        assert!(found.grant_dead && found.token.revoked_ms.is_some());
        assert!(store.find_token("a1", 20_000).unwrap().is_some());
    }
}
