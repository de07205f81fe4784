//! JSON:API plumbing shared by every HTTP route: error objects
//! (`{"errors": [{"status", "title", "detail", "code", "source": {"pointer"}}]}`),
//! document responses, and bearer-token authentication (constant time).

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::json;

use crate::registry::Snapshot;
use crate::signing::constant_time_eq;

pub type Body = Full<Bytes>;

pub const JSONAPI: &str = "application/vnd.api+json";

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub title: String,
    pub detail: String,
    pub code: &'static str,
    pub pointer: Option<String>,
}

impl ApiError {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        title: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            title: title.into(),
            detail: detail.into(),
            code,
            pointer: None,
        }
    }

    pub fn bad_request(
        title: impl Into<String>,
        detail: impl Into<String>,
        pointer: Option<&str>,
    ) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            title: title.into(),
            detail: detail.into(),
            code: "INVALID",
            pointer: pointer.map(str::to_string),
        }
    }

    pub fn with_pointer(mut self, p: &str) -> Self {
        self.pointer = Some(p.to_string());
        self
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "TOKEN_INVALID",
            "Unauthorized",
            detail,
        )
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Not found",
            format!("{what} was not found"),
        )
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "Service unavailable",
            detail,
        )
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "CONFLICT", "Conflict", detail)
    }

    pub fn to_response(&self) -> Response<Body> {
        let mut err = json!({
            "status": self.status.as_u16().to_string(),
            "title": self.title,
            "detail": self.detail,
            "code": self.code,
        });
        if let Some(p) = &self.pointer {
            err["source"] = json!({"pointer": p});
        }
        let mut r = document(self.status, &json!({"errors": [err]}));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // Storage trouble is usually brief (a database restart, a
            // failover): clients retry after a second.
            r.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// A JSON:API document response.
pub fn document(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(JSONAPI),
    );
    r
}

/// Plain-text response (health, metrics).
pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    r
}

/// Who a request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Account(String),
}

/// The bearer token of a request, if well-formed.
pub fn bearer(headers: &http::HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("send Authorization: Bearer <token>"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::unauthorized("the Authorization header must be \"Bearer <token>\"")
    })?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "the Authorization header must be \"Bearer <token>\"",
        ));
    }
    Ok(token.trim())
}

/// Authenticates a request for `account`. An unknown account is 404
/// whatever the token; a token of another account is 404 too (no
/// existence leak across accounts).
pub fn authorize_account(
    headers: &http::HeaderMap,
    snap: &Snapshot,
    admin_token: Option<&str>,
    account: &str,
) -> Result<Principal, ApiError> {
    let token = bearer(headers)?;
    let is_admin = admin_token.is_some_and(|a| constant_time_eq(a, token));
    match snap.account(account) {
        Some(_) if is_admin => return Ok(Principal::Admin),
        Some(a) if constant_time_eq(&a.token, token) => {
            return Ok(Principal::Account(a.id.clone()));
        }
        _ => {}
    }
    // Without a valid token nobody learns whether the account exists: an
    // unknown account and a wrong token get the same 401. A caller holding
    // some account's token (or the admin token, for an unknown account)
    // gets 404 either way, as if the account did not exist.
    let authenticated = is_admin
        || snap
            .accounts
            .values()
            .fold(false, |found, a| found | constant_time_eq(&a.token, token));
    if authenticated {
        Err(ApiError::not_found(&format!("account {account:?}")))
    } else {
        Err(ApiError::unauthorized(
            "the token is not valid for this account",
        ))
    }
}

/// Admin-only routes.
pub fn authorize_admin(
    headers: &http::HeaderMap,
    admin_token: Option<&str>,
) -> Result<(), ApiError> {
    let token = bearer(headers)?;
    match admin_token {
        Some(a) if constant_time_eq(a, token) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("this route needs the admin token")),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ADMIN_DISABLED",
            "Forbidden",
            "no admin token is configured ([server] admin_token or admin_token_env)",
        )),
    }
}

/// Reads a body up to `limit` bytes; 413 past it (also for chunked bodies).
/// When the body of a request must have arrived (`[server] body_timeout`),
/// set by the server on every request.
#[derive(Debug, Clone, Copy)]
pub struct BodyDeadline(pub tokio::time::Instant);

pub async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, ApiError> {
    let deadline = req.extensions().get::<BodyDeadline>().copied();
    if let Some(len) = req.headers().get(http::header::CONTENT_LENGTH) {
        if len
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n > limit as u64)
        {
            return Err(too_large(limit));
        }
    }
    let collect = Limited::new(req.into_body(), limit).collect();
    let collected = match deadline {
        None => collect.await,
        Some(BodyDeadline(at)) => match tokio::time::timeout_at(at, collect).await {
            Ok(r) => r,
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "TIMEOUT",
                    "Request timeout",
                    "the body did not arrive in time ([server] body_timeout)",
                ));
            }
        },
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large(limit))
        }
        Err(e) => Err(ApiError::bad_request(
            "Incomplete body",
            format!("reading the body failed: {e}"),
            None,
        )),
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "TOO_LARGE",
        "Payload too large",
        format!("the body is over {limit} bytes ([server] max_body)"),
    )
}

/// JSON bodies only (`application/json` or `application/vnd.api+json`).
pub fn require_json(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime == "application/json" || mime == JSONAPI {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "Unsupported media type",
            format!("send Content-Type: application/json (got {:?})", ct),
        ))
    }
}
