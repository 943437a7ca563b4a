//! Logging setup: `tracing` to stderr only (stdout is reserved for protocol
//! frames in stdio mode). A leaf module.

use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `MCPSH_LOG` (or `RUST_LOG`) sets the filter;
/// the default is `info` for mcpsh and `warn` for dependencies.
pub fn init() {
    let filter = std::env::var("MCPSH_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "warn,mcpsh=info".to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
