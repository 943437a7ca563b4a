//! HTTP front: the only module that knows axum. Routes `/mcp` to the MCP
//! service (behind a bearer check when auth is on), serves the OAuth routes
//! (`oauth.rs`, `page.rs`), and checks `Host` and `Origin` on every request
//! (403 otherwise), which defeats DNS rebinding and cross-site requests.
//! It never spawns processes or touches state itself.

mod oauth;
mod page;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Which `Host` and `Origin` values are accepted.
#[derive(Debug, Clone)]
pub struct Guard {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Guard {
    /// Accept the names a browser or client uses to reach `addr` on this
    /// machine, plus any extra `host[:port]` names.
    pub fn for_addr(addr: SocketAddr, extra_hosts: &[String]) -> Guard {
        let port = addr.port();
        let mut names = vec!["localhost".to_owned()];
        let ip = addr.ip();
        if ip.is_unspecified() {
            names.extend(["127.0.0.1".to_owned(), "[::1]".to_owned()]);
        } else if ip.is_ipv6() {
            names.push(format!("[{ip}]"));
        } else {
            names.push(ip.to_string());
        }
        names.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let mut hosts = Vec::new();
        let mut origins = Vec::new();
        for n in &names {
            let has_port = if n.starts_with('[') {
                n.contains("]:")
            } else {
                n.contains(':')
            };
            let with_port = if has_port {
                n.clone()
            } else {
                format!("{n}:{port}")
            };
            hosts.push(with_port.clone());
            if port == 80 || port == 443 {
                hosts.push(n.clone());
            }
            origins.push(format!("http://{with_port}"));
            origins.push(format!("https://{with_port}"));
            if port == 80 {
                origins.push(format!("http://{n}"));
            }
            if port == 443 {
                origins.push(format!("https://{n}"));
            }
        }
        Guard { hosts, origins }
    }

    /// Also accept the host of the public URL (`scheme://host[:port]`) and
    /// its origin, as a browser or a proxy presents them.
    pub fn with_public_url(mut self, url: &str) -> Guard {
        let Some((scheme, rest)) = url.split_once("://") else {
            return self;
        };
        let authority = rest.split('/').next().unwrap_or(rest).to_ascii_lowercase();
        let default_port = if scheme == "https" { "443" } else { "80" };
        let bare = authority
            .strip_suffix(&format!(":{default_port}"))
            .unwrap_or(&authority)
            .to_owned();
        self.hosts.push(bare.clone());
        self.hosts
            .push(if bare.ends_with(']') || !bare.contains(':') {
                format!("{bare}:{default_port}")
            } else {
                bare.clone()
            });
        self.origins.push(format!("{scheme}://{bare}"));
        self
    }

    fn check(&self, headers: &HeaderMap) -> Result<(), &'static str> {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_ascii_lowercase)
            .ok_or("missing Host header")?;
        if !self.hosts.contains(&host) {
            return Err("Host not allowed");
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin
                .to_str()
                .map(str::to_ascii_lowercase)
                .map_err(|_| "bad Origin")?;
            if !self.origins.contains(&origin) {
                return Err("Origin not allowed");
            }
        }
        Ok(())
    }
}

/// What every request passes: the Host/Origin guard, and with auth the
/// bearer check on `/mcp`. One middleware rather than two layers: each
/// layer costs a clone of the service below it per request.
#[derive(Clone)]
struct Gate {
    guard: Guard,
    auth: Option<crate::auth::Auth>,
}

async fn guard(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    if let Err(why) = gate.guard.check(req.headers()) {
        let _enter = span.enter();
        tracing::warn!(why, "refused request");
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    if let Some(auth) = &gate.auth
        && req.uri().path() == "/mcp"
    {
        match oauth::check_bearer(auth, &req) {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
            }
            Err(refused) => return *refused,
        }
    }
    next.run(req).instrument(span).await
}

/// Build the router: `/mcp` goes to `mcp`, everything behind the guard.
/// With `auth`, `/mcp` needs a bearer and the OAuth routes are served.
pub fn router<S, B>(mcp: S, g: Guard, auth: Option<crate::auth::Auth>) -> Router
where
    S: tower_service::Service<
            Request<Body>,
            Response = axum::http::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let mcp_route = Router::new().route_service("/mcp", mcp);
    let app = match &auth {
        Some(auth) => mcp_route.merge(oauth::routes(auth.clone())),
        None => mcp_route,
    };
    app.fallback(|| async { (StatusCode::NOT_FOUND, "not found; the MCP endpoint is /mcp") })
        .layer(middleware::from_fn_with_state(
            Gate { guard: g, auth },
            guard,
        ))
}

/// Serve `router` on `listener` until `shutdown` fires.
pub async fn run(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.cancelled().await })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = host {
            h.insert(header::HOST, v.parse().unwrap());
        }
        if let Some(v) = origin {
            h.insert(header::ORIGIN, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn host_and_origin_rules() {
        let g = Guard::for_addr("127.0.0.1:1337".parse().unwrap(), &[]);
        for (host, origin, ok) in [
            (Some("127.0.0.1:1337"), None, true),
            (Some("LOCALHOST:1337"), Some("http://localhost:1337"), true),
            (Some("127.0.0.1:1337"), Some("https://evil.example"), false),
            (Some("evil.example"), None, false),
            (Some("127.0.0.1:1338"), None, false),
            (Some("127.0.0.1"), None, false),
            (None, None, false),
            (Some("127.0.0.1:1337"), Some("null"), false),
            (Some("localhost.evil.example:1337"), None, false),
        ] {
            assert_eq!(
                g.check(&headers(host, origin)).is_ok(),
                ok,
                "{host:?} {origin:?}"
            );
        }
    }
}
