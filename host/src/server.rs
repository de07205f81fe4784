//! The HTTP server: accept loop (hyper 1, HTTP/1.1, header read timeout
//! against slowloris), routing, the ingest route, health and metrics, and
//! graceful shutdown. Account-resource routes live in `admin`; the Keygen
//! source route (signature instead of a token) in `keygen_source`, which
//! stores through the same [`accept`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info, warn};
use uuid::Uuid;

use crate::api::{self, ApiError, Body, read_body, require_json};
use crate::delivery::envelope::rfc3339;
use crate::ingest;
use crate::ingest::ParsedEvent;
use crate::state::AppState;
use crate::store::{EventRecord, NewEvent, Schedule, now_ms};
use crate::telemetry::Gauges;

/// Serves until `shutdown` resolves, then stops accepting and lets open
/// requests finish (bounded by `grace`).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let header_timeout = state.config().server.header_timeout;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let st = state.clone();
        let svc = service_fn(move |req| {
            let st = st.clone();
            async move { Ok::<_, std::convert::Infallible>(route(st, req, peer).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    state.accepting.store(false, Ordering::SeqCst);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("open connections did not finish within the grace period");
    }
}

async fn route(state: Arc<AppState>, req: Request<Incoming>, _peer: SocketAddr) -> Response<Body> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(api::text(StatusCode::OK, "text/plain", "ok\n".into())),
        (&Method::GET, ["readyz"]) => Ok(readyz(&state)),
        (&Method::GET, ["metrics"]) => Ok(metrics(&state)),
        (&Method::POST, ["v1", "accounts", account, "events"]) => {
            let account = account.to_string();
            let span = tracing::info_span!("ingest", %account, event = tracing::field::Empty);
            ingest_route(&state, req, &account).instrument(span).await
        }
        (_, ["v1", "accounts", account, "events"]) => Err(method_not_allowed(&method, account)),
        (&Method::POST, ["v1", "accounts", account, "sources", "keygen"]) => {
            let account = account.to_string();
            let span =
                tracing::info_span!("keygen_source", %account, event = tracing::field::Empty);
            crate::keygen_source::handle(&state, req, &account)
                .instrument(span)
                .await
        }
        (_, ["v1", "accounts", account, "sources", "keygen"]) => {
            Err(method_not_allowed(&method, account))
        }
        _ => crate::admin::route(&state, req, &segments).await,
    };
    match result {
        Ok(r) => r,
        Err(e) => e.to_response(),
    }
}

fn method_not_allowed(method: &Method, _account: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "Method not allowed",
        format!("{method} is not allowed here; events are sent with POST"),
    )
}

fn readyz(state: &AppState) -> Response<Body> {
    let accepting = state.accepting.load(Ordering::SeqCst);
    let failed: Vec<String> = state
        .runtime
        .statuses()
        .into_iter()
        .filter(|s| s.last_error.is_some() && s.sha256.is_empty())
        .map(|s| s.name)
        .collect();
    let store_error = state.store.write_error();
    let ready = accepting && store_error.is_none();
    let body = json!({"ready": ready, "accepting": accepting, "plugins_failed": failed, "store_error": store_error});
    api::document(
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}

/// How long a count of the due index serves scrapes. Counting scans every
/// due key of every endpoint, so with a deep backlog it is done at most once
/// per this period however often `/metrics` is scraped; the oldest-due age
/// (one key per endpoint) is always fresh.
const DUE_COUNT_TTL: Duration = Duration::from_secs(5);

type DueDepths = Vec<(String, String, u64)>;
static DUE_COUNTS: std::sync::Mutex<Option<(Instant, usize, DueDepths)>> =
    std::sync::Mutex::new(None);

fn metrics(state: &AppState) -> Response<Body> {
    let snap = state.registry.snapshot();
    let stats = state.runtime.stats();
    let now = now_ms();
    let mut oldest = 0i64;
    for ep in snap.by_uid.values() {
        if let Ok(Some(t)) = state.store.next_due_ms(ep.uid, 1, |_| false) {
            if t <= now {
                oldest = oldest.max(now - t);
            }
        }
    }
    let due_depth = {
        // Keyed by the snapshot too, so added or removed endpoints show at once.
        let key = Arc::as_ptr(&snap) as usize;
        let mut cache = DUE_COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        match cache.as_ref() {
            Some((at, k, v)) if *k == key && at.elapsed() < DUE_COUNT_TTL => v.clone(),
            _ => {
                let v: DueDepths = snap
                    .by_uid
                    .values()
                    .map(|ep| {
                        (
                            ep.spec.account.clone(),
                            ep.spec.id.clone(),
                            state.store.due_count_until(ep.uid, now) as u64,
                        )
                    })
                    .collect();
                *cache = Some((Instant::now(), key, v.clone()));
                v
            }
        }
    };
    let g = Gauges {
        due_depth,
        oldest_due_age_s: oldest as f64 / 1000.0,
        store_bytes: state.store.size_on_disk(),
        plugin_reloads: stats.reloads,
        plugin_load_failures: stats.load_failures,
        plugins_loaded: state
            .runtime
            .statuses()
            .iter()
            .filter(|s| !s.sha256.is_empty())
            .count() as u64,
        in_flight: state.dispatcher.in_flight(),
        store_flush: Some(state.store.flush_latency()),
    };
    api::text(
        StatusCode::OK,
        "text/plain; version=0.0.4",
        state.metrics.render(&g),
    )
}

async fn ingest_route(
    state: &AppState,
    req: Request<Incoming>,
    account: &str,
) -> Result<Response<Body>, ApiError> {
    let start = Instant::now();
    let r = ingest_inner(state, req, account).await;
    match &r {
        Ok(_) => state.metrics.ingest_latency.observe(start.elapsed()),
        Err(_) => {
            state
                .metrics
                .ingest_rejected
                .fetch_add(1, Ordering::Relaxed);
        }
    }
    r
}

async fn ingest_inner(
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
    state.authorize_account(req.headers(), &snap, account)?;
    require_json(req.headers())?;
    let idem_header = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let s = v
                .to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Invalid Idempotency-Key",
                        "must be 1 to 255 visible ASCII characters",
                        None,
                    )
                })?;
            Some(s.to_string())
        }
    };
    let headers = req.headers().clone();
    let body = read_body(req, config.server.max_body).await?;
    let mut parsed = ingest::parse(&body)?;
    crate::schedule::apply_headers(&headers, &mut parsed)?;
    let now = now_ms();
    let schedule = crate::schedule::resolve(&parsed, now, config.server.max_schedule_ahead)?;
    let idempotency_key = idem_header.or_else(|| parsed.source_id.clone());
    accept(state, account, parsed, idempotency_key, schedule).await
}

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
                state.dispatcher.offer(e.uid, committed.id, record.clone());
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
        if let Ok(Some(first)) = state.store.event(account, committed.id) {
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
        if let Ok(Some(s)) = state.store.schedule(account, committed.id) {
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

/// Binds the listener, with a clear message when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another switchyard running? change [server] listen)"
        )
    })
}

pub fn log_listening(addr: SocketAddr) {
    info!(%addr, "listening");
}
