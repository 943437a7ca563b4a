//! `mcpsh serve`: Streamable HTTP at /mcp, with OAuth unless
//! `--insecure-no-auth` (loopback only).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;

use crate::app::App;
use crate::config::Config;

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (default 127.0.0.1:1337).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Serve without authentication, for tests on this machine only: every
    /// caller is the owner, and only loopback addresses are accepted.
    #[arg(long)]
    insecure_no_auth: bool,
    /// The URL clients use to reach this server (the OAuth issuer), e.g.
    /// https://mcp.example.com behind a proxy. Default: the listen address.
    #[arg(long, value_name = "URL")]
    public_url: Option<String>,
    /// Extra `Host` names (host or host:port) to accept, e.g. behind a proxy.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

pub(crate) async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if args.insecure_no_auth && !config.listen.ip().is_loopback() {
        bail!(
            "--insecure-no-auth only listens on loopback (127.0.0.1 or ::1), not {}; anyone who can \
             reach the port would get a shell",
            config.listen
        );
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::http::tls::load(cert, key)?),
        _ => None,
    };
    if !args.insecure_no_auth && tls.is_none() && !config.listen.ip().is_loopback() {
        bail!(
            "refusing to serve plain HTTP on {}: passwords and tokens would cross the network in clear. \
             Give --tls-cert and --tls-key, or listen on 127.0.0.1 behind a TLS proxy with --public-url https://…",
            config.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let public_url = match &args.public_url {
        Some(u) => check_public_url(u)?,
        None => format!("{scheme}://{}", display_addr(addr)),
    };
    let app = App::start(config, super::current_exe()?).await?;
    let auth = if args.insecure_no_auth {
        eprintln!(
            "mcpsh {} serving MCP at {public_url}/mcp WITHOUT AUTH (loopback only; state in {})",
            env!("CARGO_PKG_VERSION"),
            app.config.state_dir.display()
        );
        None
    } else {
        if let Some((user, password)) = crate::auth::ensure_first_user(&app.store)? {
            eprintln!(
                "created user {user:?} with password: {password}\n\
                 (shown only this once; change it with `mcpsh set-auth {user}`)"
            );
        }
        eprintln!(
            "mcpsh {} serving MCP at {public_url}/mcp (OAuth; state in {})",
            env!("CARGO_PKG_VERSION"),
            app.config.state_dir.display()
        );
        Some(crate::auth::AuthConfig::new(&public_url))
    };
    let cancel = app.cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; running jobs keep running");
        cancel.cancel();
    });
    let opts = crate::app::HttpOptions {
        extra_hosts: args.allowed_hosts,
        public_url: Some(public_url),
        auth,
        tls,
    };
    let served = app.serve_http(listener, opts).await;
    app.shutdown().await;
    served?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// `host:port`, with brackets for IPv6 and `localhost`-style names kept.
fn display_addr(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
        v4 => v4.to_string(),
    }
}

/// The public URL is the OAuth issuer: `http(s)://host[:port]`, no path,
/// query or trailing slash, so metadata URLs are exactly derivable from it.
fn check_public_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    let Some((scheme, authority)) = url.split_once("://") else {
        bail!("--public-url {url:?} must look like https://host[:port]");
    };
    let plain_ok = authority.starts_with("127.0.0.1")
        || authority.starts_with("localhost")
        || authority.starts_with("[::1]");
    if scheme != "https" && !(scheme == "http" && plain_ok) {
        bail!("--public-url {url:?} must use https (plain http only for loopback addresses)");
    }
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        bail!("--public-url {url:?} must be scheme://host[:port] with no path, query or user");
    }
    Ok(url.to_owned())
}
