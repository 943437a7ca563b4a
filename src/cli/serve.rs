//! `mcpsh serve`: Streamable HTTP at /mcp.

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
    /// Serve without authentication. Required until OAuth lands; only
    /// loopback addresses are accepted with it.
    #[arg(long)]
    insecure_no_auth: bool,
    /// Extra `Host` names (host or host:port) to accept, e.g. behind a proxy.
    #[arg(long = "allowed-host", value_name = "HOST")]
    allowed_hosts: Vec<String>,
}

pub(crate) async fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if !args.insecure_no_auth {
        bail!(
            "authentication is not available in this build, so `serve` needs --insecure-no-auth \
             (allowed on loopback addresses only): mcpsh serve --insecure-no-auth"
        );
    }
    if !config.listen.ip().is_loopback() {
        bail!(
            "--insecure-no-auth only listens on loopback (127.0.0.1 or ::1), not {}; anyone who can \
             reach the port would get a shell",
            config.listen
        );
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let app = App::start(config, super::current_exe()?).await?;
    eprintln!(
        "mcpsh {} serving MCP at http://{addr}/mcp (no auth, loopback only; state in {})",
        env!("CARGO_PKG_VERSION"),
        app.config.state_dir.display()
    );
    let cancel = app.cancel.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down; running jobs keep running");
        cancel.cancel();
    });
    let served = app.serve_http(listener, &args.allowed_hosts).await;
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
