//! The MCP surface: the only module that knows rmcp. One file per tool; this
//! file is the `ServerHandler` that lists them and routes calls. Tools call the
//! job engine; they never spawn processes or touch SQL themselves.

mod bash;
mod file;
mod job;
mod render;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    InitializeResult, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use std::sync::Arc;

use crate::files::Files;
use crate::jobs::Jobs;

const INSTRUCTIONS: &str = "mcpsh runs commands on real machines. `bash` runs a command as a job: it waits \
up to `wait` seconds and returns the result, or a job id to follow with `job action=poll`. Output is \
always bounded: an excerpt shows the head and tail and says exactly how to read what was left out. \
Commands get stdin from /dev/null (no prompts), NO_COLOR=1 and PAGER=cat.";

/// The MCP server: cheap to clone, one per connection or request.
#[derive(Clone)]
pub struct McpServer {
    jobs: Jobs,
    files: Arc<Files>,
}

impl McpServer {
    pub fn new(jobs: Jobs, files: Arc<Files>) -> McpServer {
        McpServer { jobs, files }
    }

    fn tools() -> Vec<Tool> {
        vec![
            bash::tool(),
            job::tool(),
            file::read_tool(),
            file::write_tool(),
        ]
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcpsh", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(Self::tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        Self::tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let span = tracing::info_span!("tool", tool = %request.name);
        let result = match request.name.as_ref() {
            "bash" => {
                bash::call(&self.jobs, parse(args)?, &context)
                    .instrument(span)
                    .await
            }
            "job" => {
                job::call(&self.jobs, parse(args)?, &context)
                    .instrument(span)
                    .await
            }
            "file" => {
                file::call_read(&self.files, self.jobs.config(), parse(args)?)
                    .instrument(span)
                    .await
            }
            "file_write" => {
                file::call_write(&self.files, parse(args)?)
                    .instrument(span)
                    .await
            }
            other => {
                return Err(ErrorData::invalid_params(
                    format!("unknown tool {other:?}; the tools are bash, job, file and file_write"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

/// Parse tool arguments; a malformed call is a protocol error (invalid params).
fn parse<T: DeserializeOwned>(
    args: serde_json::Map<String, serde_json::Value>,
) -> Result<T, ErrorData> {
    serde_json::from_value(serde_json::Value::Object(args))
        .map_err(|e| ErrorData::invalid_params(format!("invalid arguments: {e}"), None))
}

/// A tool-level failure: the call was well-formed but could not be done.
fn tool_error(message: impl Into<String>) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message.into())])
}

/// A tool definition from its parameter type `P` and result type `R` (their
/// doc comments become the schemas the model reads).
fn define_tool<P, R>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool
where
    P: rmcp::schemars::JsonSchema + 'static,
    R: rmcp::schemars::JsonSchema + 'static,
{
    use rmcp::handler::server::common::schema_for_type;
    define_input_tool::<P>(name, description, annotations)
        .with_raw_output_schema(schema_for_type::<R>())
}

/// A tool definition from its parameter type alone, for results whose shape
/// depends on the action (no output schema).
fn define_input_tool<P: rmcp::schemars::JsonSchema + 'static>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool {
    use rmcp::handler::server::common::schema_for_type;
    Tool::new(name, description, schema_for_type::<P>()).annotate(annotations)
}

/// Annotations of a tool that runs or controls commands: anything may happen.
fn shell_annotations() -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(true)
        .idempotent(false)
        .open_world(true)
}

/// Sends progress notifications for one request, if the client asked for them.
struct Progress<'a> {
    ctx: &'a RequestContext<RoleServer>,
    token: Option<rmcp::model::ProgressToken>,
    started: std::time::Instant,
}

impl<'a> Progress<'a> {
    fn new(ctx: &'a RequestContext<RoleServer>) -> Progress<'a> {
        Progress {
            ctx,
            token: ctx.meta.get_progress_token(),
            started: std::time::Instant::now(),
        }
    }

    /// Report `bytes` of output so far; progress is the elapsed seconds.
    fn report(&self, job: &str, bytes: u64) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let secs = self.started.elapsed().as_secs_f64();
        let mut p = ProgressNotificationParam::new(token, secs.floor());
        p.message = Some(format!(
            "{job}: running {:.0}s, {} of output",
            secs,
            render::bytes(bytes)
        ));
        let peer = self.ctx.peer.clone();
        tokio::spawn(async move {
            let _ = peer.notify_progress(p).await;
        });
    }
}

/// The Streamable HTTP service for `/mcp`: stateless (every request stands
/// alone, so a server restart loses no session), JSON responses for plain
/// calls and SSE when progress is streamed. Host/Origin checks are done by
/// `http/` for every route, so rmcp's own are off.
pub fn http_service(
    jobs: Jobs,
    files: Arc<Files>,
    cancel: tokio_util::sync::CancellationToken,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    McpServer,
    rmcp::transport::streamable_http_server::session::never::NeverSessionManager,
> {
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(Some(std::time::Duration::from_secs(15)))
        .disable_allowed_hosts()
        .disable_allowed_origins()
        .with_max_request_body_bytes(4 << 20)
        .with_cancellation_token(cancel);
    StreamableHttpService::new(
        move || Ok(McpServer::new(jobs.clone(), files.clone())),
        Default::default(),
        config,
    )
}

/// Serve MCP over this process's stdin/stdout until the client closes it.
pub async fn serve_stdio(jobs: Jobs, files: Arc<Files>) -> Result<(), std::io::Error> {
    use rmcp::ServiceExt;
    let running = McpServer::new(jobs, files)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
