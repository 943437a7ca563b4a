//! OAuth routes and the bearer check of `/mcp`: HTTP in, `auth::Auth` decides,
//! HTTP out. Parameters are parsed strictly (a repeated parameter is an
//! error, as RFC 6749 asks), bodies are small and bounded.

use std::collections::HashMap;
use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::auth::Auth;
use crate::auth::oauth::{Finish, LoginForm, OAuthError};

/// Name of the cookie that doubles the login form's single-use token.
pub(super) const CSRF_COOKIE: &str = "mcpsh_csrf";

/// Path of the protected resource metadata for `/mcp` (RFC 9728 section 3.1).
const PRM_PATH: &str = "/.well-known/oauth-protected-resource/mcp";

/// The OAuth routes (metadata, registration, authorize, token, revoke).
pub(super) fn routes(auth: Auth) -> Router {
    Router::new()
        .route(PRM_PATH, get(resource_metadata))
        .route(
            "/.well-known/oauth-protected-resource",
            get(resource_metadata),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(server_metadata),
        )
        .route("/register", post(register))
        .route("/authorize", get(authorize).post(authorize_post))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .layer(DefaultBodyLimit::max(64 * 1024))
        .with_state(auth)
}

/// Middleware for `/mcp`: a valid bearer or 401 with the metadata pointer.
/// The caller of `/mcp` by its bearer token, or the 401/503 to answer.
pub(super) fn check_bearer(
    auth: &Auth,
    req: &Request,
) -> Result<crate::auth::Principal, Box<Response>> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let Some(bearer) = presented.filter(|b| !b.is_empty()) else {
        return Err(Box::new(unauthorized(auth, None)));
    };
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    match auth.verify_bearer(bearer, peer) {
        Ok(principal) => Ok(principal),
        Err(crate::auth::BearerError::Invalid) => Err(Box::new(unauthorized(
            auth,
            Some("the access token is unknown, revoked or expired"),
        ))),
        Err(e) => {
            tracing::error!(error = %e, "cannot check a bearer token");
            Err(Box::new(
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cannot check the token right now; retry",
                )
                    .into_response(),
            ))
        }
    }
}

fn unauthorized(auth: &Auth, invalid: Option<&str>) -> Response {
    let mut value = format!(
        "Bearer resource_metadata=\"{}{PRM_PATH}\"",
        auth.config().issuer
    );
    if let Some(why) = invalid {
        value.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{why}\""
        ));
    }
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        axum::Json(serde_json::json!({
            "error": if invalid.is_some() { "invalid_token" } else { "unauthorized" },
            "error_description": invalid.unwrap_or("this endpoint needs an OAuth bearer token; see the resource_metadata URL in WWW-Authenticate, or create one with `mcpsh token create`"),
        })),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

async fn resource_metadata(State(auth): State<Auth>) -> Response {
    json_no_store(StatusCode::OK, auth.resource_metadata())
}

async fn server_metadata(State(auth): State<Auth>) -> Response {
    json_no_store(StatusCode::OK, auth.server_metadata())
}

async fn register(
    State(auth): State<Auth>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, "application/json") {
        return oauth_error(&OAuthError {
            status: 400,
            error: "invalid_client_metadata",
            description: "send the client metadata as Content-Type: application/json".into(),
        });
    }
    let parsed: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return oauth_error(&OAuthError {
                status: 400,
                error: "invalid_client_metadata",
                description: format!("the body is not valid JSON: {e}"),
            });
        }
    };
    match auth.register(&parsed, Some(peer.ip())) {
        Ok(v) => json_no_store(StatusCode::CREATED, v),
        Err(e) => oauth_error(&e),
    }
}

async fn authorize(State(auth): State<Auth>, RawQuery(query): RawQuery) -> Response {
    let params = match parse_params(query.as_deref().unwrap_or("").as_bytes()) {
        Ok(p) => p,
        Err(e) => return super::page::error(StatusCode::BAD_REQUEST, &e),
    };
    match auth.authorize(&params).await {
        Ok(consent) => super::page::login(&consent, StatusCode::OK, is_https(&auth)),
        Err(crate::auth::oauth::Refusal::Page(msg)) => {
            super::page::error(StatusCode::BAD_REQUEST, &msg)
        }
        Err(crate::auth::oauth::Refusal::Redirect(url)) => redirect(&url),
    }
}

async fn authorize_post(
    State(auth): State<Auth>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !content_type_is(&headers, "application/x-www-form-urlencoded") {
        return super::page::error(
            StatusCode::BAD_REQUEST,
            "the login form must be posted as a form",
        );
    }
    let form = match parse_params(&body) {
        Ok(f) => f,
        Err(e) => return super::page::error(StatusCode::BAD_REQUEST, &e),
    };
    let csrf = form.get("csrf").cloned().unwrap_or_default();
    let cookie = csrf_cookie(&headers);
    if csrf.is_empty() || !crate::crypto::ct_eq(csrf.as_bytes(), cookie.unwrap_or("").as_bytes()) {
        return super::page::error(
            StatusCode::FORBIDDEN,
            "the form token is missing or does not match this browser; go back to the app and start the login again",
        );
    }
    let login = LoginForm {
        csrf,
        username: form.get("username").cloned().unwrap_or_default(),
        password: form.get("password").cloned().unwrap_or_default(),
        allow: form.get("decision").map(String::as_str) == Some("allow"),
    };
    let secure = is_https(&auth);
    match auth.finish(login, peer.ip()).await {
        Finish::Redirect(url) => redirect(&url),
        Finish::Again { consent, status } => super::page::login(
            &consent,
            StatusCode::from_u16(status).unwrap_or(StatusCode::UNAUTHORIZED),
            secure,
        ),
        Finish::Throttled {
            consent,
            retry_after,
        } => {
            let mut resp = super::page::login(&consent, StatusCode::TOO_MANY_REQUESTS, secure);
            if let Ok(v) = HeaderValue::from_str(&(retry_after.as_secs() + 1).to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
        Finish::Expired(msg) => super::page::error(StatusCode::BAD_REQUEST, &msg),
    }
}

async fn token(
    State(auth): State<Auth>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = match form_body(&headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    match auth.token(&form, has_basic(&headers), Some(peer.ip())) {
        Ok(v) => json_no_store(StatusCode::OK, v),
        Err(e) => oauth_error(&e),
    }
}

async fn revoke(State(auth): State<Auth>, headers: HeaderMap, body: Bytes) -> Response {
    let form = match form_body(&headers, &body) {
        Ok(f) => f,
        Err(e) => return oauth_error(&e),
    };
    match auth.revoke(&form, has_basic(&headers)) {
        Ok(()) => json_no_store(StatusCode::OK, serde_json::json!({})),
        Err(e) => oauth_error(&e),
    }
}

fn form_body(headers: &HeaderMap, body: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    if !content_type_is(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError {
            status: 400,
            error: "invalid_request",
            description: "send the request as Content-Type: application/x-www-form-urlencoded"
                .into(),
        });
    }
    parse_params(body).map_err(|e| OAuthError {
        status: 400,
        error: "invalid_request",
        description: e,
    })
}

/// Parse `a=b&c=d`, refusing a repeated parameter.
fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(format!("parameter {k:?} is repeated"));
        }
    }
    Ok(out)
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

fn has_basic(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.len() >= 5 && v[..5].eq_ignore_ascii_case("basic"))
}

fn csrf_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == CSRF_COOKIE).then_some(v)
        })
}

fn is_https(auth: &Auth) -> bool {
    auth.config().issuer.starts_with("https://")
}

fn redirect(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => {
            let mut resp = StatusCode::FOUND.into_response();
            resp.headers_mut().insert(header::LOCATION, v);
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp.headers_mut().insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            resp
        }
        Err(_) => super::page::error(
            StatusCode::BAD_REQUEST,
            "the redirect URI cannot be used in a header",
        ),
    }
}

fn json_no_store(status: StatusCode, v: serde_json::Value) -> Response {
    let mut resp = (status, axum::Json(v)).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

fn oauth_error(e: &OAuthError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    json_no_store(status, e.body())
}
