//! The HTTP server: accept loop (hyper 1, HTTP/1.1, header read timeout
//! against slowloris), routing, the ingest route, health and metrics, and
//! graceful shutdown. Account-resource routes live in `admin`, the
//! dashboard (`/ui`) in `ui`; the Keygen source route (signature instead
//! of a token) in `keygen_source`, which stores through the same
//! [`accept`].

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
use tracing::{Instrument, debug, warn};
use uuid::Uuid;

use crate::api::{self, ApiError, Body, read_body, require_json};
use crate::ingest;
use crate::state::AppState;
use crate::store::now_ms;
use crate::telemetry::Gauges;

/// Serves until `shutdown` resolves, then stops accepting and lets open
/// requests finish (bounded by `grace`).
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let server_cfg = state.config().server.clone();
    let header_timeout = server_cfg.header_timeout;
    let limits = Arc::new(crate::conn::ConnLimits::new(
        server_cfg.max_connections,
        server_cfg.max_connections_per_client,
    ));
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
        let Some(permit) = limits.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (stream, activity) = crate::conn::Watched::new(stream);
        let st = state.clone();
        let body_timeout = server_cfg.body_timeout;
        let act = activity.clone();
        let svc = service_fn(move |mut req: Request<Incoming>| {
            let st = st.clone();
            let busy = act.busy();
            req.extensions_mut().insert(api::BodyDeadline(
                tokio::time::Instant::now() + body_timeout,
            ));
            async move {
                let resp = route(st, req, peer).await;
                drop(busy);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        let idle_timeout = server_cfg.idle_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(conn);
            loop {
                tokio::select! {
                    r = &mut conn => {
                        if let Err(e) = r {
                            debug!(error = %e, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    // While a handler runs the deadline may be past: look
                    // again at most 4 times a second.
                    _ = tokio::time::sleep_until(
                        activity
                            .idle_deadline(idle_timeout)
                            .max(tokio::time::Instant::now() + Duration::from_millis(250)),
                    ) => {
                        if activity.is_idle(idle_timeout) {
                            debug!(%peer, idle_s = idle_timeout.as_secs_f64(), "closing a connection that made no progress ([server] idle_timeout)");
                            break;
                        }
                    }
                }
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

async fn route(
    state: Arc<AppState>,
    req: Request<Incoming>,
    _peer: SocketAddr,
) -> Response<crate::ui::Served> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    let result = match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => Ok(api::text(StatusCode::OK, "text/plain", "ok\n".into())),
        (&Method::GET, ["readyz"]) => Ok(readyz(&state)),
        (&Method::GET, ["metrics"]) => metrics_route(&state, &req).await,
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
        (_, ["ui", rest @ ..]) if state.config().server.ui => {
            return crate::ui::route(&state, req, rest).await;
        }
        _ => crate::admin::route(&state, req, &segments).await,
    };
    match result {
        Ok(r) => r,
        Err(e) => e.to_response(),
    }
    .map(http_body_util::Either::Left)
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

/// Per endpoint (by uid): when its due entries were counted, and the count.
/// Endpoints added since show at once; a reload (a new snapshot) does not
/// force a recount.
static DUE_COUNTS: std::sync::Mutex<Option<std::collections::HashMap<Uuid, (Instant, u64)>>> =
    std::sync::Mutex::new(None);

/// One scrape computes at a time; others wait for it.
static SCRAPE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `/metrics`: the operator's (`[server] metrics_token` when set). Counting
/// the queues runs on the store's blocking pool, one scrape at a time.
async fn metrics_route(
    state: &Arc<AppState>,
    req: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    if let Some(token) = state.config().server.metrics_token.as_deref() {
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        use subtle::ConstantTimeEq as _;
        if !bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Unauthorized",
                "/metrics needs `Authorization: Bearer <[server] metrics_token>`",
            ));
        }
    }
    let _one = SCRAPE.lock().await;
    Ok(metrics(state).await)
}

async fn metrics(state: &AppState) -> Response<Body> {
    let snap = state.registry.snapshot();
    let stats = state.runtime.stats();
    let now = now_ms();
    let mut oldest = 0i64;
    for ep in snap.by_uid.values() {
        if let Ok(Some(t)) = state.store.next_due_ms(ep.uid, 1, &|_| false).await {
            if t <= now {
                oldest = oldest.max(now - t);
            }
        }
    }
    let due_depth = {
        // Per endpoint, each count at most DUE_COUNT_TTL old: a std mutex,
        // never held across the counts (awaited outside it).
        let stale: Vec<uuid::Uuid> = {
            let mut guard = DUE_COUNTS.lock().unwrap_or_else(|p| p.into_inner());
            let cache = guard.get_or_insert_with(Default::default);
            cache.retain(|uid, _| snap.by_uid.contains_key(uid));
            snap.by_uid
                .keys()
                .filter(
                    |uid| !matches!(cache.get(*uid), Some((at, _)) if at.elapsed() < DUE_COUNT_TTL),
                )
                .copied()
                .collect()
        };
        let mut fresh = Vec::with_capacity(stale.len());
        for uid in stale {
            fresh.push((
                uid,
                state.store.due_count_until(uid, now).await.unwrap_or(0),
            ));
        }
        let mut guard = DUE_COUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let cache = guard.get_or_insert_with(Default::default);
        for (uid, n) in fresh {
            cache.insert(uid, (Instant::now(), n));
        }
        snap.by_uid
            .values()
            .map(|ep| {
                let n = cache.get(&ep.uid).map(|(_, n)| *n).unwrap_or(0);
                (ep.spec.account.clone(), ep.spec.id.clone(), n)
            })
            .collect()
    };
    let g = Gauges {
        due_depth,
        oldest_due_age_s: oldest as f64 / 1000.0,
        store_bytes: state.store.size_on_disk(),
        plugin_reloads: stats.reloads,
        plugin_load_failures: stats.load_failures,
        plugin_log_lines_dropped: stats.log_lines_dropped,
        plugin_instances_created: stats.instances_created,
        plugins_loaded: state
            .runtime
            .statuses()
            .iter()
            .filter(|s| !s.sha256.is_empty())
            .count() as u64,
        in_flight: state.dispatcher.in_flight(),
        store_flush: state.store.flush_latency(),
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
    crate::accept::accept(state, account, parsed, idempotency_key, schedule).await
}

/// Binds the listener, with a clear message when the port is taken.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {addr}: {e} (is another switchyard running? change [server] listen)"
        )
    })
}
