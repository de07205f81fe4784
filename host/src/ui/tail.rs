//! The live tail: a page listing deliveries as they happen, fed by
//! server-sent events from `GET /ui/a/{account}/tail/stream[?endpoint=]`.
//! The stream subscribes to `crate::feed` (the dispatcher's outcomes) and
//! passes on only the outcomes of the URL's account, which the session was
//! authorized for; it ends when the browser leaves, the session ends or
//! the router shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use super::Served;
use super::html::{self, Ctx, Nav, esc};
use super::session::{self, Session};
use crate::api::{ApiError, Body};
use crate::delivery::envelope::rfc3339;
use crate::state::AppState;

/// How often an idle stream sends a comment (and checks the session and
/// shutdown).
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The body of the event stream: chunks from the task that filters the feed.
pub struct TailBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for TailBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// `GET /ui/a/{account}/tail`.
pub async fn page(ctx: &Ctx<'_>) -> Result<Response<Body>, ApiError> {
    let snap = ctx.state.registry.snapshot();
    let mut eps: Vec<String> = snap
        .endpoints(&ctx.account)
        .iter()
        .map(|e| e.spec.id.clone())
        .collect();
    eps.sort();
    let options: String = eps
        .iter()
        .map(|e| format!("<option value=\"{v}\">{v}</option>", v = esc(e)))
        .collect();
    let main = format!(
        "<form class=\"filters\" id=\"tail-filter\"><div><label for=\"tail-endpoint\">Endpoint</label><select id=\"tail-endpoint\" name=\"endpoint\"><option value=\"\">all</option>{options}</select></div></form>\
<p id=\"tail-status\" role=\"status\" aria-live=\"polite\">Connecting…</p>\
<div class=\"scroll\"><table id=\"tail\" data-stream=\"{stream}\" data-events=\"{events}\"><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Endpoint</th><th scope=\"col\">Outcome</th><th scope=\"col\">Result</th><th scope=\"col\">Latency</th><th scope=\"col\">Event</th></tr></thead><tbody></tbody></table></div>",
        stream = esc(&format!("{}/tail/stream", ctx.base())),
        events = esc(&format!("{}/events/", ctx.base())),
    );
    Ok(html::html(
        StatusCode::OK,
        html::page(ctx, Nav::Tail, "Live tail", &main),
    ))
}

/// `GET /ui/a/{account}/tail/stream`: `text/event-stream` of `delivery`
/// events (JSON), for a session already authorized for `account`.
pub fn stream(
    state: Arc<AppState>,
    req: &Request<Incoming>,
    sid: &str,
    _session: &Session,
    account: &str,
) -> Response<Served> {
    let q = crate::admin::query(req);
    let only = crate::admin::param(&q, "endpoint")
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let mut feed = state.metrics.feed.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let (account, sid) = (account.to_string(), sid.to_string());
    tokio::spawn(async move {
        if tx
            .send(Bytes::from_static(b"retry: 2000\n: connected\n\n"))
            .await
            .is_err()
        {
            return;
        }
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        loop {
            let chunk = tokio::select! {
                m = feed.recv() => match m {
                    Ok(o) => {
                        if o.account != account || only.as_deref().is_some_and(|e| e != o.endpoint) {
                            continue;
                        }
                        let data = json!({
                            "at": rfc3339(o.at_ms),
                            "endpoint": o.endpoint,
                            "event": o.event.to_string(),
                            "outcome": o.outcome,
                            "status": o.http_status,
                            "error": o.error,
                            "latencyMs": o.latency_us as f64 / 1000.0,
                            "attempt": o.attempt,
                        });
                        format!("event: delivery\ndata: {data}\n\n")
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        format!("event: lagged\ndata: {n}\n\n")
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = beat.tick() => {
                    if !state.accepting.load(Ordering::SeqCst) || !session::alive(&sid) {
                        return;
                    }
                    ": keep-alive\n\n".to_string()
                }
                _ = tx.closed() => return,
            };
            if tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
        }
    });
    let mut r = Response::new(http_body_util::Either::Right(TailBody { rx }));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(html::CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    r
}
