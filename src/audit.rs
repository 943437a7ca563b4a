//! The audit trail: every tool call and security event as a structured row
//! in the state database, written before the command starts. Rows carry
//! facts (who, what, where, how it ended), never output, passwords or token
//! values. `mcpsh audit` reads them.

use crate::store::{AuditEnd, AuditRow, Store, StoreError, now_ms};

/// Who an event is about; every field optional.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    pub user: Option<&'a str>,
    pub token_id: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub source: Option<&'a str>,
}

/// What a tool call is about to do.
#[derive(Debug, Clone, Default)]
pub struct Call {
    pub tool: String,
    pub action: Option<String>,
    pub host: Option<String>,
    /// The command or path, cut to a bounded length.
    pub target: Option<String>,
}

/// Longest command or path kept in a row.
const MAX_TARGET: usize = 2048;

/// The audit writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Audit {
    store: Store,
}

impl Audit {
    pub fn new(store: Store) -> Audit {
        Audit { store }
    }

    /// Record a security event (`login_ok`, `login_fail`, `consent`,
    /// `token_issue`, `token_refresh`, `token_reuse`, `token_revoke`, …). A
    /// failure to write is logged, not raised: the event already happened.
    pub fn security(&self, event: &str, who: Who<'_>, detail: Option<String>) {
        let refused = ["fail", "reuse", "throttled", "deny"];
        let outcome = if refused.iter().any(|r| event.ends_with(r)) {
            "denied"
        } else {
            "ok"
        };
        let row = AuditRow {
            ts_ms: now_ms(),
            event: event.to_owned(),
            outcome: outcome.to_owned(),
            detail,
            ..row_for(who)
        };
        if let Err(e) = self.store.insert_audit(&row) {
            tracing::error!(error = %e, event, "cannot write audit row");
        }
    }

    /// Record that a tool call starts; returns the row id to finish. The
    /// caller must not run the call if this fails.
    pub fn call_start(&self, who: Who<'_>, call: &Call) -> Result<i64, StoreError> {
        let target = call.target.as_deref().map(|t| bounded(t, MAX_TARGET));
        self.store.insert_audit(&AuditRow {
            ts_ms: now_ms(),
            event: "tool".into(),
            tool: Some(call.tool.clone()),
            action: call.action.clone(),
            host: call.host.clone(),
            target,
            outcome: "started".into(),
            ..row_for(who)
        })
    }

    /// Record how a call ended.
    pub fn call_end(&self, id: i64, end: &AuditEnd) {
        if let Err(e) = self.store.finish_audit(id, end) {
            tracing::error!(error = %e, id, "cannot finish audit row");
        }
    }

    /// Remove rows older than `before_ms`.
    pub fn prune(&self, before_ms: i64) -> Result<usize, StoreError> {
        self.store.prune_audit(before_ms)
    }

    /// Record a call refused before it ran (scope or host).
    pub fn call_denied(&self, who: Who<'_>, call: &Call, why: &str) {
        let row = AuditRow {
            ts_ms: now_ms(),
            event: "tool".into(),
            tool: Some(call.tool.clone()),
            action: call.action.clone(),
            host: call.host.clone(),
            target: call.target.as_deref().map(|t| bounded(t, MAX_TARGET)),
            outcome: "denied".into(),
            detail: Some(why.to_owned()),
            ..row_for(who)
        };
        if let Err(e) = self.store.insert_audit(&row) {
            tracing::error!(error = %e, "cannot write audit row");
        }
    }
}

fn row_for(who: Who<'_>) -> AuditRow {
    AuditRow {
        user: who.user.map(str::to_owned),
        token_id: who.token_id.map(str::to_owned),
        client_id: who.client_id.map(str::to_owned),
        source: who.source.map(str::to_owned),
        ..Default::default()
    }
}

/// `s` cut to at most `max` bytes on a character boundary, marked if cut.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditFilter;

    #[test]
    fn calls_are_on_record_before_they_run_and_finished_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        let audit = Audit::new(store.clone());
        let who = Who {
            user: Some("ann"),
            token_id: Some("pat-1"),
            ..Default::default()
        };
        let call = Call {
            tool: "bash".into(),
            action: Some("run".into()),
            host: Some("local".into()),
            target: Some("x".repeat(5000)),
        };
        let id = audit.call_start(who, &call).unwrap();
        let rows = store
            .list_audit(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(rows[0].outcome, "started");
        assert!(rows[0].target.as_ref().unwrap().ends_with("(5000 bytes)"));
        audit.call_end(
            id,
            &AuditEnd {
                outcome: "ok".into(),
                exit_code: Some(3),
                bytes: Some(12),
                duration_ms: 7,
                detail: None,
            },
        );
        audit.security(
            "login_fail",
            Who {
                user: Some("bob"),
                ..Default::default()
            },
            None,
        );
        let rows = store
            .list_audit(&AuditFilter {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            (rows[0].outcome.as_str(), rows[0].exit_code),
            ("ok", Some(3))
        );
        assert_eq!(
            (rows[1].event.as_str(), rows[1].outcome.as_str()),
            ("login_fail", "denied")
        );
        let bob = store
            .list_audit(&AuditFilter {
                limit: 10,
                user: Some("bob".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(bob.len(), 1);
    }
}
