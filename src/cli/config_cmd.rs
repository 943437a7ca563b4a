//! `mcpsh config show`: the effective configuration.

use std::process::ExitCode;

use clap::Subcommand;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Print the effective configuration (defaults < file < environment < flags).
    Show,
}

pub(crate) fn run(config: Config, action: ConfigAction) -> anyhow::Result<ExitCode> {
    match action {
        ConfigAction::Show => print!("{}", config.to_toml()),
    }
    Ok(ExitCode::SUCCESS)
}
