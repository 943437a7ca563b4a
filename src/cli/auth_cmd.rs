//! `mcpsh set-auth`, `mcpsh token create|list|revoke`, `mcpsh sessions` and
//! `mcpsh audit`: manage who may use `serve`, from the machine's shell. They
//! write the same database a running server reads, so changes apply at once.
//! Bearers are printed once, at creation; nothing here prints a secret again.

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::{age, parse_span};
use crate::app::open_store;
use crate::audit::Audit;
use crate::auth::{Hosts, NewPat, Scopes};
use crate::config::Config;
use crate::store::{AuditFilter, AuditRow, now_ms};

#[derive(Debug, Args)]
pub(crate) struct SetAuthArgs {
    /// The user to create or update.
    user: String,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    password_stdin: bool,
    /// Scopes the user may grant (comma-separated; `all` for every scope).
    #[arg(long, default_value = "all")]
    scope: String,
    /// Host patterns the user may reach (comma-separated globs).
    #[arg(long, default_value = "*")]
    hosts: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenAction {
    /// Create a bearer token for a headless client; prints it once.
    Create {
        /// A name to recognise the token by.
        #[arg(long)]
        name: String,
        /// Scopes (comma-separated): exec, files:read, files:write, transfer, forward, admin.
        #[arg(long)]
        scope: String,
        /// Host patterns the token may reach (comma-separated globs).
        #[arg(long, default_value = "*")]
        hosts: String,
        /// Lifetime such as 12h, 30d, 1w; `never` for no expiry.
        #[arg(long, default_value = "30d")]
        expires: String,
        /// The user the token acts as (default: the only user, if there is one).
        #[arg(long)]
        user: Option<String>,
    },
    /// List personal tokens (never their values).
    List,
    /// Revoke a personal token by id or name.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SessionsAction {
    /// Revoke a login (and every token of it) by id.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub(crate) struct SessionsArgs {
    #[command(subcommand)]
    action: Option<SessionsAction>,
    /// Include revoked and expired logins.
    #[arg(long)]
    all: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Keep printing new rows as they are written.
    #[arg(short, long)]
    follow: bool,
    /// Only rows about this user.
    #[arg(long)]
    user: Option<String>,
    /// Only rows newer than this (e.g. 10m, 2h, 7d).
    #[arg(long)]
    since: Option<String>,
    /// Most rows to show first.
    #[arg(short = 'n', long, default_value_t = 100)]
    limit: usize,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn set_auth(config: Config, args: SetAuthArgs) -> anyhow::Result<ExitCode> {
    let scopes = Scopes::parse(&args.scope).map_err(anyhow::Error::msg)?;
    let hosts = Hosts::parse(&args.hosts).map_err(anyhow::Error::msg)?;
    let password = if args.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    } else {
        let first = prompt_hidden(&format!("New password for {}: ", args.user))?;
        if prompt_hidden("Again: ")? != first {
            bail!("the two passwords differ; nothing changed");
        }
        first
    };
    let store = open_store(&config)?;
    crate::auth::set_user(&store, &args.user, &password, scopes, &hosts)?;
    Audit::new(store).security(
        "user_set",
        crate::audit::Who {
            user: Some(&args.user),
            ..Default::default()
        },
        Some(format!("scopes [{scopes}] hosts [{hosts}]")),
    );
    eprintln!(
        "user {:?} saved (scopes: {scopes}; hosts: {hosts})",
        args.user
    );
    Ok(ExitCode::SUCCESS)
}

/// Read a line from the terminal with echo off.
fn prompt_hidden(prompt: &str) -> anyhow::Result<String> {
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to prompt on; use --password-stdin")?;
    let saved = tcgetattr(&tty).context("cannot read terminal settings; use --password-stdin")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Flush, &quiet)?;
    let mut out = &tty;
    let _ = out.write_all(prompt.as_bytes());
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Flush, &saved);
    let _ = out.write_all(b"\n");
    read?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

pub(crate) fn token(config: Config, action: TokenAction) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    match action {
        TokenAction::Create {
            name,
            scope,
            hosts,
            expires,
            user,
        } => {
            let user = match user {
                Some(u) => u,
                None => {
                    let users = store.list_users()?;
                    match users.as_slice() {
                        [only] => only.name.clone(),
                        [] => bail!("there is no user yet; create one with `mcpsh set-auth NAME`"),
                        _ => bail!("there are several users; say which with --user"),
                    }
                }
            };
            let expires = match expires.as_str() {
                "never" => None,
                s => Some(parse_span(s)?),
            };
            let pat = NewPat {
                name,
                user,
                scopes: Scopes::parse(&scope).map_err(anyhow::Error::msg)?,
                hosts: Hosts::parse(&hosts).map_err(anyhow::Error::msg)?,
                expires,
            };
            let (bearer, row) = crate::auth::create_pat(&store, &Audit::new(store.clone()), pat)?;
            eprintln!(
                "token {} ({:?}) for user {:?}, scopes [{}], hosts [{}], {}. It is shown only now:",
                row.id,
                row.name.as_deref().unwrap_or(""),
                row.user_name,
                row.scopes,
                row.hosts,
                row.expires_ms
                    .map(|e| format!("expires in {}", age(e - now_ms())))
                    .unwrap_or_else(|| "never expires".into())
            );
            println!("{bearer}");
        }
        TokenAction::List => {
            let now = now_ms();
            println!(
                "{:<16} {:<16} {:<10} {:<24} {:<12} {:<10} {:<10}",
                "ID", "NAME", "USER", "SCOPES", "HOSTS", "EXPIRES", "LAST USED"
            );
            for t in store.list_pats()? {
                let expires = match (t.revoked_ms, t.expires_ms) {
                    (Some(_), _) => "revoked".to_owned(),
                    (None, Some(e)) if e <= now => "expired".to_owned(),
                    (None, Some(e)) => format!("in {}", age(e - now)),
                    (None, None) => "never".to_owned(),
                };
                let seen = t
                    .last_seen_ms
                    .map(|s| format!("{} ago", age(now - s)))
                    .unwrap_or_else(|| "never".into());
                println!(
                    "{:<16} {:<16} {:<10} {:<24} {:<12} {:<10} {:<10}",
                    t.id,
                    t.name.as_deref().unwrap_or(""),
                    t.user_name,
                    t.scopes.replace(' ', ","),
                    t.hosts.replace(' ', ","),
                    expires,
                    seen
                );
            }
        }
        TokenAction::Revoke { id } => {
            let ids = store.revoke_pat(&id, now_ms())?;
            if ids.is_empty() {
                bail!("no live personal token with id or name {id:?} (see `mcpsh token list`)");
            }
            Audit::new(store.clone()).security(
                "token_revoke",
                crate::audit::Who {
                    token_id: Some(&ids.join(",")),
                    ..Default::default()
                },
                Some("revoked from the command line".into()),
            );
            eprintln!("revoked {}", ids.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn sessions(config: Config, args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    let now = now_ms();
    if let Some(SessionsAction::Revoke { id }) = args.action {
        if !store.revoke_grant(&id, "revoked from the command line", now)? {
            bail!("no live login {id:?} (see `mcpsh sessions`)");
        }
        Audit::new(store).security(
            "token_revoke",
            crate::audit::Who::default(),
            Some(format!("login {id} revoked from the command line")),
        );
        eprintln!("revoked login {id} and its tokens");
        return Ok(ExitCode::SUCCESS);
    }
    let grants = store.list_grants((!args.all).then_some(now))?;
    println!(
        "{:<18} {:<10} {:<28} {:<30} {:<10} {:<12} {:<10}",
        "ID", "USER", "CLIENT", "SCOPES", "STARTED", "LAST REFRESH", "EXPIRES"
    );
    for g in grants {
        let client = store
            .get_client(&g.client_id)?
            .and_then(|c| c.name)
            .unwrap_or_else(|| g.client_id.clone());
        let expires = match g.revoked_ms {
            Some(_) => format!("revoked ({})", g.revoke_reason.as_deref().unwrap_or("")),
            None if g.expires_ms <= now => "expired".into(),
            None => format!("in {}", age(g.expires_ms - now)),
        };
        println!(
            "{:<18} {:<10} {:<28} {:<30} {:<10} {:<12} {}",
            g.id,
            g.user_name,
            client.chars().take(28).collect::<String>(),
            g.scopes.replace(' ', ","),
            format!("{} ago", age(now - g.created_ms)),
            g.refreshed_ms
                .map(|r| format!("{} ago", age(now - r)))
                .unwrap_or_else(|| "-".into()),
            expires
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn audit(config: Config, args: AuditArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(&config)?;
    let since_ms = match &args.since {
        Some(s) => Some(now_ms() - parse_span(s)?.as_millis() as i64),
        None => None,
    };
    let mut filter = AuditFilter {
        since_ms,
        user: args.user.clone(),
        after_id: None,
        limit: args.limit,
    };
    let mut out = std::io::stdout().lock();
    if !args.json {
        writeln!(
            out,
            "{:<19} {:<14} {:<10} {:<12} {:<22} {:<8} {:<5} TARGET / DETAIL",
            "TIME (UTC)", "EVENT", "USER", "TOKEN", "TOOL/ACTION@HOST", "OUTCOME", "EXIT"
        )?;
    }
    loop {
        let rows = store.list_audit(&filter)?;
        for r in &rows {
            print_row(&mut out, r, args.json)?;
        }
        out.flush()?;
        if let Some(last) = rows.last() {
            filter.after_id = Some(last.id);
        }
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        filter.limit = 1000;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print_row(out: &mut impl Write, r: &AuditRow, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
    }
    let what = match (&r.tool, &r.action, &r.host) {
        (Some(t), a, h) => format!(
            "{t}{}{}",
            a.as_deref().map(|a| format!("/{a}")).unwrap_or_default(),
            h.as_deref().map(|h| format!("@{h}")).unwrap_or_default()
        ),
        _ => r.client_id.clone().unwrap_or_default(),
    };
    let target: String = r
        .target
        .as_deref()
        .or(r.detail.as_deref())
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    writeln!(
        out,
        "{:<19} {:<14} {:<10} {:<12} {:<22} {:<8} {:<5} {}",
        utc(r.ts_ms),
        r.event,
        r.user.as_deref().unwrap_or("-"),
        r.token_id.as_deref().unwrap_or("-"),
        what.chars().take(22).collect::<String>(),
        r.outcome,
        r.exit_code.map(|c| c.to_string()).unwrap_or_default(),
        target
    )
}

/// `YYYY-MM-DD HH:MM:SS` in UTC (civil-from-days, Howard Hinnant).
fn utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        assert_eq!(super::utc(1_795_000_000_000), "2026-11-18 11:06:40");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
