//! `mcpsh stdio`: MCP over stdin/stdout. Logs go to stderr; stdout carries
//! protocol frames only.

use std::process::ExitCode;

use crate::app::App;
use crate::config::Config;

pub(crate) async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let app = App::start(config, super::current_exe()?).await?;
    let served = app.serve_stdio().await;
    app.shutdown().await;
    served?;
    Ok(ExitCode::SUCCESS)
}
