//! `/v1/accounts/{account}/webhook-events`: list (newest first, cursor
//! pagination, filters), show (each delivery with its attempts) and the
//! `retry` action.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{Value, json};
use uuid::Uuid;

use super::endpoints::page_size;
use super::{cursor_at, param, percent_encode, query, storage, stored_ms};
use crate::api::{self, ApiError, Body};
use crate::config::pattern_matches;
use crate::delivery::envelope::{delivery_id, rfc3339};
use crate::state::AppState;
use crate::store::{DeliveryRecord, DeliveryStatus, EventRecord, Store};

/// Events looked at per list request at most (filters that match rarely
/// answer a partial page with a `next` link instead of scanning forever).
const MAX_SCAN: usize = 5000;

/// The status of an event as a whole: the least settled of its deliveries.
fn overall(deliveries: &[(Uuid, DeliveryRecord)]) -> &'static str {
    let has = |s: DeliveryStatus| deliveries.iter().any(|(_, d)| d.status == s);
    if deliveries.is_empty() {
        "no-endpoints"
    } else if has(DeliveryStatus::Failing) {
        "failing"
    } else if has(DeliveryStatus::Delivering) {
        "delivering"
    } else if has(DeliveryStatus::Failed) {
        "failed"
    } else if has(DeliveryStatus::Disabled) {
        "disabled"
    } else if has(DeliveryStatus::Delivered) {
        "delivered"
    } else if has(DeliveryStatus::Cancelled) {
        "cancelled"
    } else {
        "filtered"
    }
}

async fn delivery_json(
    store: &Store,
    event: Uuid,
    uid: Uuid,
    d: &DeliveryRecord,
    with_attempts: bool,
) -> Value {
    let mut v = json!({
        "endpoint": d.endpoint,
        "webhookId": delivery_id(event, uid).to_string(),
        "status": d.status.as_str(),
        "attemptCount": d.attempts,
        "lastStatus": d.last_status,
        "lastError": d.last_error,
        "reason": d.reason,
        "nextAttempt": d.due_ms.map(rfc3339),
        "updated": rfc3339(d.updated_ms),
    });
    if d.reason.as_deref() == Some(crate::store::TRANSFORMED) {
        // What the plugins produced (the request body sent or to be sent).
        v["transformed"] = match &d.output {
            Some(o) => json!({
                "contentType": o.content_type,
                "headers": o.headers.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
                "body": String::from_utf8_lossy(&o.body),
            }),
            None => Value::Null,
        };
    }
    if with_attempts {
        let attempts: Vec<Value> = store
            .attempts(event, uid)
            .await
            .unwrap_or_default()
            .iter()
            .map(|a| {
                json!({
                    "at": rfc3339(a.at_ms),
                    "status": a.status,
                    "error": a.error,
                    "latencyMs": a.latency_us as f64 / 1000.0,
                    "responseBody": String::from_utf8_lossy(&a.response),
                    // Batched endpoints: the request this attempt was part of.
                    "batch": a.batch.map(|b| json!({
                        "id": Uuid::from_bytes(b.id).to_string(),
                        "size": b.size,
                    })),
                })
            })
            .collect();
        v["attempts"] = json!(attempts);
    }
    v
}

pub async fn resource(
    store: &Store,
    id: Uuid,
    ev: &EventRecord,
    deliveries: &[(Uuid, DeliveryRecord)],
    full: bool,
) -> Value {
    let mut ds: Vec<Value> = Vec::with_capacity(deliveries.len());
    for (uid, d) in deliveries {
        ds.push(delivery_json(store, id, *uid, d, full).await);
    }
    ds.sort_by(|a, b| a["endpoint"].as_str().cmp(&b["endpoint"].as_str()));
    let mut v = json!({
        "id": id.to_string(),
        "type": "webhook-events",
        "attributes": {
            "event": ev.event_type,
            "status": overall(deliveries),
            "created": rfc3339(ev.created_ms),
            "received": rfc3339(stored_ms(id)),
            "sourceId": ev.source_id,
            "endpoints": ev.endpoints,
            "deliveries": ds,
        },
        "relationships": {"account": {"data": {"type": "accounts", "id": ev.account}}},
        "links": {"self": format!("/v1/accounts/{}/webhook-events/{id}", ev.account)},
    });
    // A scheduled event: its due time and key; `scheduled` until it is
    // due, `cancelled` once cancelled or replaced.
    if let Ok(Some(s)) = store.schedule(&ev.account, id).await {
        let a = &mut v["attributes"];
        a["deliverAt"] = json!(rfc3339(s.due_ms));
        a["scheduleKey"] = json!(s.key);
        if let Some(status) = s.status(crate::store::now_ms()) {
            a["status"] = json!(status);
        }
        if let Some(at) = s.cancelled_ms {
            a["cancelledAt"] = json!(rfc3339(at));
        }
        if let Some(by) = s.replaced_by {
            a["replacedBy"] = json!(Uuid::from_bytes(by).to_string());
        }
    }
    if full {
        v["attributes"]["payload"] = serde_json::from_slice(&ev.payload)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(&ev.payload)));
    }
    v
}

/// The event if it exists and belongs to `account` (404 otherwise, the same
/// answer for both).
pub async fn load(store: &Store, account: &str, id: &str) -> Result<(Uuid, EventRecord), ApiError> {
    let nf = || ApiError::not_found(&format!("webhook event {id:?}"));
    let uuid = Uuid::parse_str(id).map_err(|_| nf())?;
    match store.event(account, uuid).await.map_err(storage)? {
        Some(ev) if ev.account == account => Ok((uuid, ev)),
        _ => Err(nf()),
    }
}

#[derive(Default)]
pub struct Filters {
    pub events: Vec<String>,
    pub statuses: Vec<DeliveryStatus>,
    pub endpoints: Vec<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// The producer's own id (`filter[sourceId]`).
    pub source_id: Option<String>,
}

fn list_param(q: &[(String, String)], name: &str) -> Vec<String> {
    param(q, name)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The `filter[…]` parameters of a list request (also the dashboard's
/// filter form, which uses the same names).
pub fn filters(q: &[(String, String)]) -> Result<Filters, ApiError> {
    let mut statuses = Vec::new();
    for s in list_param(q, "filter[status]") {
        statuses.push(DeliveryStatus::parse(&s).ok_or_else(|| {
            ApiError::bad_request(
                "Invalid filter",
                format!("filter[status] {s:?} is not one of delivering, failing, delivered, failed, filtered, disabled, cancelled"),
                None,
            )
        })?);
    }
    let time = |name: &str| -> Result<Option<i64>, ApiError> {
        param(q, name)
            .map(|s| {
                crate::ingest::parse_time(s, name).map_err(|mut e| {
                    e.pointer = None;
                    e.title = "Invalid filter".into();
                    e.detail = format!("{name}: {}", e.detail);
                    e
                })
            })
            .transpose()
    };
    Ok(Filters {
        events: list_param(q, "filter[event]"),
        statuses,
        endpoints: list_param(q, "filter[endpoint]"),
        since_ms: time("filter[since]")?,
        until_ms: time("filter[until]")?,
        source_id: param(q, "filter[sourceId]")
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    })
}

/// `GET …/webhook-events`: newest first; `page[size]` (1–100, default 20),
/// `page[before]=<event id>` (from `links.next`); `filter[event]` (types or
/// `family.*`, comma-separated), `filter[status]` (a delivery has it),
/// `filter[endpoint]`, `filter[since]`/`filter[until]` (RFC 3339, time stored),
/// `filter[sourceId]` (the producer's own id).
pub async fn list(
    state: &AppState,
    req: &Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let size = page_size(&q)?;
    let f = filters(&q)?;
    let before = match param(&q, "page[before]") {
        None => None,
        Some(s) => Some(Uuid::parse_str(s).map_err(|_| {
            ApiError::bad_request(
                "Invalid cursor",
                "page[before] must be an event id (use links.next)",
                None,
            )
        })?),
    };
    let (data, next_cursor) = list_page(state, account, f, before, size).await?;
    let base = format!("/v1/accounts/{account}/webhook-events");
    let next = next_cursor.map(|c| {
        let mut link = format!("{base}?page[size]={size}&page[before]={c}");
        for (k, v) in &q {
            if k.starts_with("filter[") {
                link.push_str(&format!("&{k}={}", percent_encode(v)));
            }
        }
        link
    });
    Ok(api::document(
        StatusCode::OK,
        &json!({"data": data, "links": {"self": base, "next": next}}),
    ))
}

/// One page of an account's events, newest first, from `before` (an event
/// id, exclusive): the resources (deliveries without attempts) and the
/// cursor of the next page. Shared by the API and the dashboard.
pub async fn list_page(
    state: &AppState,
    account: &str,
    f: Filters,
    before: Option<Uuid>,
    size: usize,
) -> Result<(Vec<Value>, Option<Uuid>), ApiError> {
    // Start at the older of the cursor and `until`.
    let mut cursor = match (before, f.until_ms.map(|u| cursor_at(u.saturating_add(1)))) {
        (Some(b), Some(u)) => Some(b.min(u)),
        (b, u) => b.or(u),
    };
    let store = state.store.clone();
    let account_s = account.to_string();
    let (data, next_cursor) = async {
        let mut out = Vec::new();
        let mut scanned = 0;
        loop {
            let page = store
                .list_events(&account_s, cursor, (size * 2).max(50))
                .await?;
            if page.is_empty() {
                return Ok::<_, crate::store::StoreError>((out, None));
            }
            for id in page {
                if f.since_ms.is_some_and(|s| stored_ms(id) < s) {
                    return Ok((out, None));
                }
                cursor = Some(id);
                scanned += 1;
                let Some(ev) = store.event(&account_s, id).await? else {
                    continue;
                };
                if !f.events.is_empty()
                    && !f.events.iter().any(|p| pattern_matches(p, &ev.event_type))
                {
                    continue;
                }
                if !f.endpoints.is_empty() && !f.endpoints.iter().any(|e| ev.endpoints.contains(e))
                {
                    continue;
                }
                if f.source_id.is_some() && ev.source_id != f.source_id {
                    continue;
                }
                let deliveries = store.deliveries_of(id).await?;
                if !f.statuses.is_empty()
                    && !deliveries
                        .iter()
                        .any(|(_, d)| f.statuses.contains(&d.status))
                {
                    continue;
                }
                out.push(resource(&store, id, &ev, &deliveries, false).await);
                if out.len() >= size {
                    return Ok((out, cursor));
                }
                if scanned >= MAX_SCAN {
                    return Ok((out, cursor));
                }
            }
        }
    }
    .await
    .map_err(storage)?;
    Ok((data, next_cursor))
}

/// `GET …/webhook-events/{id}`: the event, its payload, and every delivery
/// with its attempts (time, status or error, latency, response excerpt).
pub async fn show(state: &AppState, account: &str, id: &str) -> Result<Response<Body>, ApiError> {
    Ok(api::document(
        StatusCode::OK,
        &json!({"data": show_data(state, account, id).await?}),
    ))
}

/// The full resource of one event of `account` (404 for another account's).
pub async fn show_data(state: &AppState, account: &str, id: &str) -> Result<Value, ApiError> {
    let (uuid, ev) = load(&state.store, account, id).await?;
    let deliveries = state.store.deliveries_of(uuid).await.map_err(storage)?;
    Ok(resource(&state.store, uuid, &ev, &deliveries, true).await)
}

/// `POST …/webhook-events/{id}/actions/retry[?endpoint=<id>]`: sends the
/// event again to every endpoint it was fanned out to (or one), with the
/// same `webhook-id`.
pub async fn retry(
    state: &AppState,
    req: &Request<Incoming>,
    account: &str,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let q = query(req);
    let body = retry_data(state, account, id, param(&q, "endpoint")).await?;
    Ok(api::document(StatusCode::ACCEPTED, &body))
}

/// Re-queues the deliveries of an event of `account` (all, or the one to
/// endpoint `only`): the document the API answers, with `meta.requeued`
/// and `meta.skipped`.
pub async fn retry_data(
    state: &AppState,
    account: &str,
    id: &str,
    only: Option<&str>,
) -> Result<Value, ApiError> {
    let (uuid, ev) = load(&state.store, account, id).await?;
    let only = only.map(str::to_string);
    let deliveries = state.store.deliveries_of(uuid).await.map_err(storage)?;
    let snap = state.registry.snapshot();
    let chosen: Vec<_> = deliveries
        .iter()
        .filter(|(_, d)| only.as_deref().is_none_or(|o| d.endpoint == o))
        .collect();
    if let Some(o) = &only {
        if chosen.is_empty() {
            return Err(ApiError::not_found(&format!(
                "a delivery of this event to endpoint {o:?}"
            )));
        }
    }
    let mut requeued = Vec::new();
    let mut skipped = Vec::new();
    for (uid, d) in chosen {
        if !snap.by_uid.contains_key(uid) {
            skipped
                .push(json!({"endpoint": d.endpoint, "reason": "the endpoint no longer exists"}));
            continue;
        }
        if state
            .dispatcher
            .requeue(uuid, *uid)
            .await
            .map_err(storage)?
        {
            requeued.push(d.endpoint.clone());
        }
    }
    let deliveries = state.store.deliveries_of(uuid).await.map_err(storage)?;
    let mut body = json!({"data": resource(&state.store, uuid, &ev, &deliveries, false).await});
    body["meta"] = json!({"requeued": requeued, "skipped": skipped});
    Ok(body)
}
