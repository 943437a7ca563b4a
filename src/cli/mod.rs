//! Command-line interface: one file per subcommand. Parses arguments, loads
//! config and calls into `app`/`jobs`; the only place (with `main.rs`) that
//! uses `anyhow`.

mod auth_cmd;
mod config_cmd;
mod hosts_cmd;
mod jobs_cmd;
mod serve;
mod stdio;
mod terms_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "mcpsh",
    version,
    about = "A shell, durable jobs and files for AI agents over MCP"
)]
pub struct Cli {
    /// State directory (database, job spools); overrides MCPSH_STATE_DIR.
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Config file; overrides MCPSH_CONFIG.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve MCP over Streamable HTTP at /mcp.
    Serve(serve::ServeArgs),
    /// Serve MCP over stdin/stdout (for a client that spawns mcpsh).
    Stdio,
    /// List jobs (running ones unless --all).
    Jobs(jobs_cmd::JobsArgs),
    /// Act on one job.
    Job {
        #[command(subcommand)]
        action: jobs_cmd::JobAction,
    },
    /// Show configuration.
    Config {
        #[command(subcommand)]
        action: config_cmd::ConfigAction,
    },
    /// Create a user who can log in to `serve`, or change its password.
    SetAuth(auth_cmd::SetAuthArgs),
    /// Bearer tokens for headless clients.
    Token {
        #[command(subcommand)]
        action: auth_cmd::TokenAction,
    },
    /// OAuth logins per user and client, with expiry (never token values).
    Sessions(auth_cmd::SessionsArgs),
    /// Terminal sessions (the `session` tool's shells): open ones and recently closed.
    Terms(terms_cmd::TermsArgs),
    /// Watch a terminal session live (read-only; --rw to type). Ctrl-] detaches.
    Attach(terms_cmd::AttachArgs),
    /// Read the audit log: tool calls and security events.
    Audit(auth_cmd::AuditArgs),
    /// SSH hosts: list the inventory, test connections, trust host keys.
    Hosts {
        #[command(subcommand)]
        action: hosts_cmd::HostsAction,
    },
}

/// Parse arguments and run; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcpsh: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mcpsh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Serve(args) => serve::run(config, args).await,
        Command::Stdio => stdio::run(config).await,
        Command::Jobs(args) => jobs_cmd::list(config, args).await,
        Command::Job { action } => jobs_cmd::act(config, action).await,
        Command::Config { action } => config_cmd::run(config, action),
        Command::SetAuth(args) => auth_cmd::set_auth(config, args),
        Command::Token { action } => auth_cmd::token(config, action),
        Command::Sessions(args) => auth_cmd::sessions(config, args),
        Command::Audit(args) => auth_cmd::audit(config, args).await,
        Command::Hosts { action } => hosts_cmd::run(config, action).await,
        Command::Terms(args) => terms_cmd::list(config, args).await,
        Command::Attach(args) => terms_cmd::attach(config, args).await,
    }
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let overrides = |k: &str| -> Option<String> {
        match k {
            "MCPSH_CONFIG" if cli.config.is_some() => {
                cli.config.as_ref().map(|p| p.display().to_string())
            }
            "MCPSH_STATE_DIR" if cli.state_dir.is_some() => {
                cli.state_dir.as_ref().map(|p| p.display().to_string())
            }
            _ => std::env::var(k).ok(),
        }
    };
    Ok(Config::load_with(&overrides)?)
}

/// The running binary, which doubles as the job zygote.
fn current_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().map_err(|e| anyhow::anyhow!("cannot locate the mcpsh binary: {e}"))
}

/// A short human age: 42s, 5m, 3h, 2d.
pub(crate) fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// Parse a span such as `90s`, `10m`, `12h`, `30d` or `2w`.
pub(crate) fn parse_span(s: &str) -> anyhow::Result<std::time::Duration> {
    let unit = s.chars().last().unwrap_or(' ');
    let n: u64 = s[..s.len() - unit.len_utf8().min(s.len())]
        .parse()
        .map_err(|_| {
            anyhow::anyhow!(
                "bad time span {s:?}: use a number and a unit, like 90s, 10m, 12h, 30d or 2w"
            )
        })?;
    let secs = match unit {
        's' => n,
        'm' => n * 60,
        'h' => n * 3600,
        'd' => n * 86_400,
        'w' => n * 7 * 86_400,
        _ => anyhow::bail!("bad time span {s:?}: the unit must be s, m, h, d or w"),
    };
    Ok(std::time::Duration::from_secs(secs))
}
