//! One SSH connection: TCP (or a ProxyJump hop's forwarded channel), key
//! exchange with the host key checked against known_hosts, and login by
//! ssh-agent or key files. The pool (`pool.rs`) shares connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, AuthResult, Handle};
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};

use super::SshError;
use super::config::HostConfig;
use super::known_hosts::{KnownHosts, Verdict};

/// What the handler saw of the server's key.
#[derive(Debug, Clone)]
pub(crate) struct SeenKey {
    pub key_type: String,
    pub blob: Vec<u8>,
    pub verdict: Verdict,
}

/// The russh handler: checks the host key and remembers the verdict so a
/// refusal can be explained.
pub(crate) struct Client {
    /// The name known_hosts is searched for (HostKeyAlias or HostName).
    name: String,
    port: u16,
    known: Arc<KnownHosts>,
    seen: Arc<Mutex<Option<SeenKey>>>,
    /// Refuse every key after recording it (`hosts trust` reads the key).
    scan_only: bool,
    /// Why the connection ended, once it has.
    ended: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates are not negotiated (no cert algorithms are
            // offered), so this is a server ignoring the negotiation.
            return Ok(false);
        };
        let blob = key.to_bytes().unwrap_or_default();
        let key_type = key.algorithm().as_str().to_owned();
        let verdict = self.known.check(&self.name, self.port, &key_type, &blob);
        let trusted = verdict.is_trusted() && !self.scan_only;
        *super::lock(&self.seen) = Some(SeenKey {
            key_type,
            blob,
            verdict,
        });
        Ok(trusted)
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let why = match &reason {
            client::DisconnectReason::ReceivedDisconnect(info) => {
                format!("the server closed the connection ({:?})", info.reason_code)
            }
            client::DisconnectReason::Error(e) => format!("the connection failed: {e}"),
        };
        super::lock(&self.ended).get_or_insert(why);
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

/// Timings of one connection, for `hosts test`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConnectTimings {
    /// TCP connect (or the hop's channel open), milliseconds.
    pub tcp_ms: f64,
    /// Banner exchange, key exchange and host-key check.
    pub kex_ms: f64,
    pub auth_ms: f64,
    /// How the login succeeded: `agent KEY-FINGERPRINT` or `key PATH`.
    pub auth_method: String,
}

/// An authenticated connection to one hop or host.
pub(crate) struct Connected {
    pub handle: Handle<Client>,
    /// Why the connection ended, once it has.
    pub ended: Arc<Mutex<Option<String>>>,
    pub seen: SeenKey,
    pub timings: ConnectTimings,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

pub(crate) fn russh_config(host: &HostConfig) -> Arc<client::Config> {
    // A vanished peer must fail running work within 30 s: the connection
    // closes after `max` unanswered keepalives, one interval after the last.
    let max = host.server_alive_count_max.clamp(1, 3);
    let interval = host
        .server_alive_interval
        .unwrap_or(Duration::from_secs(5))
        .min(Duration::from_secs(30) / (max + 1));
    Arc::new(client::Config {
        nodelay: true,
        keepalive_interval: Some(interval),
        keepalive_max: max as usize,
        inactivity_timeout: None,
        ..Default::default()
    })
}

/// Connects to `host` over `stream` (already connected), checks its key
/// against `known` and logs in.
pub(crate) async fn handshake<S>(
    host: &HostConfig,
    stream: S,
    known: Arc<KnownHosts>,
    tcp: Duration,
    agent_sock: Option<&Path>,
) -> Result<Connected, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let seen = Arc::new(Mutex::new(None));
    let ended = Arc::new(Mutex::new(None));
    let handler = Client {
        name: known_name(host),
        port: host.port,
        known,
        seen: seen.clone(),
        scan_only: false,
        ended: ended.clone(),
    };
    let t = Instant::now();
    let result = client::connect_stream(russh_config(host), stream, handler).await;
    let seen_key = super::lock(&seen).take();
    let (mut handle, seen) = match (result, seen_key) {
        (Ok(h), Some(s)) => (h, s),
        (_, Some(s)) if !s.verdict.is_trusted() => {
            return Err(SshError::HostKey {
                alias: host.alias.clone(),
                message: s.verdict.message(&host.alias),
            });
        }
        (Err(e), _) => {
            return Err(SshError::Handshake {
                alias: host.alias.clone(),
                message: e.to_string(),
            });
        }
        (Ok(_), None) => {
            return Err(SshError::Handshake {
                alias: host.alias.clone(),
                message: "the server's host key was never checked".into(),
            });
        }
    };
    let kex = t.elapsed();
    let t = Instant::now();
    let auth_method = authenticate(&mut handle, host, agent_sock).await?;
    Ok(Connected {
        handle,
        ended,
        seen,
        timings: ConnectTimings {
            tcp_ms: ms(tcp),
            kex_ms: ms(kex),
            auth_ms: ms(t.elapsed()),
            auth_method,
        },
    })
}

/// Reads the key `host` presents without logging in (for `hosts trust`).
pub(crate) async fn scan_key<S>(
    host: &HostConfig,
    stream: S,
    known: Arc<KnownHosts>,
) -> Result<SeenKey, SshError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let seen = Arc::new(Mutex::new(None));
    let handler = Client {
        name: known_name(host),
        port: host.port,
        known,
        seen: seen.clone(),
        scan_only: true,
        ended: Arc::new(Mutex::new(None)),
    };
    let result = client::connect_stream(russh_config(host), stream, handler).await;
    let seen = super::lock(&seen).take();
    seen.ok_or_else(|| SshError::Handshake {
        alias: host.alias.clone(),
        message: match result {
            Err(e) => e.to_string(),
            Ok(_) => "the server sent no host key".into(),
        },
    })
}

/// The name a host's key is looked up by: HostKeyAlias, else HostName.
pub fn known_name(host: &HostConfig) -> String {
    host.hostkey_alias
        .clone()
        .unwrap_or_else(|| host.host_name.clone())
}

/// Public key of an identity file: `PATH.pub`, if it exists.
fn identity_pub(path: &Path) -> Option<PublicKey> {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    let text = std::fs::read_to_string(PathBuf::from(p)).ok()?;
    PublicKey::from_openssh(text.trim()).ok()
}

/// The hash to sign with an RSA key, asked of the server once.
async fn rsa_hash(handle: &Handle<Client>, known: &mut Option<Option<HashAlg>>) -> Option<HashAlg> {
    if known.is_none() {
        *known = Some(
            handle
                .best_supported_rsa_hash()
                .await
                .ok()
                .flatten()
                .flatten(),
        );
    }
    known.flatten()
}

/// Logs in as OpenSSH would: agent keys first (only those matching an
/// identity file when IdentitiesOnly), then each identity file. Returns how.
async fn authenticate(
    handle: &mut Handle<Client>,
    host: &HostConfig,
    agent_sock: Option<&Path>,
) -> Result<String, SshError> {
    let mut tried: Vec<String> = Vec::new();
    // Asked only for an RSA key: the answer may wait for the server's
    // ext-info, which costs an ed25519 login nothing.
    let mut rsa: Option<Option<HashAlg>> = None;
    let file_pubs: Vec<PublicKey> = host
        .identity_files
        .iter()
        .filter_map(|p| identity_pub(p))
        .collect();

    if let Some(sock) = agent_sock {
        match russh::keys::agent::client::AgentClient::connect_uds(sock).await {
            Ok(mut agent) => {
                let ids = agent.request_identities().await.unwrap_or_default();
                let keys: Vec<PublicKey> = ids
                    .into_iter()
                    .filter_map(|id| match id {
                        russh::keys::agent::AgentIdentity::PublicKey { key, .. } => Some(key),
                        _ => None,
                    })
                    .filter(|k| {
                        !host.identities_only
                            || file_pubs.iter().any(|f| f.key_data() == k.key_data())
                    })
                    .collect();
                for key in keys {
                    let fp = key.fingerprint(HashAlg::Sha256).to_string();
                    let hash = if key.algorithm().is_rsa() {
                        rsa_hash(handle, &mut rsa).await
                    } else {
                        None
                    };
                    match handle
                        .authenticate_publickey_with(&host.user, key, hash, &mut agent)
                        .await
                    {
                        Ok(AuthResult::Success) => return Ok(format!("agent {fp}")),
                        Ok(AuthResult::Failure { .. }) => {
                            tried.push(format!("agent key {fp}: not accepted"))
                        }
                        Err(e) => tried.push(format!("agent key {fp}: {e}")),
                    }
                }
            }
            Err(e) => tried.push(format!("ssh-agent at {}: {e}", sock.display())),
        }
    }

    for path in &host.identity_files {
        let shown = path.display().to_string();
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::IO(e)) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                tried.push(format!(
                    "key {shown} is encrypted and mcpsh cannot ask for its passphrase: \
                     load it into ssh-agent (`ssh-add {shown}`) and make sure SSH_AUTH_SOCK \
                     is set for mcpsh"
                ));
                continue;
            }
            Err(e) => {
                tried.push(format!("key {shown}: cannot read it: {e}"));
                continue;
            }
        };
        let hash = if key.algorithm().is_rsa() {
            rsa_hash(handle, &mut rsa).await
        } else {
            None
        };
        let key = PrivateKeyWithHashAlg::new(Arc::new(key), hash);
        match handle.authenticate_publickey(&host.user, key).await {
            Ok(AuthResult::Success) => return Ok(format!("key {shown}")),
            Ok(AuthResult::Failure { .. }) => tried.push(format!("key {shown}: not accepted")),
            Err(e) => tried.push(format!("key {shown}: {e}")),
        }
    }
    if tried.is_empty() {
        tried.push(format!(
            "no key to try: no ssh-agent (SSH_AUTH_SOCK) and none of the identity files \
             exist ({})",
            host.identity_files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Err(SshError::Auth {
        alias: host.alias.clone(),
        user: host.user.clone(),
        tried,
    })
}
