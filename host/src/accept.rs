//! Accepting an event: fan-out to the account's subscribed endpoints,
//! the durable store (deduplicated, due now or at its schedule), the
//! in-memory hand-over to the endpoints' pumps, and the 202 document.
//! Shared by the native ingest route (`server`) and the Keygen source
//! (`keygen_source`), which differ only in how a request is authenticated
//! and parsed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Response, StatusCode};
use serde_json::json;
use tracing::{debug, warn};
use uuid::Uuid;

use crate::api::{self, ApiError, Body};
use crate::delivery::envelope::rfc3339;
use crate::ingest::ParsedEvent;
use crate::state::AppState;
use crate::store::{EventRecord, NewEvent, Schedule, now_ms};

/// Stores an accepted event (fanned out to the account's subscribed
/// endpoints, deduplicated by `idempotency_key`, due at once or at its
/// `schedule`) and answers 202 — or 503 when it could not be stored. Shared
/// by the native ingest route and the Keygen source.
pub async fn accept(
    state: &AppState,
    account: &str,
    parsed: ParsedEvent,
    idempotency_key: Option<String>,
    schedule: Option<Schedule>,
) -> Result<Response<Body>, ApiError> {
    let snap = state.registry.snapshot();
    let now = now_ms();
    let endpoints: Vec<_> = snap
        .endpoints(account)
        .iter()
        .filter(|e| {
            e.spec.enabled
                && e.spec.subscribes(&parsed.event_type)
                && state.dispatcher.accepts(e.uid)
        })
        .cloned()
        .collect();
    let id = Uuid::now_v7();
    let created_ms = parsed.created_ms.unwrap_or(now);
    let new = NewEvent {
        id,
        record: EventRecord {
            account: account.to_string(),
            event_type: parsed.event_type.clone(),
            created_ms,
            source_id: parsed.source_id,
            payload: parsed.payload,
            endpoints: endpoints.iter().map(|e| e.spec.id.clone()).collect(),
        },
        idempotency_key,
        deliveries: endpoints
            .iter()
            .map(|e| (e.uid, e.spec.id.clone()))
            .collect(),
    };
    // A copy for the pumps' in-memory hand-over, when any endpoint wants
    // it and the event is due now (a scheduled event waits in the due index).
    let record =
        (!endpoints.is_empty() && schedule.is_none()).then(|| Arc::new(new.record.clone()));
    let due_ms = schedule.as_ref().map(|s| s.due_ms);
    let schedule_key = schedule.as_ref().and_then(|s| s.key.clone());
    let committed = state
        .store
        .commit_scheduled(new, schedule)
        .await
        .map_err(|e| {
            warn!(error = %e, "event not stored");
            ApiError::unavailable(format!(
                "the event could not be stored ({e}); nothing was accepted, retry later"
            ))
        })?;
    if !committed.duplicate {
        state.metrics.event_ingested(account, &parsed.event_type);
        if let Some(record) = &record {
            for e in &endpoints {
                if !state.dispatcher.offer(e.uid, committed.id, record.clone()) {
                    // A shared store claimed it for this node at commit:
                    // give it back so any node's pump may take it now.
                    if let Err(err) = state.store.release(e.uid, &[committed.id]).await {
                        debug!(error = %err, "releasing a claim failed; it lapses with its lease");
                    }
                }
            }
        } else if let Some(due) = due_ms {
            if due > now {
                state.metrics.scheduled.fetch_add(1, Ordering::Relaxed);
            } else {
                for e in &endpoints {
                    state.dispatcher.notify(e.uid);
                }
            }
        }
        if committed.replaced.is_some() {
            state
                .metrics
                .schedule_replaced
                .fetch_add(1, Ordering::Relaxed);
        }
        tracing::Span::current().record("event", tracing::field::display(committed.id));
        debug!(deliveries = endpoints.len(), "event stored");
    }
    let mut body = json!({
        "data": {
            "id": committed.id.to_string(),
            "type": "events",
            "attributes": {
                "event": parsed.event_type,
                "created": rfc3339(created_ms),
                "endpoints": endpoints.iter().map(|e| e.spec.id.clone()).collect::<Vec<_>>(),
            },
            "links": {"self": format!("/v1/accounts/{account}/webhook-events/{}", committed.id)},
        }
    });
    if let Some(due) = due_ms {
        let attrs = &mut body["data"]["attributes"];
        attrs["status"] = json!(if due > now { "scheduled" } else { "delivering" });
        attrs["deliverAt"] = json!(rfc3339(due));
        attrs["scheduleKey"] = json!(schedule_key);
    }
    if let Some(r) = &committed.replaced {
        body["meta"] = json!({"replaced": crate::schedule::cancelled_json(account, r)});
    }
    if committed.duplicate {
        body["meta"] = json!({"duplicate": true});
        if let Ok(Some(first)) = state.store.event(account, committed.id).await {
            body["data"]["attributes"]["event"] = json!(first.event_type);
            body["data"]["attributes"]["created"] = json!(rfc3339(first.created_ms));
            body["data"]["attributes"]["endpoints"] = json!(first.endpoints);
        }
        // The first event's schedule, not this request's.
        if let Some(attrs) = body["data"]["attributes"].as_object_mut() {
            for k in ["status", "deliverAt", "scheduleKey"] {
                attrs.remove(k);
            }
        }
        if let Ok(Some(s)) = state.store.schedule(account, committed.id).await {
            let attrs = &mut body["data"]["attributes"];
            attrs["deliverAt"] = json!(rfc3339(s.due_ms));
            attrs["scheduleKey"] = json!(s.key);
            attrs["status"] = json!(s.status(now).unwrap_or("delivering"));
        }
    }
    let mut resp = api::document(StatusCode::ACCEPTED, &body);
    if committed.duplicate {
        resp.headers_mut().insert(
            "idempotent-replayed",
            http::HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}
