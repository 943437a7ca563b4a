//! The `hosts` tool: the SSH inventory (`list`), connection checks (`test`),
//! and a machine summary in one round trip (`info`).

use rmcp::model::{CallToolResult, ContentBlock, Tool, ToolAnnotations};
use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

use super::{define_input_tool, tool_error};
use crate::auth::Principal;
use crate::ssh::{Pool, cmdline};

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Action {
    /// Every host with its tags and connection state.
    List,
    /// Connect afresh, verify the host key, log in and run `true`; timings of each step.
    Test,
    /// OS, kernel, uptime, CPUs, memory and disks of the host, in one round trip.
    Info,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HostsParams {
    pub(crate) action: Action,
    /// The host for test and info.
    #[serde(default)]
    pub(crate) host: Option<String>,
    /// Several hosts for test and info (names, globs like "web-*", "tag:NAME").
    #[serde(default)]
    pub(crate) hosts: Option<Vec<String>>,
}

pub(crate) fn tool() -> Tool {
    define_input_tool::<HostsParams>(
        "hosts",
        "The SSH hosts this server can reach (from ~/.ssh/config and hosts.toml). `list`: names, tags, \
         where each is defined and whether a connection is open. `test`: connect afresh, verify the host \
         key, log in, run `true`, and report each step's time (or exactly why it failed and what to do). \
         `info`: OS, kernel, uptime, CPUs, memory and disks in one round trip. Use a host's name as \
         `host` in bash, job and file.",
        ToolAnnotations::new()
            .read_only(true)
            .destructive(false)
            .idempotent(true)
            .open_world(true),
    )
}

#[derive(Debug, Serialize)]
struct ListEntry {
    name: String,
    tags: Vec<String>,
    source: &'static str,
    connected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected_secs: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    channels_in_use: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_secs: Option<u64>,
}

/// Facts `info` reads, one `key=value` per line.
const INFO_SCRIPT: &str = r#"
echo "hostname=$(hostname 2>/dev/null || uname -n)"
if [ -r /etc/os-release ]; then . /etc/os-release; echo "os=${PRETTY_NAME:-$NAME}"; else echo "os=$(uname -s)"; fi
echo "kernel=$(uname -sr)"
echo "arch=$(uname -m)"
[ -r /proc/uptime ] && echo "uptime_secs=$(cut -d. -f1 /proc/uptime)"
[ -r /proc/loadavg ] && echo "load=$(cut -d' ' -f1-3 /proc/loadavg)"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)"
if [ -r /proc/meminfo ]; then
  awk '/^MemTotal:/ {print "mem_total_kib=" $2} /^MemAvailable:/ {print "mem_available_kib=" $2}' /proc/meminfo
fi
df -P -k 2>/dev/null | awk 'NR>1 && $1 !~ /^(tmpfs|devtmpfs|overlay|udev|none)$/ {print "disk=" $6 " " $2 " " $4 " " $5}' | head -n 20
"#;

pub(crate) async fn call(
    pool: Option<&Pool>,
    principal: &Principal,
    p: HostsParams,
) -> CallToolResult {
    let Some(pool) = pool else {
        return tool_error(
            "no SSH hosts are configured: add Host entries to ~/.ssh/config or [[host]] entries to \
             hosts.toml, then call again",
        );
    };
    match p.action {
        Action::List => list(pool, principal),
        Action::Test | Action::Info => {
            let mut selectors: Vec<String> = p.hosts.unwrap_or_default();
            selectors.extend(p.host.filter(|h| !h.trim().is_empty()));
            if selectors.is_empty() {
                return tool_error("give `host` (or `hosts`) for test and info");
            }
            let names = match pool.inventory().select(&selectors) {
                Ok(n) => n,
                Err(e) => return tool_error(e.to_string()),
            };
            let results = futures_join(names.iter().map(|name| {
                let (pool, name, action) = (pool.clone(), name.clone(), p.action);
                async move {
                    let r = match action {
                        Action::Test => pool
                            .test(&name)
                            .await
                            .map(|r| serde_json::to_value(r).unwrap_or_default()),
                        _ => info(&pool, &name).await,
                    };
                    (name, r)
                }
            }))
            .await;
            let mut text = String::new();
            let mut failed = 0;
            let entries: Vec<serde_json::Value> = results
                .into_iter()
                .map(|(name, r)| match r {
                    Ok(v) => {
                        text.push_str(&format!("{name}: ok {v}\n"));
                        serde_json::json!({"host": name, "ok": true, "result": v})
                    }
                    Err(e) => {
                        failed += 1;
                        text.push_str(&format!("{name}: FAILED — {e}\n"));
                        serde_json::json!({"host": name, "ok": false, "error": e.to_string()})
                    }
                })
                .collect();
            let value = serde_json::json!({"hosts": entries, "failed": failed});
            let mut r = if failed > 0 {
                CallToolResult::error(vec![ContentBlock::text(text)])
            } else {
                CallToolResult::success(vec![ContentBlock::text(text)])
            };
            r.structured_content = Some(value);
            r
        }
    }
}

/// Runs every future concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    out
}

fn list(pool: &Pool, principal: &Principal) -> CallToolResult {
    let inv = pool.inventory();
    let entries: Vec<ListEntry> = inv
        .hosts()
        .iter()
        .filter(|h| principal.require_host(&h.name).is_ok())
        .map(|h| {
            let state = pool.state(&h.name);
            ListEntry {
                name: h.name.clone(),
                tags: h.tags.clone(),
                source: match (h.in_ssh_config, h.in_hosts_toml) {
                    (true, true) => "ssh config + hosts.toml",
                    (true, false) => "ssh config",
                    _ => "hosts.toml",
                },
                connected: state.as_ref().is_some_and(|s| s.connected),
                connected_secs: state.as_ref().map(|s| s.age_secs),
                channels_in_use: state.as_ref().map(|s| s.channels_in_use),
                idle_secs: state.as_ref().map(|s| s.idle_secs),
            }
        })
        .collect();
    let mut text = format!("{} hosts\n", entries.len());
    for e in &entries {
        text.push_str(&format!(
            "{}{}{}{}\n",
            e.name,
            if e.tags.is_empty() {
                String::new()
            } else {
                format!(" [{}]", e.tags.join(","))
            },
            format_args!(" · {}", e.source),
            if e.connected { " · connected" } else { "" }
        ));
    }
    let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
    r.structured_content = Some(serde_json::json!({ "hosts": entries }));
    r
}

async fn info(pool: &Pool, name: &str) -> Result<serde_json::Value, crate::ssh::SshError> {
    let exec = cmdline::argv(&["sh", "-c", INFO_SCRIPT])
        .map_err(|e| crate::ssh::SshError::Config(e.to_string()))?;
    let out = pool.run(name, &exec, b"", 64 * 1024).await?;
    let mut facts = serde_json::Map::new();
    let mut disks = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "disk" {
            let f: Vec<&str> = v.split_whitespace().collect();
            if let [mount, total, avail, used_pct] = f[..] {
                disks.push(serde_json::json!({
                    "mount": mount,
                    "total_kib": total.parse::<u64>().ok(),
                    "available_kib": avail.parse::<u64>().ok(),
                    "used": used_pct,
                }));
            }
        } else if let Ok(n) = v.trim().parse::<u64>() {
            facts.insert(k.to_owned(), n.into());
        } else {
            facts.insert(k.to_owned(), v.trim().into());
        }
    }
    facts.insert("disks".into(), disks.into());
    Ok(serde_json::Value::Object(facts))
}
