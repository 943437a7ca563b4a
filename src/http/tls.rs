//! HTTPS without a proxy: loading the operator's PEM certificate and key
//! ([`load`]) and serving a router over TLS ([`run_tls`]).
//!
//! Handshakes run in their own tasks, each under a timeout and with a cap on
//! how many may be in flight, so a silent or slow client never holds up the
//! others. This module must not know about routes or auth: it only turns TCP
//! connections into TLS streams for axum.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::{Listener, ListenerExt};
use rustls::ServerConfig;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// Why the certificate or key cannot be used, worded for the operator who
/// passed `--tls-cert`/`--tls-key`.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("the TLS {role} file {} does not exist", path.display())]
    Missing { role: &'static str, path: PathBuf },
    #[error("cannot read the TLS {role} file {}: {source}", path.display())]
    Unreadable {
        role: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("the TLS {role} file {} is not valid PEM: {detail}", path.display())]
    BadPem {
        role: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error(
        "no certificate found in {}: expected PEM `-----BEGIN CERTIFICATE-----` blocks, \
         the server's certificate first, then any intermediates",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "no private key found in {}: expected an unencrypted PEM key \
         (`BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY`)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "the private key in {} does not belong to the certificate in {} \
         (the first certificate in the file must be the server's own)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("cannot use the certificate {} with the key {}: {source}", cert.display(), key.display())]
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; connections beyond this are dropped, which
/// bounds the memory a flood of idle connections can pin.
const MAX_HANDSHAKES: usize = 256;

/// Load a PEM certificate chain and its private key (PKCS#8, PKCS#1 or
/// SEC1) into a server config using the ring provider, offering HTTP/1.1.
/// Warns when the key file is readable by group or others.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(cert)?;
    let private_key = read_key(key)?;
    warn_if_exposed(key);
    let rejected = |source| match source {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsError::KeyMismatch {
                cert: cert.to_owned(),
                key: key.to_owned(),
            }
        }
        source => TlsError::Rejected {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        },
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(rejected)?
        .with_no_client_auth()
        .with_single_cert(certs, private_key)
        .map_err(rejected)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file("certificate", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem("certificate", path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file("private key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_owned(),
        },
        e => bad_pem("private key", path, e),
    })
}

fn read_file(role: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            role,
            path: path.to_owned(),
        },
        _ => TlsError::Unreadable {
            role,
            path: path.to_owned(),
            source,
        },
    })
}

fn bad_pem(role: &'static str, path: &Path, e: pem::Error) -> TlsError {
    TlsError::BadPem {
        role,
        path: path.to_owned(),
        detail: e.to_string(),
    }
}

/// A key others can read is a key others may already have copied; say so,
/// but serve anyway (the operator may have reasons, e.g. a shared group).
fn warn_if_exposed(key: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(key)
        && meta.permissions().mode() & 0o044 != 0
    {
        tracing::warn!(
            key = %key.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the TLS private key is readable by other users; chmod 600 it"
        );
    }
}

/// Serve `router` over TLS on `listener` until `shutdown` fires, as
/// [`super::run`] does over plain TCP: call it as
/// `run_tls(listener, load(&cert, &key)?, router, shutdown)`. Handlers can
/// still extract `ConnectInfo<SocketAddr>`, the peer's address.
pub async fn run_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    let limits = Limits {
        handshake_timeout: HANDSHAKE_TIMEOUT,
        max_handshakes: MAX_HANDSHAKES,
    };
    serve(TlsListener::new(listener, tls, limits), router, shutdown).await
}

async fn serve(
    listener: TlsListener,
    router: Router,
    shutdown: CancellationToken,
) -> io::Result<()> {
    // axum implements `Connected` (what `ConnectInfo` needs) only for its own
    // listeners and for `TapIo<L>` with any `L`; the no-op tap is how a
    // custom listener gets `ConnectInfo<SocketAddr>`.
    let listener = listener.tap_io(|_| {});
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    handshake_timeout: Duration,
    max_handshakes: usize,
}

/// The result of one handshake task: a ready stream, or `None` when the
/// handshake failed (already logged).
type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

/// A TCP listener whose `accept` yields finished TLS streams. Handshakes run
/// as tasks in a `JoinSet`, so they progress concurrently and are aborted
/// when the listener is dropped (server shutdown).
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    fn new(tcp: TcpListener, tls: Arc<ServerConfig>, limits: Limits) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(tls),
            limits,
            handshakes: JoinSet::new(),
        }
    }

    /// Start the handshake of a newly accepted connection, or drop it when
    /// too many are in flight.
    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        if self.handshakes.len() >= self.limits.max_handshakes {
            tracing::debug!(%peer, "dropping connection: too many TLS handshakes in flight");
            return;
        }
        // Handshake flights are small writes; Nagle would only delay them.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "cannot set TCP_NODELAY");
        }
        let acceptor = self.acceptor.clone();
        let timeout = self.limits.handshake_timeout;
        self.handshakes
            .spawn(handshake(acceptor, tcp, peer, timeout));
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
) -> Handshake {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => Some((tls, peer)),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, ?timeout, "TLS handshake timed out");
            None
        }
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    /// Cancel-safe (axum drops it at shutdown): each branch is cancel-safe
    /// and the work after a branch completes is synchronous.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                biased;
                Some(done) = self.handshakes.join_next() => match done {
                    Ok(Some(conn)) => return conn,
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "TLS handshake task failed"),
                },
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                    Err(e) => accept_error(e).await,
                },
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own listener does: a connection that died before we accepted
/// it is routine; anything else (e.g. out of file descriptors) is logged and
/// retried after a pause rather than spinning.
async fn accept_error(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, made with the
/// `openssl` CLI, for tests that need a real TLS peer.
#[cfg(test)]
pub(crate) mod testcert {
    use std::path::PathBuf;
    use std::process::Command;
    use std::sync::Arc;

    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    pub(crate) struct TestCert {
        pub(crate) cert: PathBuf,
        pub(crate) key: PathBuf,
        pub(crate) der: CertificateDer<'static>,
        _dir: tempfile::TempDir,
    }

    /// Generate a fresh certificate, or `None` (with a message) when the
    /// `openssl` CLI is missing.
    pub(crate) fn generate() -> Option<TestCert> {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-subj", "/CN=localhost", "-days", "1"])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            // webpki refuses a CA certificate as a server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status();
        match status {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                println!("skipped: the openssl CLI is not installed");
                return None;
            }
            other => assert!(other.unwrap().success(), "openssl req failed"),
        }
        let der = CertificateDer::from_pem_file(&cert).unwrap();
        Some(TestCert {
            cert,
            key,
            der,
            _dir: dir,
        })
    }

    impl TestCert {
        pub(crate) fn server_config(&self) -> Arc<rustls::ServerConfig> {
            super::load(&self.cert, &self.key).unwrap()
        }

        /// A client config trusting only this certificate.
        pub(crate) fn client_config(&self) -> Arc<rustls::ClientConfig> {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(self.der.clone()).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testcert::{self, TestCert};
    use super::*;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use rustls_pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::TlsConnector;

    /// Serve a router answering `GET /` with "ok from <peer ip>" on a fresh
    /// port; the server stops when the returned token is dropped.
    async fn start(cert: &TestCert, limits: Limits) -> (SocketAddr, tokio_util::sync::DropGuard) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!("ok from {}", peer.ip())
            }),
        );
        let shutdown = CancellationToken::new();
        let listener = TlsListener::new(tcp, cert.server_config(), limits);
        tokio::spawn(serve(listener, router, shutdown.clone()));
        (addr, shutdown.drop_guard())
    }

    const DEFAULT: Limits = Limits {
        handshake_timeout: HANDSHAKE_TIMEOUT,
        max_handshakes: MAX_HANDSHAKES,
    };

    /// One HTTPS GET over a fresh connection; returns the raw response.
    async fn https_get(cert: &TestCert, addr: SocketAddr) -> String {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = TlsConnector::from(cert.client_config());
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tls.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_https_with_the_peer_address() {
        let Some(cert) = testcert::generate() else {
            return;
        };
        let (addr, _server) = start(&cert, DEFAULT).await;
        let reply = https_get(&cert, addr).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("ok from 127.0.0.1"), "{reply}");
    }

    #[tokio::test]
    async fn a_silent_client_does_not_block_others() {
        let Some(cert) = testcert::generate() else {
            return;
        };
        let (addr, _server) = start(&cert, DEFAULT).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(2), https_get(&cert, addr))
            .await
            .expect("a second client was blocked by a silent one");
        assert!(reply.ends_with("ok from 127.0.0.1"), "{reply}");
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
        let Some(cert) = testcert::generate() else {
            return;
        };
        let limits = Limits {
            handshake_timeout: Duration::from_millis(100),
            ..DEFAULT
        };
        let (addr, _server) = start(&cert, limits).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), silent.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "still open: {read:?}"
        );
    }

    #[tokio::test]
    async fn connections_beyond_the_handshake_cap_are_dropped() {
        let Some(cert) = testcert::generate() else {
            return;
        };
        let limits = Limits {
            max_handshakes: 1,
            ..DEFAULT
        };
        let (addr, _server) = start(&cert, limits).await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let mut excess = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(2), excess.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "still open: {read:?}"
        );
    }

    fn load_err(cert: &Path, key: &Path) -> String {
        load(cert, key).expect_err("load should fail").to_string()
    }

    #[test]
    fn load_explains_what_is_wrong() {
        let Some(good) = testcert::generate() else {
            return;
        };
        let Some(other) = testcert::generate() else {
            return;
        };
        let missing = good.cert.with_file_name("nope.pem");
        for (cert, key, expected) in [
            (&missing, &good.key, "TLS certificate file"),
            (&good.cert, &missing, "TLS private key file"),
            (&good.key, &good.key, "no certificate found"),
            (&good.cert, &good.cert, "no private key found"),
            (&good.cert, &other.key, "does not belong to the certificate"),
        ] {
            let err = load_err(cert, key);
            assert!(err.contains(expected), "{cert:?} {key:?}: {err}");
        }
        assert!(load_err(&missing, &good.key).contains("does not exist"));
        assert!(load(&good.cert, &good.key).is_ok());
    }
}
