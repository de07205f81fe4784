//! Account resources over HTTP: webhook endpoints (`admin::endpoints`:
//! CRUD, rotate-secret, ping, recover) and webhook events
//! (`admin::events`: list, show, retry), plus the admin's plugin list.
//!
//! Every account route authenticates first (`AppState::authorize_account`), so
//! with another account's token every route of an account, even a wrong
//! method or an unknown sub-path, answers 404 and reveals nothing.

pub mod endpoints;
pub mod events;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};

use crate::api::{self, ApiError, Body};
use crate::delivery::envelope::rfc3339;
use crate::state::AppState;

/// Routes everything that is not ingest, health or metrics.
pub async fn route(
    state: &AppState,
    req: Request<Incoming>,
    segments: &[&str],
) -> Result<Response<Body>, ApiError> {
    let method = req.method().clone();
    match segments {
        ["v1", "plugins"] => {
            // The admin sees everything; an account token gets the
            // read-only view (names, versions, load errors: what it needs
            // to pick plugins and see why one is missing).
            let admin = match api::authorize_admin(
                req.headers(),
                state.config().server.admin_token.as_deref(),
            ) {
                Ok(()) => true,
                Err(e) => {
                    let token = api::bearer(req.headers())?;
                    let snap = state.registry.snapshot();
                    if !snap
                        .accounts
                        .values()
                        .any(|a| crate::signing::constant_time_eq(&a.token, token))
                    {
                        return Err(match e.status {
                            // No admin token configured: still a 401
                            // for a token that is nobody's.
                            StatusCode::FORBIDDEN => ApiError::unauthorized(
                                "the token is neither the admin token nor an account's",
                            ),
                            _ => e,
                        });
                    }
                    false
                }
            };
            if method != Method::GET {
                return Err(method_not_allowed(&method, "GET"));
            }
            Ok(plugins(state, admin))
        }
        ["v1", "accounts", account, rest @ ..] if !rest.is_empty() => {
            let snap = state.registry.snapshot();
            state.authorize_account(req.headers(), &snap, account)?;
            let account = account.to_string();
            use Method as M;
            match (&method, rest) {
                (&M::GET, ["webhook-endpoints"]) => endpoints::list(state, &req, &account).await,
                (&M::POST, ["webhook-endpoints"]) => endpoints::create(state, req, &account).await,
                (_, ["webhook-endpoints"]) => Err(method_not_allowed(&method, "GET, POST")),
                (&M::GET, ["webhook-endpoints", id]) => endpoints::show(state, &account, id).await,
                (&M::PATCH, ["webhook-endpoints", id]) => {
                    endpoints::update(state, req, &account, id).await
                }
                (&M::DELETE, ["webhook-endpoints", id]) => {
                    endpoints::delete(state, &account, id).await
                }
                (_, ["webhook-endpoints", _]) => {
                    Err(method_not_allowed(&method, "GET, PATCH, DELETE"))
                }
                (&M::POST, ["webhook-endpoints", id, "actions", "rotate-secret"]) => {
                    endpoints::rotate_secret(state, req, &account, id).await
                }
                (&M::POST, ["webhook-endpoints", id, "actions", "ping"]) => {
                    endpoints::ping(state, &account, id).await
                }
                (&M::POST, ["webhook-endpoints", id, "actions", "recover"]) => {
                    endpoints::recover(state, &req, &account, id).await
                }
                (
                    _,
                    [
                        "webhook-endpoints",
                        _,
                        "actions",
                        "rotate-secret" | "ping" | "recover",
                    ],
                ) => Err(method_not_allowed(&method, "POST")),
                (&M::GET, ["webhook-events"]) => events::list(state, &req, &account).await,
                (_, ["webhook-events"]) => Err(method_not_allowed(&method, "GET")),
                (&M::GET, ["webhook-events", id]) => events::show(state, &account, id).await,
                (_, ["webhook-events", _]) => Err(method_not_allowed(&method, "GET")),
                (&M::POST, ["webhook-events", id, "actions", "retry"]) => {
                    events::retry(state, &req, &account, id).await
                }
                (&M::POST, ["webhook-events", id, "actions", "cancel"]) => {
                    crate::schedule::cancel_event(state, &account, id).await
                }
                (&M::DELETE, ["scheduled", key]) => {
                    crate::schedule::cancel_by_key(state, &account, key).await
                }
                (_, ["scheduled", _]) => Err(method_not_allowed(&method, "DELETE")),
                (_, ["webhook-events", _, "actions", "retry" | "cancel"]) => {
                    Err(method_not_allowed(&method, "POST"))
                }
                _ => Err(ApiError::not_found(&format!(
                    "route {method} {}",
                    req.uri().path()
                ))),
            }
        }
        _ => Err(ApiError::not_found(&format!(
            "route {method} {}",
            req.uri().path()
        ))),
    }
}

fn method_not_allowed(method: &Method, allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed",
        format!("{method} is not allowed here; use {allowed}"),
    )
}

/// `GET /v1/plugins`: loaded plugins, version hash, load time, last error.
/// `GET /v1/plugins`. For an account token (`admin` false): no runtime
/// counters (they add up every account's traffic) and no file paths in the
/// errors.
fn plugins(state: &AppState, admin: bool) -> Response<Body> {
    api::document(StatusCode::OK, &plugins_doc(state, admin))
}

/// The plugins document (API and dashboard): every plugin file's status,
/// and for the admin the runtime's counters in `meta`.
pub fn plugins_doc(state: &AppState, admin: bool) -> Value {
    let config = state.config();
    let dirs = [
        (config.plugins.dir.display().to_string(), "<plugins dir>"),
        (config.server.data_dir.display().to_string(), "<data dir>"),
    ];
    let hide_paths = |e: &String| -> String {
        let mut e = e.clone();
        if !admin {
            for (path, name) in &dirs {
                if !path.is_empty() {
                    e = e.replace(path.as_str(), name);
                }
            }
        }
        e
    };
    let mut statuses = state.runtime.statuses();
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    let data: Vec<Value> = statuses
        .iter()
        .map(|s| {
            let loaded_ms = s
                .loaded_at
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            let mut doc = json!({
                "id": s.name,
                "type": "plugins",
                "attributes": {
                    "loaded": s.loaded,
                    "sha256": if s.sha256.is_empty() { Value::Null } else { json!(s.sha256) },
                    "version": s.version,
                    "loadedAt": if s.loaded { json!(rfc3339(loaded_ms)) } else { Value::Null },
                    "lastError": s.last_error.as_ref().map(hide_paths),
                }
            });
            if admin {
                doc["meta"] = plugin_calls_doc(&s.calls);
            }
            doc
        })
        .collect();
    if !admin {
        return json!({"data": data});
    }
    let st = state.runtime.stats();
    json!({
        "data": data,
        "meta": {
            "reloads": st.reloads,
            "loadFailures": st.load_failures,
            "calls": st.calls,
            "callErrors": st.call_errors,
            "callErrorsByKind": st.call_errors_by_kind.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "compiles": st.compiles,
            "cacheHits": st.cache_hits,
        }
    })
}

/// One plugin's call counters (admin only: they add up every account's
/// traffic). Latencies in milliseconds; the percentiles are histogram
/// bucket bounds (within a factor of two).
fn plugin_calls_doc(c: &crate::plugins::PluginCalls) -> Value {
    let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64() * 1000.0);
    json!({
        "calls": c.calls,
        "callErrors": c.errors,
        "callErrorsByKind": c.errors_by_kind.iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "meanMs": ms(c.mean),
        "p50Ms": ms(c.p50),
        "p99Ms": ms(c.p99),
    })
}

// ---- helpers shared by the resource modules ------------------------------

/// Decoded query parameters, in order.
pub fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    parse_query(req.uri().query().unwrap_or(""))
}

pub fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The last value of a query parameter.
pub fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value (for `links.next`).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.bytes() {
        if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// Reads an optional JSON body (empty is `None`), JSON content type required
/// when there is one.
pub async fn read_json(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<Option<Value>, ApiError> {
    let has_ct = req.headers().contains_key(http::header::CONTENT_TYPE);
    let headers = req.headers().clone();
    let body = api::read_body(req, state.config().server.max_body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    if has_ct || !body.is_empty() {
        api::require_json(&headers)?;
    }
    serde_json::from_slice(&body).map(Some).map_err(|e| {
        ApiError::bad_request(
            "Malformed JSON",
            format!("the body is not valid JSON: {e}"),
            None,
        )
    })
}

/// 422 for a value that is well-formed but not acceptable.
pub fn invalid(detail: impl Into<String>, pointer: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "INVALID",
        "Invalid attribute",
        detail,
    )
    .with_pointer(pointer)
}

/// Unix ms at which an event was stored (its UUIDv7 timestamp).
pub fn stored_ms(event: uuid::Uuid) -> i64 {
    event
        .get_timestamp()
        .map(|t| {
            let (s, n) = t.to_unix();
            s as i64 * 1000 + (n / 1_000_000) as i64
        })
        .unwrap_or(0)
}

/// The smallest UUIDv7 stored at `ms`: a `before` cursor for
/// `Store::list_events` that lists the events stored before `ms`.
pub fn cursor_at(ms: i64) -> uuid::Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&(ms.max(0) as u64).to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    uuid::Uuid::from_bytes(b)
}

pub fn storage(e: impl std::fmt::Display) -> ApiError {
    ApiError::unavailable(format!("storage error: {e}; retry later"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("filter%5Bevent%5D=license.*&page[size]=5&x=a+b%2Cc&bad=%zz&end=%4");
        assert_eq!(param(&q, "filter[event]"), Some("license.*"));
        assert_eq!(param(&q, "page[size]"), Some("5"));
        assert_eq!(param(&q, "x"), Some("a b,c"));
        assert_eq!(param(&q, "bad"), Some("%zz"));
        assert_eq!(param(&q, "end"), Some("%4"));
        let id = uuid::Uuid::now_v7();
        let ms = stored_ms(id);
        assert!(cursor_at(ms) <= id && cursor_at(ms + 1) > id);
        assert_eq!(stored_ms(cursor_at(ms)), ms);
        assert_eq!(
            percent_encode("2024-01-01T00:00:00+02:00"),
            "2024-01-01T00:00:00%2B02:00"
        );
    }
}
