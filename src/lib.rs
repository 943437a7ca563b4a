//! mcpsh: a shell, durable jobs and files for AI agents over MCP.
//!
//! Layout (see ARCHITECTURE.md): `cli` parses commands and calls `app`, the
//! composition root, which wires `mcp` (tools, rmcp) and `http` (axum) to the
//! `jobs` engine over `host` and `store`; `auth` (users, OAuth, scopes) and
//! `audit` sit under `http`/`mcp`; `ssh` (host config, known_hosts) under `host`. `config`, `telemetry`, `fsutil`, `crypto` and `wildcard` are leaves.
#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod files;
pub mod fsutil;
pub mod host;
pub mod http;
pub mod jobs;
pub mod mcp;
pub mod sessions;
pub mod ssh;
pub mod store;
pub mod telemetry;
pub mod wildcard;
