//! The MCP surface: the only module that knows rmcp. One file per tool; this
//! file is the `ServerHandler` that lists them and routes calls. Tools call the
//! job engine; they never spawn processes or touch SQL themselves.

mod bash;
mod fanout;
mod file;
mod hosts;
mod job;
mod render;
mod session;

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

use crate::audit::{Audit, Call, Who};
use crate::auth::{Principal, Scope};
use crate::files::Files;
use crate::jobs::Jobs;
use crate::store::AuditEnd;

const INSTRUCTIONS: &str = "mcpsh runs commands on real machines. `bash` runs a command as a job: it waits \
up to `wait` seconds and returns the result, or a job id to follow with `job action=poll`. Output is \
always bounded: an excerpt shows the head and tail and says exactly how to read what was left out. \
Commands get stdin from /dev/null (no prompts), NO_COLOR=1 and PAGER=cat. For work that needs a \
persistent shell (cd, exported variables, a virtualenv, a REPL, a prompt to answer), use `session`.";

/// What every tool needs: the engines, the audit log, and who is calling
/// when the transport does not say (stdio and `--insecure-no-auth`: the
/// owner; with auth: nobody, so a request without a principal is refused).
#[derive(Clone)]
pub struct Services {
    pub jobs: Jobs,
    pub sessions: crate::sessions::Sessions,
    pub ssh: Option<crate::ssh::Pool>,
    /// The file engines of SSH hosts (one SFTP session per host, shared).
    pub remote_files: Option<crate::files::remote::RemoteHosts>,
    pub files: Arc<Files>,
    pub audit: Audit,
    pub default_principal: Option<Principal>,
}

/// The MCP server: cheap to clone, one per connection or request.
#[derive(Clone)]
pub struct McpServer {
    jobs: Jobs,
    sessions: crate::sessions::Sessions,
    ssh: Option<crate::ssh::Pool>,
    remote_files: Option<crate::files::remote::RemoteHosts>,
    files: Arc<Files>,
    audit: Audit,
    default_principal: Option<Principal>,
}

impl McpServer {
    pub fn new(s: Services) -> McpServer {
        McpServer {
            jobs: s.jobs,
            sessions: s.sessions,
            remote_files: s.remote_files,
            ssh: s.ssh,
            files: s.files,
            audit: s.audit,
            default_principal: s.default_principal,
        }
    }

    fn tools() -> Vec<Tool> {
        vec![
            bash::tool(),
            job::tool(),
            file::read_tool(),
            file::write_tool(),
            hosts::tool(),
            session::tool(),
        ]
    }

    /// The caller: the principal `http/` attached to the request, else the
    /// transport's default.
    fn principal(&self, ctx: &RequestContext<RoleServer>) -> Result<Principal, ErrorData> {
        ctx.extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Principal>())
            .or(self.default_principal.as_ref())
            .cloned()
            .ok_or_else(|| {
                ErrorData::invalid_request("no authenticated caller for this request", None)
            })
    }
}

/// The scope a tool call needs. Unknown tools need `admin`, so a new tool
/// is closed until it is mapped here.
fn scope_for(tool: &str) -> Scope {
    match tool {
        "bash" | "job" | "hosts" | "session" => Scope::Exec,
        "file" => Scope::FilesRead,
        "file_write" => Scope::FilesWrite,
        _ => Scope::Admin,
    }
}

/// The facts of a call for the audit log and the host check, read from its
/// raw arguments so that every tool is covered the same way.
fn describe(tool: &str, args: &serde_json::Map<String, serde_json::Value>) -> (Call, Vec<String>) {
    let text = |k: &str| args.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    let host = text("host")
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".into());
    let fanout: Vec<String> = args
        .get("hosts")
        .and_then(|v| v.as_array())
        .map(|l| {
            l.iter()
                .filter_map(|h| h.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    // A fan-out call without `host` does not touch `local`, nor does `hosts`
    // or a session list (they show only the hosts the caller may reach).
    let named = text("host").is_some_and(|h| !h.is_empty());
    let lists = tool == "hosts" || (tool == "session" && text("action").as_deref() == Some("list"));
    let mut hosts = if named || (fanout.is_empty() && !lists) {
        vec![host.clone()]
    } else {
        Vec::new()
    };
    hosts.extend(fanout);
    let target = match tool {
        "bash" => text("cmd"),
        "job" => text("id"),
        "session" => text("cmd")
            .or_else(|| text("text"))
            .or_else(|| text("name")),
        _ => match (text("path"), text("to")) {
            (Some(p), Some(to)) => Some(format!("{p} -> {to}")),
            (p, _) => p,
        },
    };
    let action = text("action").or_else(|| (tool == "bash").then(|| "run".into()));
    let call = Call {
        tool: tool.to_owned(),
        action,
        host: Some(host),
        target,
    };
    (call, hosts)
}

/// How a finished call went, from its result.
fn outcome(result: &CallToolResult, started: std::time::Instant) -> AuditEnd {
    let field = |k: &str| {
        result
            .structured_content
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_i64())
    };
    AuditEnd {
        outcome: if result.is_error == Some(true) {
            "error"
        } else {
            "ok"
        }
        .into(),
        exit_code: field("exit_code").map(|c| c as i32),
        bytes: field("total_bytes")
            .or_else(|| field("bytes"))
            .map(|b| b as u64),
        duration_ms: started.elapsed().as_millis() as u64,
        detail: None,
    }
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        InitializeResult::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("mcpsh", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    /// Only the tools the caller's scopes allow are listed.
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let who = self.principal(&context)?;
        let tools = Self::tools()
            .into_iter()
            .filter(|t| who.scopes.contains(scope_for(&t.name)))
            .collect();
        Ok(ListToolsResult::with_all_items(tools))
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
        let principal = self.principal(&context)?;
        let (call, hosts) = describe(&request.name, &args);
        let hosts = self.expand_hosts(hosts);
        let who = Who {
            user: Some(&principal.user),
            token_id: principal.token_id.as_deref(),
            client_id: principal.client_id.as_deref(),
            source: principal.source.as_deref(),
        };
        let mut allowed = principal
            .require(scope_for(&request.name))
            .and_then(|()| hosts.iter().try_for_each(|h| principal.require_host(h)));
        if allowed.is_ok() && request.name == "job" && !principal.hosts.is_any() {
            allowed = self.job_host_allowed(&principal, &args).await;
        }
        if let Err(why) = allowed {
            self.audit.call_denied(who, &call, &why);
            return Ok(tool_error(why).into());
        }
        let audit_id = self.audit.call_start(who, &call).map_err(|e| {
            tracing::error!(error = %e, "cannot write the audit log; refusing the call");
            ErrorData::internal_error(
                "the audit log cannot be written, so the call was not run; check the server's disk and state directory",
                None,
            )
        })?;
        let started = std::time::Instant::now();
        let span = tracing::info_span!("tool", tool = %request.name);
        let result = self
            .dispatch(&request.name, args, &context, &principal)
            .instrument(span)
            .await;
        let end = match &result {
            Ok(r) => outcome(r, started),
            Err(e) => AuditEnd {
                outcome: "error".into(),
                duration_ms: started.elapsed().as_millis() as u64,
                detail: Some(e.message.to_string()),
                ..Default::default()
            },
        };
        self.audit.call_end(audit_id, &end);
        Ok(result?.into())
    }
}

impl McpServer {
    fn file_hosts(&self) -> file::FileHosts<'_> {
        file::FileHosts {
            local: &self.files,
            ssh: self.ssh.as_ref(),
            remote: self.remote_files.as_ref(),
        }
    }

    /// Host selectors (globs, `tag:`) as the host names they select, so a
    /// host-limited token is checked against each host a fan-out reaches.
    /// A selector that selects nothing stays as written (and is refused by
    /// a limited token; the tool reports it otherwise).
    fn expand_hosts(&self, hosts: Vec<String>) -> Vec<String> {
        let Some(pool) = &self.ssh else {
            return hosts;
        };
        let inv = pool.inventory();
        hosts
            .into_iter()
            .flat_map(|h| {
                if h.contains(['*', '?']) || h.starts_with("tag:") {
                    inv.select(std::slice::from_ref(&h))
                        .unwrap_or_else(|_| vec![h])
                } else {
                    vec![h]
                }
            })
            .collect()
    }

    /// A token limited to some hosts may act only on jobs of those hosts:
    /// the job's own host is checked (its `host` argument alone proves
    /// nothing), and a list must name an allowed host.
    async fn job_host_allowed(
        &self,
        principal: &Principal,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String> {
        match args.get("id").and_then(|v| v.as_str()) {
            Some(id) => match self.jobs.row(id).await {
                Ok(row) => principal.require_host(&row.host),
                // An unknown id: the tool itself answers that.
                Err(_) => Ok(()),
            },
            None if args.get("host").and_then(|v| v.as_str()).is_none() => Err(format!(
                "not allowed: this token may only reach hosts {}; pass `host` to list the jobs of one of them",
                principal.hosts
            )),
            None => Ok(()),
        }
    }

    async fn dispatch(
        &self,
        tool: &str,
        args: serde_json::Map<String, serde_json::Value>,
        context: &RequestContext<RoleServer>,
        principal: &Principal,
    ) -> Result<CallToolResult, ErrorData> {
        Ok(match tool {
            "bash" => bash::call(&self.jobs, self.ssh.as_ref(), parse(args)?, context).await,
            "job" => job::call(&self.jobs, parse(args)?, context).await,
            "file" => file::call_read(self.file_hosts(), self.jobs.config(), parse(args)?).await,
            "file_write" => file::call_write(self.file_hosts(), parse(args)?).await,
            "hosts" => hosts::call(self.ssh.as_ref(), principal, parse(args)?).await,
            "session" => {
                let max_wait = self.jobs.config().max_wait;
                session::call(
                    &self.sessions,
                    self.ssh.as_ref(),
                    principal,
                    max_wait,
                    parse(args)?,
                )
                .await
            }
            other => tool_error(format!(
                "unknown tool {other:?}; the tools are bash, job, file, file_write, hosts and session"
            )),
        })
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

/// Like [`define_tool`] for a tool that answers in one of two shapes: the
/// output schema is an object that is either `A` or `B`.
fn define_tool_either<P, A, B>(
    name: &'static str,
    description: &'static str,
    annotations: ToolAnnotations,
) -> Tool
where
    P: rmcp::schemars::JsonSchema + 'static,
    A: rmcp::schemars::JsonSchema + 'static,
    B: rmcp::schemars::JsonSchema + 'static,
{
    use rmcp::handler::server::common::schema_for_type;
    let mut defs = serde_json::Map::new();
    let mut branch = |schema: &serde_json::Map<String, serde_json::Value>| {
        let mut schema = schema.clone();
        for key in ["$defs", "definitions"] {
            if let Some(serde_json::Value::Object(d)) = schema.remove(key) {
                defs.extend(d);
            }
        }
        schema.remove("$schema");
        serde_json::Value::Object(schema)
    };
    let (a, b) = (
        branch(&schema_for_type::<A>()),
        branch(&schema_for_type::<B>()),
    );
    let mut root = serde_json::Map::new();
    root.insert("type".into(), "object".into());
    root.insert("anyOf".into(), serde_json::Value::Array(vec![a, b]));
    if !defs.is_empty() {
        root.insert("$defs".into(), serde_json::Value::Object(defs));
    }
    define_input_tool::<P>(name, description, annotations).with_raw_output_schema(Arc::new(root))
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
    services: Services,
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
        move || Ok(McpServer::new(services.clone())),
        Default::default(),
        config,
    )
}

/// Serve MCP over this process's stdin/stdout until the client closes it.
pub async fn serve_stdio(services: Services) -> Result<(), std::io::Error> {
    use rmcp::ServiceExt;
    let running = McpServer::new(services)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(std::io::Error::other)?;
    running.waiting().await.map_err(std::io::Error::other)?;
    Ok(())
}
