//! Scheduled events: turns an ingest request's `deliver_at` / `deliver_in`
//! / `schedule_key` (body members of the native form, or the `Deliver-At` /
//! `Deliver-In` / `Schedule-Key` headers) into a [`Schedule`] checked
//! against the clock and the configured cap, and serves the cancellations
//! (`DELETE /v1/accounts/{a}/scheduled/{key}`, `POST
//! …/webhook-events/{id}/actions/cancel`). The waiting itself is the
//! store's due index with a later time: nothing here keeps a timer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::api::{self, ApiError, Body};
use crate::delivery::envelope::rfc3339;
use crate::ingest::{self, ParsedEvent};
use crate::state::AppState;
use crate::store::{CancelTarget, Cancelled, Schedule};

/// Header errors point at no body member.
fn no_pointer(mut e: ApiError) -> ApiError {
    e.pointer = None;
    e
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            ApiError::bad_request(
                "Invalid header",
                format!("{name} must be visible ASCII"),
                None,
            )
        }),
    }
}

/// Moves the `Deliver-At` / `Deliver-In` / `Schedule-Key` headers into
/// `parsed` (a body member and its header together are ambiguous: 400).
pub fn apply_headers(headers: &HeaderMap, parsed: &mut ParsedEvent) -> Result<(), ApiError> {
    let clash = |name: &str| {
        ApiError::bad_request(
            "Ambiguous event",
            format!("{name} is given both as a header and in the body; send it once"),
            None,
        )
    };
    if let Some(v) = header(headers, "deliver-at")? {
        if parsed.deliver_at_ms.is_some() || parsed.deliver_in.is_some() {
            return Err(clash("the delivery time"));
        }
        parsed.deliver_at_ms = Some(ingest::parse_time(v, "Deliver-At").map_err(no_pointer)?);
    }
    if let Some(v) = header(headers, "deliver-in")? {
        if parsed.deliver_at_ms.is_some() || parsed.deliver_in.is_some() {
            return Err(clash("the delivery time"));
        }
        parsed.deliver_in = Some(ingest::parse_delay(v, "Deliver-In").map_err(no_pointer)?);
    }
    if let Some(v) = header(headers, "schedule-key")? {
        if parsed.schedule_key.is_some() {
            return Err(clash("schedule_key"));
        }
        ingest::check_schedule_key(v, "Schedule-Key").map_err(no_pointer)?;
        parsed.schedule_key = Some(v.to_string());
    }
    Ok(())
}

/// The event's schedule, if it asked for one: a time in the past means
/// now; a time further than `max_ahead` from `now` is refused (422).
pub fn resolve(
    parsed: &ParsedEvent,
    now: i64,
    max_ahead: Duration,
) -> Result<Option<Schedule>, ApiError> {
    let max_ms = i64::try_from(max_ahead.as_millis()).unwrap_or(i64::MAX);
    let too_far = |pointer: &str, what: String| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "SCHEDULE_TOO_FAR",
            "Delivery time too far ahead",
            format!(
                "{what} is more than {} from now, the most this router accepts (server.max_schedule_ahead)",
                humantime::format_duration(Duration::from_secs(max_ahead.as_secs()))
            ),
        )
        .with_pointer(pointer)
    };
    let due_ms = match (parsed.deliver_at_ms, parsed.deliver_in) {
        (Some(at), _) => {
            if at.saturating_sub(now) > max_ms {
                return Err(too_far(
                    "/deliver_at",
                    format!("deliver_at {}", rfc3339(at)),
                ));
            }
            Some(at.max(now))
        }
        (None, Some(d)) => {
            let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
            if ms > max_ms {
                return Err(too_far(
                    "/deliver_in",
                    format!("deliver_in {}", humantime::format_duration(d)),
                ));
            }
            Some(now.saturating_add(ms))
        }
        (None, None) => None,
    };
    if due_ms.is_none() && parsed.schedule_key.is_none() {
        return Ok(None);
    }
    Ok(Some(Schedule {
        due_ms: due_ms.unwrap_or(now),
        key: parsed.schedule_key.clone(),
    }))
}

/// The JSON of a cancellation.
pub fn cancelled_json(account: &str, c: &Cancelled) -> serde_json::Value {
    json!({
        "id": c.event.to_string(),
        "type": "webhook-events",
        "attributes": {
            "status": "cancelled",
            "deliverAt": rfc3339(c.due_ms),
            "scheduleKey": c.key,
            "deliveriesCancelled": c.deliveries,
        },
        "links": {"self": format!("/v1/accounts/{account}/webhook-events/{}", c.event)},
    })
}

async fn cancel(
    state: &AppState,
    account: &str,
    target: CancelTarget,
    what: String,
) -> Result<Response<Body>, ApiError> {
    let c = state
        .store
        .cancel_scheduled(account, target)
        .await
        .map_err(|e| ApiError::unavailable(format!("{e}; nothing was cancelled, retry later")))?;
    match c {
        Some(c) => {
            state
                .metrics
                .schedule_cancelled
                .fetch_add(1, Ordering::Relaxed);
            Ok(api::document(
                StatusCode::OK,
                &json!({"data": cancelled_json(account, &c)}),
            ))
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Not found",
            format!(
                "{what} is not a pending scheduled event (unknown, already due, or already cancelled); \
                 an event can be cancelled until {} ms before its due time",
                crate::store::CANCEL_MARGIN_MS
            ),
        )),
    }
}

/// `DELETE /v1/accounts/{a}/scheduled/{schedule_key}`.
pub async fn cancel_by_key(
    state: &AppState,
    account: &str,
    key: &str,
) -> Result<Response<Body>, ApiError> {
    ingest::check_schedule_key(key, "schedule_key").map_err(no_pointer)?;
    cancel(
        state,
        account,
        CancelTarget::Key(key.to_string()),
        format!("schedule key {key:?}"),
    )
    .await
}

/// `POST /v1/accounts/{a}/webhook-events/{id}/actions/cancel`.
pub async fn cancel_event(
    state: &AppState,
    account: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let uuid =
        Uuid::parse_str(id).map_err(|_| ApiError::not_found(&format!("webhook event {id:?}")))?;
    cancel(
        state,
        account,
        CancelTarget::Event(uuid),
        format!("webhook event {id:?}"),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(body: &str) -> ParsedEvent {
        ingest::parse(body.as_bytes()).unwrap()
    }

    #[test]
    fn times_are_clamped_and_capped() {
        let now = 1_900_000_000_000;
        let year = Duration::from_secs(365 * 86400);
        let p = parsed(r#"{"event":"a.b","payload":{},"deliver_at":"2000-01-01T00:00:00Z"}"#);
        assert_eq!(resolve(&p, now, year).unwrap().unwrap().due_ms, now);
        let p = parsed(r#"{"event":"a.b","payload":{},"deliver_in":"72h"}"#);
        assert_eq!(
            resolve(&p, now, year).unwrap().unwrap().due_ms,
            now + 72 * 3600 * 1000
        );
        let p = parsed(r#"{"event":"a.b","payload":{},"deliver_in":"400days"}"#);
        let e = resolve(&p, now, year).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.pointer.as_deref(), Some("/deliver_in"));
        let p = parsed(r#"{"event":"a.b","payload":{},"deliver_at":"2999-01-01T00:00:00Z"}"#);
        assert_eq!(
            resolve(&p, now, year).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let p = parsed(r#"{"event":"a.b","payload":{}}"#);
        assert!(resolve(&p, now, year).unwrap().is_none());
        let p = parsed(r#"{"event":"a.b","payload":{},"schedule_key":"k"}"#);
        let s = resolve(&p, now, year).unwrap().unwrap();
        assert_eq!((s.due_ms, s.key.as_deref()), (now, Some("k")));
    }

    #[test]
    fn headers_stand_for_members() {
        let mut p = parsed(r#"{"event":"a.b","payload":{}}"#);
        let mut h = HeaderMap::new();
        h.insert("deliver-in", "1h".parse().unwrap());
        h.insert("schedule-key", "license:1".parse().unwrap());
        apply_headers(&h, &mut p).unwrap();
        assert_eq!(p.deliver_in, Some(Duration::from_secs(3600)));
        assert_eq!(p.schedule_key.as_deref(), Some("license:1"));
        let mut p = parsed(r#"{"event":"a.b","payload":{},"deliver_in":"2h"}"#);
        assert!(apply_headers(&h, &mut p).is_err());
        let mut h = HeaderMap::new();
        h.insert("deliver-at", "next week".parse().unwrap());
        assert!(apply_headers(&h, &mut parsed(r#"{"event":"a.b","payload":{}}"#)).is_err());
    }
}
