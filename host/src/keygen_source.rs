//! `POST /v1/accounts/{account}/sources/keygen`: Keygen's own webhook
//! deliveries as input. Keygen cannot send a bearer token (its webhook
//! endpoint is only a URL), so the request is authenticated by Keygen's
//! signature instead: `Digest` over the body, the ed25519
//! `Keygen-Signature` over the signing string rebuilt from this request
//! (`signing::verify_keygen_request`) with the account's configured verify
//! keys, and `Date` within the window against replays. A refused request
//! answers 401 naming what failed and stores nothing; an accepted one is
//! stored and routed exactly like a native event (`accept::accept`), with
//! Keygen's webhook event id as its source id and idempotency key.

use std::sync::atomic::Ordering;

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use tracing::info;

use crate::api::{ApiError, Body, read_body, require_json};
use crate::ingest;
use crate::signing::{KeygenRequest, verify_keygen_request};
use crate::state::AppState;
use crate::store::now_ms;

fn text<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// A 401 Keygen understands (it retries non-2xx) and an operator can act on.
fn refused(state: &AppState, code: &'static str, detail: String) -> ApiError {
    state
        .metrics
        .keygen_rejected
        .fetch_add(1, Ordering::Relaxed);
    info!(%code, %detail, "keygen source request refused");
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        code,
        "Keygen signature not accepted",
        detail,
    )
}

pub async fn handle(
    state: &AppState,
    req: Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    let r = handle_inner(state, req, account).await;
    match r {
        Ok(resp) => Ok(resp),
        Err(e) if e.status == StatusCode::UNAUTHORIZED => {
            state
                .metrics
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
            let mut resp = e.to_response();
            resp.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Signature headers=\"(request-target) host date digest\""),
            );
            Ok(resp)
        }
        Err(e) => {
            state
                .metrics
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
            Err(e)
        }
    }
}

async fn handle_inner(
    state: &AppState,
    req: Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    if !state.accepting.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "the router is shutting down; retry shortly",
        ));
    }
    let config = state.config();
    let snap = state.registry.snapshot();
    // An unknown account and one without verify keys get the same answer:
    // an unauthenticated caller learns nothing about which accounts exist.
    let acct = snap
        .account(account)
        .filter(|a| !a.keygen_verify_keys.is_empty())
        .ok_or_else(|| {
            ApiError::not_found(&format!(
                "a Keygen source for account {account:?} (configure keygen_verify_key on the account)"
            ))
        })?
        .clone();
    require_json(req.headers())?;
    let method = req.method().as_str().to_string();
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    let host = match &config.server.external_host {
        Some(h) => h.clone(),
        None => text(&req, "host")
            .ok_or_else(|| {
                refused(
                    state,
                    "SIGNATURE_HEADER_MISSING",
                    "the Host header is missing; it is part of what Keygen signs".into(),
                )
            })?
            .to_string(),
    };
    let date = text(&req, "date").map(str::to_string);
    let digest = text(&req, "digest").map(str::to_string);
    let signature = text(&req, "keygen-signature").map(str::to_string);
    let body = read_body(req, config.server.max_body).await?;
    let signed = KeygenRequest {
        method: &method,
        target: &target,
        host: &host,
        date: date.as_deref(),
        digest: digest.as_deref(),
        signature: signature.as_deref(),
        body: &body,
    };
    let window_ms = config.server.keygen_date_window.as_millis() as i64;
    verify_keygen_request(
        &signed,
        &acct.keygen_verify_keys,
        acct.keygen_account_id.as_deref(),
        now_ms(),
        window_ms,
    )
    .map_err(|r| refused(state, r.code(), r.to_string()))?;
    let mut parsed = ingest::parse(&body)?;
    if !parsed.keygen_form {
        return Err(ApiError::bad_request(
            "Invalid event",
            "this route takes Keygen's webhook-event envelope {\"data\": {\"type\": \"webhook-events\", …}}; native events go to POST /v1/accounts/{account}/events",
            Some("/data"),
        ));
    }
    // Keygen's webhook event id is the event's source id, and dedupes its
    // retries (the idempotency token when there is no id).
    if let Some(id) = parsed.keygen_event_id.clone() {
        parsed.source_id = Some(id);
    }
    let key = parsed.source_id.clone().map(|id| format!("keygen:{id}"));
    crate::accept::accept(state, account, parsed, key, None).await
}
