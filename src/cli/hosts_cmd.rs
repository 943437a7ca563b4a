//! `mcpsh hosts list|test|trust`: the SSH inventory, connection checks, and
//! the only way a host key gets added to known_hosts (a human runs it).

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::ssh::Pool;

#[derive(Debug, Subcommand)]
pub(crate) enum HostsAction {
    /// Every host of the inventory (ssh config aliases and hosts.toml).
    List(ListArgs),
    /// Connect afresh, verify the host key, log in, run `true`; print timings.
    Test {
        /// Host names (inventory aliases).
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a host's key and add it to known_hosts after you confirm it.
    Trust {
        name: String,
        /// Add the key without asking (only after checking its fingerprint
        /// another way).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Resolve each host through the ssh config (user, address, jumps).
    #[arg(long, short)]
    long: bool,
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(config: Config, action: HostsAction) -> anyhow::Result<ExitCode> {
    let pool = Pool::load(config.ssh.clone())?;
    match action {
        HostsAction::List(args) => list(&pool, args).await,
        HostsAction::Test { names } => {
            let mut failed = false;
            for name in names {
                match pool.test(&name).await {
                    Ok(r) => {
                        let via = if r.via.is_empty() {
                            String::new()
                        } else {
                            format!(" via {}", r.via.join(" → "))
                        };
                        println!(
                            "{}: ok — {}@{}{via}\n  {}\n  resolve {:.1} ms, tcp {:.1} ms, \
                             handshake {:.1} ms, login {:.1} ms ({}), exec {:.1} ms, total {:.1} ms",
                            r.host,
                            r.user,
                            r.address,
                            r.host_key,
                            r.resolve_ms,
                            r.timings.tcp_ms,
                            r.timings.kex_ms,
                            r.timings.auth_ms,
                            r.timings.auth_method,
                            r.exec_ms,
                            r.total_ms
                        );
                    }
                    Err(e) => {
                        failed = true;
                        println!("{name}: FAILED — {e}");
                    }
                }
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        HostsAction::Trust { name, yes } => trust(&pool, &name, yes).await,
    }
}

async fn list(pool: &Pool, args: ListArgs) -> anyhow::Result<ExitCode> {
    let inv = pool.inventory();
    let mut rows = Vec::new();
    for h in inv.hosts() {
        let mut row = serde_json::json!({
            "name": h.name,
            "tags": h.tags,
            "source": match (h.in_ssh_config, h.in_hosts_toml) {
                (true, true) => "ssh config + hosts.toml",
                (true, false) => "ssh config",
                _ => "hosts.toml",
            },
        });
        if args.long || args.json {
            match pool.resolve(&h.name).await {
                Ok(c) => {
                    row["user"] = c.user.clone().into();
                    row["address"] = format!("{}:{}", c.host_name, c.port).into();
                    row["via"] = c
                        .proxy_jump
                        .iter()
                        .map(|j| j.spec.clone())
                        .collect::<Vec<_>>()
                        .into();
                }
                Err(e) => row["error"] = e.to_string().into(),
            }
        }
        rows.push(row);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!(
            "no hosts: add Host entries to {} or [[host]] entries to {}",
            pool.config().config.display(),
            pool.config().hosts_toml.display()
        );
    }
    for r in rows {
        let s = |k: &str| r[k].as_str().unwrap_or("").to_owned();
        let tags = r["tags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(|v| v.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let mut line = format!("{:<24} {:<24}", s("name"), s("source"));
        if args.long {
            let target = if r.get("error").is_some() {
                format!("error: {}", s("error"))
            } else {
                format!("{}@{}", s("user"), s("address"))
            };
            line.push_str(&format!(" {target:<36}"));
        }
        if !tags.is_empty() {
            line.push_str(&format!(" tags={tags}"));
        }
        println!("{}", line.trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

async fn trust(pool: &Pool, name: &str, yes: bool) -> anyhow::Result<ExitCode> {
    use crate::ssh::known_hosts::Verdict;
    let scanned = pool.scan(name).await?;
    let message = scanned.verdict.message(name);
    if scanned.verdict.is_trusted() {
        println!("{message}");
        println!("nothing to do: the key is already trusted");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(file) = scanned.host.user_known_hosts_files.first().cloned() else {
        anyhow::bail!("{name} has no UserKnownHostsFile to add the key to");
    };
    println!(
        "{name} ({}) presents this {} key:\n  {}",
        scanned.name, scanned.key_type, scanned.fingerprint
    );
    if matches!(
        scanned.verdict,
        Verdict::Changed { .. } | Verdict::Revoked { .. }
    ) {
        println!("{message}");
    }
    let same_type_known = |expected: &[crate::ssh::known_hosts::PublicKeyEntry]| {
        expected.iter().any(|e| e.key_type == scanned.key_type)
    };
    match &scanned.verdict {
        Verdict::Revoked { .. } => anyhow::bail!("a revoked key is never added"),
        Verdict::Changed { expected, .. } if same_type_known(expected) => anyhow::bail!(
            "the host already has a different key of this type; if the change is expected, \
             remove the old line first (ssh-keygen -R '{}' -f {}) and run this again",
            scanned.name,
            file.display()
        ),
        _ => {}
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            anyhow::bail!(
                "not adding the key without confirmation: run this in a terminal, or pass \
                 --yes after checking the fingerprint another way"
            );
        }
        print!(
            "Compare the fingerprint with the one the host's admin sees \
             (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub).\nAdd it to {}? [y/N] ",
            file.display()
        );
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not added");
            return Ok(ExitCode::FAILURE);
        }
    }
    let host = crate::ssh::known_name(&scanned.host);
    crate::ssh::known_hosts::append_trusted(
        &file,
        &host,
        scanned.host.port,
        &scanned.key_type,
        &scanned.blob,
    )?;
    println!(
        "added {} {} to {}",
        scanned.name,
        scanned.fingerprint,
        file.display()
    );
    Ok(ExitCode::SUCCESS)
}
